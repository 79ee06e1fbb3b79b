// The run encoder of encodeParts (parts.ts) for tokenizers held as a tokenizer.json object (a model's
// own file, or the one sentencepiece.ts builds for the Llama flavour): text tokenized with special
// tokens off. @huggingface/tokenizers has no switch for that (transformers' split_special_tokens), so
// a second engine is built from the same file without the protected added tokens, and without the
// merges that would rebuild one of them from its characters. Built on first use: ordinary text never
// needs it, since encodeParts' fast path already answers.
//
// Also a cheap lower bound on a text's token count, for refusing megabytes without tokenizing them.
import { Tokenizer } from '@huggingface/tokenizers';
import type { AddedToken, PartsEngine, Protected, RunContext } from './parts.js';

/** The parts of a tokenizer.json this file reads. */
interface TokenizerFile {
  added_tokens?: { id: number; content: string; special?: boolean; lstrip?: boolean; rstrip?: boolean }[];
  normalizer?: unknown;
  pre_tokenizer?: unknown;
  model?: { type?: string; vocab?: Record<string, number> | unknown; merges?: unknown[]; byte_fallback?: boolean };
  [key: string]: unknown;
}

export function jsonPartsEngine(file: Record<string, unknown>, engine: Tokenizer, engineConfig: Record<string, unknown>): PartsEngine {
  const json = file as TokenizerFile;
  const addedTokens = new Map<string, AddedToken>();
  for (const t of json.added_tokens ?? []) {
    addedTokens.set(t.content, { id: t.id, special: t.special === true, lstrip: t.lstrip === true, rstrip: t.rstrip === true });
  }
  // Metaspace's "first" scheme puts "▁" before the string's first section only; a stretch after a
  // token the template placed is not first, so it gets an engine that never prepends.
  const firstOnly = hasFirstOnlyPrefix(json.pre_tokenizer);
  const engines = new Map<string, Tokenizer>();
  const textEngine = (protect: Protected, first: boolean): Tokenizer => {
    const key = `${first || !firstOnly ? 'first' : 'rest'}\u0001${protect.key}`;
    let e = engines.get(key);
    if (!e) engines.set(key, (e = new Tokenizer(textOnlyJson(json, protect, first || !firstOnly), engineConfig)));
    return e;
  };
  return {
    addedTokens,
    encodeSpecial: (text) => engine.encode(text, { add_special_tokens: false }).ids,
    encodeRun: (text: string, at: RunContext, protect: Protected) =>
      text.length === 0 ? [] : textEngine(protect, at.before === undefined).encode(text, { add_special_tokens: false }).ids,
  };
}

/** The file without the protected added tokens and the merges that produce them. */
function textOnlyJson(json: TokenizerFile, protect: Protected, first: boolean): Record<string, unknown> {
  const drop = new Set(protect.contents);
  const merges = (json.model?.merges ?? []).filter((m) => !drop.has(mergeResult(m)));
  return {
    ...json,
    added_tokens: (json.added_tokens ?? []).filter((t) => !protect.ids.has(t.id)),
    pre_tokenizer: first ? json.pre_tokenizer : withoutFirstPrefix(json.pre_tokenizer),
    model: { ...json.model, merges },
  };
}

/** A merge is "a b" (tokenizer.json before 0.20) or ["a", "b"]. */
function mergeResult(m: unknown): string {
  if (Array.isArray(m)) return m.join('');
  if (typeof m === 'string') {
    const at = m.indexOf(' ');
    return at < 0 ? m : m.slice(0, at) + m.slice(at + 1);
  }
  return '';
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Every pre-tokenizer (or normalizer) config, Sequences opened. */
function preTokenizers(p: unknown): Record<string, unknown>[] {
  if (!isObject(p)) return [];
  if (p.type === 'Sequence' && Array.isArray(p.pretokenizers)) return p.pretokenizers.flatMap(preTokenizers);
  if (p.type === 'Sequence' && Array.isArray(p.normalizers)) return p.normalizers.flatMap(preTokenizers);
  return [p];
}

function hasFirstOnlyPrefix(p: unknown): boolean {
  return preTokenizers(p).some((x) => x.type === 'Metaspace' && x.prepend_scheme === 'first');
}

function withoutFirstPrefix(p: unknown): unknown {
  if (!isObject(p)) return p;
  if (p.type === 'Sequence' && Array.isArray(p.pretokenizers)) return { ...p, pretokenizers: p.pretokenizers.map(withoutFirstPrefix) };
  if (p.type === 'Metaspace' && p.prepend_scheme === 'first') return { ...p, prepend_scheme: 'never' };
  return p;
}

// ---- the length bound ----------------------------------------------------------------------------

/** Pre-tokenizers that split text without dropping any of it. */
const KEEPING_PRE_TOKENIZERS = new Set(['ByteLevel', 'Metaspace', 'Split', 'Digits', 'Punctuation']);

/** `text` → a lower bound on its token count, or undefined when this tokenizer's pipeline may drop or
 *  fuse text (a pre-tokenizer that removes whitespace, unknown characters fused into one <unk>).
 *
 *  Why it holds: every token is a vocabulary entry (or an added token) whose string is at least as long
 *  as the text it stands for (ByteLevel: one character per byte; Metaspace: "▁" per space; byte
 *  fallback: "<0x41>" for one byte), so tokens × (longest entry) >= the normalized text's length. Half
 *  of that is returned, a margin for normalizing sections apart rather than the whole. */
export function jsonLengthBound(file: Record<string, unknown>, engine: Tokenizer, engineConfig: Record<string, unknown>): ((text: string) => number) | undefined {
  const json = file as TokenizerFile;
  const model = json.model;
  if (model?.type !== 'BPE' || !isObject(model.vocab)) return undefined;
  if (engineConfig.remove_space === true || engineConfig.do_lowercase_and_remove_accent === true) return undefined;
  const pres = preTokenizers(json.pre_tokenizer);
  // The normalizer is applied below to the whole text; Strip would remove more at each section's edges.
  const keeps = pres.every((p) => KEEPING_PRE_TOKENIZERS.has(String(p.type)) && p.behavior !== 'Removed') && !preTokenizers(json.normalizer).some((n) => n.type === 'Strip');
  const vocab = model.vocab as Record<string, number>;
  const byteLevel = pres.some((p) => p.type === 'ByteLevel');
  const allBytes = model.byte_fallback === true && Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`).every((t) => t in vocab);
  if (!keeps || !(byteLevel || allBytes)) return undefined;
  let longest = 1;
  for (const token of Object.keys(vocab)) longest = Math.max(longest, token.length);
  for (const t of json.added_tokens ?? []) longest = Math.max(longest, t.content.length);
  return lengthBound(longest, (text) => engine.normalizer?.normalize(text) ?? text);
}

/** floor(normalized length / (2 × longest token)). */
export function lengthBound(longest: number, normalize: (text: string) => string): (text: string) => number {
  return (text) => Math.floor(normalize(text).length / (2 * longest));
}
