// Loads a model folder's tokenizer with @huggingface/tokenizers and exposes it as the project's Tok
// interface: tokenizer.json (+ tokenizer_config.json) when present, else a sentencepiece tokenizer.model
// read by ./sentencepiece.ts into the same engine.
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { SftError } from '../errors.js';
import { flavourFor, parseModelProto, sentencePieceTokenizer } from './sentencepiece.js';
import { encodeParts, type PartsEngine } from './parts.js';
import { jsonLengthBound, jsonPartsEngine } from './text-engine.js';
import type { Tok } from './types.js';

/** What Tok is built on, whichever file the tokenizer came from. */
interface Backend {
  engine: Tokenizer;
  encode(text: string): number[];
  decode(ids: number[], skipSpecialTokens: boolean): string;
  /** Special tokens off, for encodeText and encodeParts. */
  parts: PartsEngine;
  minTokens?: (text: string) => number;
  /** Special token names the tokenizer file itself implies, for those tokenizer_config.json leaves out. */
  defaults: { bos?: string; eos?: string };
  /** The file tokens are looked up in, for error messages. */
  file: string;
}

export async function loadTokenizer(modelDir: string): Promise<Tok> {
  const jsonFile = path.join(modelDir, 'tokenizer.json');
  const spFile = path.join(modelDir, 'tokenizer.model');
  if (!existsSync(jsonFile) && !existsSync(spFile)) {
    throw new SftError(`${jsonFile} not found: the model folder needs its tokenizer.json (or a sentencepiece tokenizer.model).`);
  }
  const configFile = path.join(modelDir, 'tokenizer_config.json');
  const config = existsSync(configFile) ? await readJson(configFile) : {};

  const names = {
    bos: tokenName(config.bos_token, configFile, 'bos_token'),
    eos: tokenName(config.eos_token, configFile, 'eos_token'),
    pad: tokenName(config.pad_token, configFile, 'pad_token'),
    unk: tokenName(config.unk_token, configFile, 'unk_token'),
  };
  // Cleaning up spaces (" ." -> ".") breaks decode(encode(x)) == x; transformers defaults it off too.
  const cleanUp = config.clean_up_tokenization_spaces === true;
  // The library reads a few plain keys from this object; hand it token names as strings.
  const libConfig = { ...config, bos_token: names.bos, eos_token: names.eos, pad_token: names.pad, unk_token: names.unk };
  const backend = existsSync(jsonFile)
    ? await jsonBackend(jsonFile, libConfig, cleanUp)
    : await sentencePieceBackend(modelDir, spFile, config, libConfig, cleanUp, names);

  const bosToken = names.bos ?? backend.defaults.bos;
  const eosToken = names.eos ?? backend.defaults.eos;
  const padToken = names.pad;
  const tk = backend.engine;
  const idOf = (token: string | undefined, key: string): number | undefined => {
    if (token === undefined) return undefined;
    const id = tk.token_to_id(token);
    if (id === undefined) throw new SftError(`${configFile}: ${key} ${JSON.stringify(token)} is not in ${backend.file}.`);
    return id;
  };
  let maxId = -1;
  for (const id of tk.get_vocab(true).values()) maxId = Math.max(maxId, id);

  return {
    encode: (text) => (text.length === 0 ? [] : backend.encode(text)),
    encodeText: (text) => encodeParts(backend.parts, [{ text }]),
    encodeParts: (parts, markers) => encodeParts(backend.parts, parts, markers),
    ...(backend.minTokens ? { minTokens: backend.minTokens } : {}),
    // The library throws on an empty list; an empty list is simply "".
    decode: (ids, opts) => (ids.length === 0 ? '' : backend.decode(ids, opts?.skipSpecialTokens ?? false)),
    tokenToId: (token) => tk.token_to_id(token),
    vocabSize: maxId + 1,
    bosId: idOf(bosToken, 'bos_token'),
    eosId: idOf(eosToken, 'eos_token'),
    padId: idOf(padToken, 'pad_token'),
    bosToken,
    eosToken,
    padToken,
    chatTemplate: await chatTemplate(modelDir, config, configFile),
    specialTokensMap: specialTokensMap(config, configFile, { bos_token: bosToken, eos_token: eosToken }),
  };
}

async function jsonBackend(jsonFile: string, libConfig: Record<string, unknown>, cleanUp: boolean): Promise<Backend> {
  const tokenizerJson = await readJson(jsonFile);
  let engine: Tokenizer;
  try {
    engine = new Tokenizer(tokenizerJson, libConfig);
  } catch (err) {
    throw new SftError(`${jsonFile}: cannot build a tokenizer from it (${(err as Error).message}).`);
  }
  return {
    engine,
    encode: (text) => engine.encode(text, { add_special_tokens: false }).ids,
    decode: (ids, skip) => engine.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: cleanUp }),
    parts: jsonPartsEngine(tokenizerJson, engine, libConfig),
    minTokens: jsonLengthBound(tokenizerJson, engine, libConfig),
    defaults: {},
    file: jsonFile,
  };
}

/** tokenizer.model: Baichuan's tokenizer classes encode with sentencepiece itself, others as transformers'
 *  LlamaTokenizer does (see sentencepiece.ts). BOS/EOS default to the model's own pieces, as in transformers. */
async function sentencePieceBackend(
  modelDir: string,
  spFile: string,
  config: Record<string, unknown>,
  libConfig: Record<string, unknown>,
  cleanUp: boolean,
  names: Record<'bos' | 'eos' | 'pad' | 'unk', string | undefined>,
): Promise<Backend> {
  const model = parseModelProto(await fs.readFile(spFile), spFile);
  const modelConfigFile = path.join(modelDir, 'config.json');
  const modelConfig = existsSync(modelConfigFile) ? await readJson(modelConfigFile) : {};
  const specialTokens = Object.values(names).filter((n): n is string => n !== undefined);
  const sp = sentencePieceTokenizer(model, flavourFor(config, modelConfig), { specialTokens, engineConfig: libConfig, cleanUpSpaces: cleanUp, file: spFile });
  const piece = (id: number) => (id >= 0 ? model.pieces[id]?.piece : undefined);
  return { ...sp, defaults: { bos: piece(model.trainer.bosId), eos: piece(model.trainer.eosId) }, file: spFile };
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

/** The special tokens tokenizer_config.json sets, named as transformers' special_tokens_map names them. */
function specialTokensMap(config: Record<string, unknown>, file: string, resolved: Record<string, string | undefined>): Record<string, string | string[]> {
  const map: Record<string, string | string[]> = {};
  for (const key of ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token']) {
    const name = tokenName(config[key], file, key) ?? resolved[key];
    if (name !== undefined) map[key] = name;
  }
  const extra = config.additional_special_tokens;
  if (Array.isArray(extra)) map.additional_special_tokens = extra.map((t, i) => tokenName(t, file, `additional_special_tokens[${i}]`) ?? '');
  return map;
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
