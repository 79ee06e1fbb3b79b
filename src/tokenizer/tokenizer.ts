// Loads a model folder's tokenizer.json (+ tokenizer_config.json) with @huggingface/tokenizers and
// exposes it as the project's Tok interface.
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { SftError } from '../errors.js';
import type { Tok } from './types.js';

export async function loadTokenizer(modelDir: string): Promise<Tok> {
  const jsonFile = path.join(modelDir, 'tokenizer.json');
  if (!existsSync(jsonFile)) {
    if (existsSync(path.join(modelDir, 'tokenizer.model'))) {
      throw new SftError(
        `${modelDir} has a sentencepiece tokenizer.model but no tokenizer.json; reading tokenizer.model comes in a later version of sft. ` +
        `Meanwhile convert it with transformers: python -c "from transformers import AutoTokenizer; ` +
        `AutoTokenizer.from_pretrained('${modelDir}', trust_remote_code=True, use_fast=True).save_pretrained('${modelDir}')"`,
      );
    }
    throw new SftError(`${jsonFile} not found: the model folder needs its tokenizer.json.`);
  }
  const tokenizerJson = await readJson(jsonFile);
  const configFile = path.join(modelDir, 'tokenizer_config.json');
  const config = existsSync(configFile) ? await readJson(configFile) : {};

  const bosToken = tokenName(config.bos_token, configFile, 'bos_token');
  const eosToken = tokenName(config.eos_token, configFile, 'eos_token');
  const padToken = tokenName(config.pad_token, configFile, 'pad_token');
  const unkToken = tokenName(config.unk_token, configFile, 'unk_token');
  // The library reads a few plain keys from this object; hand it token names as strings.
  const libConfig = { ...config, bos_token: bosToken, eos_token: eosToken, pad_token: padToken, unk_token: unkToken };
  let tk: Tokenizer;
  try {
    tk = new Tokenizer(tokenizerJson, libConfig);
  } catch (err) {
    throw new SftError(`${jsonFile}: cannot build a tokenizer from it (${(err as Error).message}).`);
  }

  // Cleaning up spaces (" ." -> ".") breaks decode(encode(x)) == x; transformers defaults it off too.
  const cleanUp = config.clean_up_tokenization_spaces === true;
  const idOf = (token: string | undefined, key: string): number | undefined => {
    if (token === undefined) return undefined;
    const id = tk.token_to_id(token);
    if (id === undefined) throw new SftError(`${configFile}: ${key} ${JSON.stringify(token)} is not in ${jsonFile}.`);
    return id;
  };
  let maxId = -1;
  for (const id of tk.get_vocab(true).values()) maxId = Math.max(maxId, id);

  return {
    encode: (text) => (text.length === 0 ? [] : tk.encode(text, { add_special_tokens: false }).ids),
    // The library throws on an empty list; an empty list is simply "".
    decode: (ids, opts) =>
      ids.length === 0 ? '' : tk.decode(ids, { skip_special_tokens: opts?.skipSpecialTokens ?? false, clean_up_tokenization_spaces: cleanUp }),
    tokenToId: (token) => tk.token_to_id(token),
    vocabSize: maxId + 1,
    bosId: idOf(bosToken, 'bos_token'),
    eosId: idOf(eosToken, 'eos_token'),
    padId: idOf(padToken, 'pad_token'),
    bosToken,
    eosToken,
    padToken,
    chatTemplate: await chatTemplate(modelDir, config, configFile),
  };
}

async function readJson(file: string): Promise<Record<string, unknown>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await fs.readFile(file, 'utf8'));
  } catch (err) {
    throw new SftError(`${file}: not valid JSON (${(err as Error).message}).`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new SftError(`${file}: expected a JSON object.`);
  return parsed as Record<string, unknown>;
}

/** tokenizer_config.json spells a special token as a string, an AddedToken object {content, ...}, or null. */
function tokenName(value: unknown, file: string, key: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  throw new SftError(`${file}: ${key} must be a string or an object with "content" (got ${JSON.stringify(value)}).`);
}

/** chat_template: a string, a list of {name, template} (the "default" one is used), or a chat_template.jinja file. */
async function chatTemplate(modelDir: string, config: Record<string, unknown>, file: string): Promise<string | undefined> {
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t.find((x) => x?.name === 'default') ?? t[0];
    if (typeof named?.template === 'string') return named.template;
    throw new SftError(`${file}: chat_template is a list without a usable {name, template} entry.`);
  }
  const jinja = path.join(modelDir, 'chat_template.jinja');
  return existsSync(jinja) ? fs.readFile(jinja, 'utf8') : undefined;
}
