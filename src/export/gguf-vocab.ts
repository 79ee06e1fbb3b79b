// The tokenizer as GGUF metadata, in the two forms llama.cpp's tokenizers read:
//
//   tokenizer.ggml.model "gpt2"   byte-level BPE (tokenizer.json: Qwen2, Bloom, sft init-model):
//                                 tokens, token_type, merges ("a b"), pre (the pre-tokenizer's split
//                                 rule, by llama.cpp's name for it)
//   tokenizer.ggml.model "llama"  sentencepiece (tokenizer.model: Llama, Baichuan): tokens, scores,
//                                 token_type (sentencepiece's piece types, which GGUF shares, but
//                                 user-defined pieces written as normal ones, as convert_hf_to_gguf.py
//                                 does: llama.cpp splits text at user-defined tokens before adding
//                                 the "▁" prefix, so Baichuan's digit pieces would lose it)
//
// token_type: 1 normal, 2 unknown, 3 control (special tokens), 4 user-defined (added tokens that
// are not special), 5 unused, 6 byte. Ids the tokenizer does not name (an embedding padded past the
// vocabulary) become "[PAD<id>]", unused, as convert_hf_to_gguf.py writes them. Special token ids,
// add_bos/add_eos and the chat template come from tokenizer_config.json through sft's tokenizer.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SftError } from '../errors.js';
import { parseModelProto } from '../tokenizer/sentencepiece.js';
import { loadTokenizer } from '../tokenizer/tokenizer.js';
import type { GgufValue } from './gguf-file.js';

const TT = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

interface AddedToken { id: number; content: string; special?: boolean }

// Pre-tokenizer split rules llama.cpp knows, by the regex tokenizer.json's Split carries.
const PRE_BY_REGEX: [string, string][] = [
  // Qwen2
  ["(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", 'qwen2'],
  // Llama 3
  ["(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", 'llama-bpe'],
  // Bloom
  [' ?[^(\\s|[.,!?…。，、।۔،])]+', 'bloom'],
];

/** llama.cpp's name for the pre-tokenizer of a byte-level BPE tokenizer.json, or undefined. */
export function preTokenizerName(pre: unknown): string | undefined {
  const steps = (p: unknown): Record<string, unknown>[] => {
    if (!p || typeof p !== 'object') return [];
    const o = p as Record<string, unknown>;
    return o.type === 'Sequence' && Array.isArray(o.pretokenizers) ? o.pretokenizers.flatMap(steps) : [o];
  };
  const s = steps(pre);
  const byteLevel = s.find((x) => x.type === 'ByteLevel');
  const splits = s.filter((x) => x.type === 'Split');
  // ByteLevel alone, with its own regex: GPT-2's rule.
  if (byteLevel && splits.length === 0 && byteLevel.use_regex !== false) return 'gpt-2';
  if (splits.length === 1) {
    const pattern = splits[0].pattern as { Regex?: unknown } | undefined;
    const hit = PRE_BY_REGEX.find(([re]) => re === pattern?.Regex);
    if (hit) return hit[1];
  }
  return undefined;
}

export interface VocabMetadata {
  kv: [string, GgufValue][];
  /** Lines for the user: which form was written, and any fallback taken. */
  notes: string[];
}

function readJson(file: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new SftError(`${file}: not valid JSON (${(err as Error).message}).`);
  }
}

/** `vocabSize`: the embedding's rows, which the token list must match. `chatTemplate`: the one to
 *  write (a merged adapter's training template), else the model's own. */
export async function vocabMetadata(modelDir: string, vocabSize: number, chatTemplate?: string): Promise<VocabMetadata> {
  const jsonFile = join(modelDir, 'tokenizer.json');
  const spFile = join(modelDir, 'tokenizer.model');
  if (!existsSync(jsonFile) && !existsSync(spFile)) {
    throw new SftError(`${jsonFile} not found (nor a sentencepiece tokenizer.model): a GGUF file carries its tokenizer; copy the base model's tokenizer files into ${modelDir}.`);
  }
  const json = existsSync(jsonFile) ? readJson(jsonFile) : undefined;
  const model = json?.model as { type?: string; vocab?: Record<string, number>; merges?: (string | string[])[]; byte_fallback?: boolean } | undefined;
  const byteLevel = json !== undefined && model?.type === 'BPE' && !model.byte_fallback && JSON.stringify(json.pre_tokenizer ?? null).includes('"ByteLevel"');
  const added = ((json?.added_tokens ?? []) as AddedToken[]).filter((a) => typeof a.id === 'number' && typeof a.content === 'string');

  const tokens: string[] = new Array(vocabSize);
  const types = new Int32Array(vocabSize).fill(TT.UNUSED);
  const notes: string[] = [];
  const kv: [string, GgufValue][] = [];
  let spUnk: number | undefined;
  const tooMany = (n: number, file: string) =>
    new SftError(`${file} has ${n} tokens but the model's embedding has ${vocabSize} rows: the tokenizer is not this model's (vocab_size in config.json).`);

  if (byteLevel) {
    const vocab = model.vocab ?? {};
    for (const [t, id] of Object.entries(vocab)) {
      if (id >= vocabSize) throw tooMany(id + 1, jsonFile);
      tokens[id] = t;
      types[id] = TT.NORMAL;
    }
    for (const a of added) {
      if (a.id >= vocabSize) throw tooMany(a.id + 1, jsonFile);
      tokens[a.id] = a.content;
      types[a.id] = a.special ? TT.CONTROL : TT.USER_DEFINED;
    }
    const merges = (model.merges ?? []).map((m) => (typeof m === 'string' ? m : m.join(' ')));
    let pre = preTokenizerName(json.pre_tokenizer);
    if (pre === undefined) {
      pre = 'default';
      notes.push(`tokenizer.ggml.pre: ${jsonFile}'s pre-tokenizer is not one llama.cpp names; wrote "default" (llama.cpp may split text before BPE differently from this tokenizer).`);
    }
    kv.push(['tokenizer.ggml.model', { type: 'string', value: 'gpt2' }], ['tokenizer.ggml.pre', { type: 'string', value: pre }]);
    fillPads(tokens);
    kv.push(['tokenizer.ggml.tokens', { type: 'string[]', value: tokens }], ['tokenizer.ggml.token_type', { type: 'i32[]', value: types }]);
    kv.push(['tokenizer.ggml.merges', { type: 'string[]', value: merges }]);
    notes.push(`tokenizer: byte-level BPE from ${jsonFile} (llama.cpp "gpt2", pre "${pre}")`);
  } else if (existsSync(spFile)) {
    const sp = parseModelProto(readFileSync(spFile), spFile);
    if (sp.pieces.length > vocabSize) throw tooMany(sp.pieces.length, spFile);
    const scores = new Float32Array(vocabSize).fill(-1000);
    sp.pieces.forEach((p, id) => {
      tokens[id] = p.piece;
      scores[id] = p.score;
      types[id] = p.type >= 1 && p.type <= 6 && p.type !== TT.USER_DEFINED ? p.type : TT.NORMAL;
    });
    for (const a of added) {
      if (a.id >= vocabSize) throw tooMany(a.id + 1, jsonFile);
      if (a.id < sp.pieces.length) continue;  // the piece itself
      tokens[a.id] = a.content;
      types[a.id] = a.special ? TT.CONTROL : TT.USER_DEFINED;
    }
    fillPads(tokens);
    kv.push(['tokenizer.ggml.model', { type: 'string', value: 'llama' }]);
    kv.push(['tokenizer.ggml.tokens', { type: 'string[]', value: tokens }], ['tokenizer.ggml.scores', { type: 'f32[]', value: scores }], ['tokenizer.ggml.token_type', { type: 'i32[]', value: types }]);
    // The normalizer's two switches llama.cpp's sentencepiece tokenizer honours.
    kv.push(['tokenizer.ggml.add_space_prefix', { type: 'bool', value: sp.normalizer.addDummyPrefix }]);
    kv.push(['tokenizer.ggml.remove_extra_whitespaces', { type: 'bool', value: sp.normalizer.removeExtraWhitespaces }]);
    if (sp.trainer.unkId >= 0 && sp.trainer.unkId < vocabSize) spUnk = sp.trainer.unkId;
    notes.push(`tokenizer: sentencepiece from ${spFile} (llama.cpp "llama")`);
  } else {
    const what = model?.type === 'BPE' ? 'a sentencepiece-style BPE (byte_fallback, no ByteLevel pre-tokenizer)' : `a ${model?.type ?? 'model-less'} tokenizer`;
    throw new SftError(`${jsonFile} is ${what}; GGUF export writes byte-level BPE tokenizer.json files or sentencepiece tokenizer.model files: put the model's tokenizer.model beside it.`);
  }

  // Special ids and flags through sft's own reading of tokenizer_config.json.
  const tok = await loadTokenizer(modelDir);
  const u32 = (value: number): GgufValue => ({ type: 'u32', value });
  if (tok.bosId !== undefined) kv.push(['tokenizer.ggml.bos_token_id', u32(tok.bosId)]);
  if (tok.eosId !== undefined) kv.push(['tokenizer.ggml.eos_token_id', u32(tok.eosId)]);
  const unk = tok.specialTokensMap?.unk_token;
  const unkId = typeof unk === 'string' ? tok.tokenToId(unk) : spUnk;
  if (unkId !== undefined) kv.push(['tokenizer.ggml.unknown_token_id', u32(unkId)]);
  if (tok.padId !== undefined) kv.push(['tokenizer.ggml.padding_token_id', u32(tok.padId)]);
  const configFile = join(modelDir, 'tokenizer_config.json');
  const config = existsSync(configFile) ? readJson(configFile) : {};
  // add_bos/add_eos: tokenizer_config.json's flags, else what tokenizer.json's TemplateProcessing adds
  // around a single sequence (Llama 3 says it only there); neither: llama.cpp's default for the model
  // (sentencepiece adds BOS, BPE does not), as transformers' tokenizers do.
  const around = templateSpecials(json?.post_processor);
  const addBos = typeof config.add_bos_token === 'boolean' ? config.add_bos_token : around && tok.bosToken !== undefined ? around.first === tok.bosToken : undefined;
  const addEos = typeof config.add_eos_token === 'boolean' ? config.add_eos_token : around && tok.eosToken !== undefined ? around.last === tok.eosToken : undefined;
  if (addBos !== undefined) kv.push(['tokenizer.ggml.add_bos_token', { type: 'bool', value: addBos }]);
  if (addEos !== undefined) kv.push(['tokenizer.ggml.add_eos_token', { type: 'bool', value: addEos }]);
  const template = chatTemplate ?? tok.chatTemplate;
  if (template !== undefined) kv.push(['tokenizer.chat_template', { type: 'string', value: template }]);
  return { kv, notes };
}

/** The special tokens a TemplateProcessing post-processor puts first and last around one sequence. */
function templateSpecials(post: unknown): { first?: string; last?: string } | undefined {
  const p = post as { type?: string; single?: Record<string, { id?: string }>[] } | undefined;
  if (p?.type !== 'TemplateProcessing' || !Array.isArray(p.single)) return undefined;
  const special = (x: Record<string, { id?: string }> | undefined) => x?.SpecialToken?.id;
  return { first: special(p.single[0]), last: special(p.single[p.single.length - 1]) };
}

function fillPads(tokens: string[]): void {
  for (let i = 0; i < tokens.length; i++) if (tokens[i] === undefined) tokens[i] = `[PAD${i}]`;
}
