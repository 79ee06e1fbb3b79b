// Templated text to ids, with special tokens read only where the template writes them: a user who
// types "<|im_end|>\n<|im_start|>assistant\n" gets those characters tokenized, not a forged turn.
//
// Two paths, so that ordinary text keeps the exact ids training has always used:
// - fast: the whole string through the tokenizer's own encode (every added token matched). When the
//   protected ids in the result (special tokens and the template's markers) are exactly those the
//   template parts yield on their own, no text part produced one, and these are the ids.
// - by sections: otherwise the string is cut at the protected tokens the template parts write (their
//   ids go in as they are) and each stretch between them, template text and user text together, is
//   tokenized by the engine's run encoder, which matches no protected token. That is what transformers
//   does with split_special_tokens=True, except that the template's own special tokens still count.
import { SftError } from '../errors.js';
import type { TextPart } from './types.js';

/** An added token of the tokenizer file, as the engine splits text on it. */
export interface AddedToken {
  id: number;
  /** Special tokens (control pieces for tokenizer.model) never come out of text. */
  special: boolean;
  /** The engine trims whitespace on that side of the token. */
  lstrip: boolean;
  rstrip: boolean;
}

/** Where a stretch of text sits: the ids placed right before and after it; undefined at the ends of
 *  the whole string (Metaspace "first" and sentencepiece's dummy prefix depend on it). */
export interface RunContext {
  before?: number;
  after?: number;
}

/** The ids text may not produce, with their strings; `key` names the set for caches. */
export interface Protected {
  ids: ReadonlySet<number>;
  contents: readonly string[];
  key: string;
}

/** What encodeParts needs from a tokenizer. */
export interface PartsEngine {
  /** The tokenizer's encode: every added token written in the text matches. */
  encodeSpecial(text: string): number[];
  /** A stretch of text placed between `at`'s ids (possibly empty): it must yield none of `protect`'s ids. */
  encodeRun(text: string, at: RunContext, protect: Protected): number[];
  /** Every added token by its content. */
  addedTokens: ReadonlyMap<string, AddedToken>;
}

type Trie = Map<string, Trie> & { end?: string };

interface Prepared extends Protected {
  trie: Trie;
  byId: ReadonlyMap<number, AddedToken & { content: string }>;
  /** Protected ids of each template text seen: a template has a handful, met once per sample. */
  templateIds: Map<string, number[]>;
}

const prepared = new WeakMap<PartsEngine, Map<string, Prepared>>();

/** The special tokens plus those of `markers` that are added tokens of this tokenizer (a marker the
 *  tokenizer spells with ordinary pieces, like "[INST]" for Llama-2, is text everywhere). */
export function protectedSet(engine: PartsEngine, markers: readonly string[] = []): Prepared {
  let byKey = prepared.get(engine);
  if (!byKey) prepared.set(engine, (byKey = new Map()));
  const key = [...new Set(markers)].sort().join('\u0000');
  const hit = byKey.get(key);
  if (hit) return hit;
  const wanted = new Set(markers);
  const contents: string[] = [];
  const byId = new Map<number, AddedToken & { content: string }>();
  for (const [content, t] of engine.addedTokens) {
    if (!t.special && !wanted.has(content)) continue;
    contents.push(content);
    byId.set(t.id, { ...t, content });
  }
  // Engines cache their text-only variants by this key: markers that are not tokens here change nothing.
  const idsKey = [...byId.keys()].sort((a, b) => a - b).join(',');
  const set: Prepared = { ids: new Set(byId.keys()), contents, key: idsKey, trie: trieOf(contents), byId, templateIds: new Map() };
  byKey.set(key, set);
  return set;
}

/** The ids of `parts` tokenized as one string, special tokens and markers read only in template parts. */
export function encodeParts(engine: PartsEngine, parts: readonly TextPart[], markers: readonly string[] = []): number[] {
  let whole = '';
  for (const p of parts) whole += p.text;
  if (whole.length === 0) return [];
  if (parts.every((p) => p.fromTemplate || p.text.length === 0)) return engine.encodeSpecial(whole);
  const protect = protectedSet(engine, markers);
  const ids = engine.encodeSpecial(whole);
  if (protect.ids.size === 0 || sameProtected(ids, templateProtected(engine, parts, protect), protect.ids)) return ids;
  return bySections(engine, parts, protect);
}

/** The protected ids the template parts yield on their own, in order. */
function templateProtected(engine: PartsEngine, parts: readonly TextPart[], protect: Prepared): number[] {
  const out: number[] = [];
  for (const p of parts) {
    if (!p.fromTemplate || p.text.length === 0) continue;
    let ids = protect.templateIds.get(p.text);
    if (!ids) {
      ids = engine.encodeSpecial(p.text).filter((id) => protect.ids.has(id));
      // Bounded: a caller that marks arbitrary text as the template's must not grow this without end.
      if (protect.templateIds.size < 4096) protect.templateIds.set(p.text, ids);
    }
    for (const id of ids) out.push(id);
  }
  return out;
}

function sameProtected(ids: number[], want: number[], protectedIds: ReadonlySet<number>): boolean {
  let k = 0;
  for (const id of ids) {
    if (!protectedIds.has(id)) continue;
    if (id !== want[k]) return false;
    k++;
  }
  return k === want.length;
}

/** The by-sections path: template parts cut at protected tokens, text stretches through encodeRun. */
function bySections(engine: PartsEngine, parts: readonly TextPart[], protect: Prepared): number[] {
  const sections: (string | number)[] = [];
  const pushText = (s: string) => {
    if (typeof sections[sections.length - 1] === 'string') sections[sections.length - 1] += s;
    else sections.push(s);
  };
  for (const p of parts) {
    if (!p.fromTemplate) pushText(p.text);
    else {
      for (const piece of splitOn(protect.trie, p.text)) {
        if (typeof piece === 'string') pushText(piece);
        else sections.push(engine.addedTokens.get(piece.token)!.id);
      }
    }
  }
  alternate(sections);
  stripAround(sections, protect.byId);
  const out: number[] = [];
  sections.forEach((s, i) => {
    if (typeof s === 'number') return void out.push(s);
    const before = sections[i - 1] as number | undefined;
    const after = sections[i + 1] as number | undefined;
    for (const id of engine.encodeRun(s, { before, after }, protect)) {
      if (protect.ids.has(id)) throw forgedByEngine(s, id, protect);
      out.push(id);
    }
  });
  return out;
}

/** Makes runs and tokens alternate, starting and ending with a run, by adding empty runs: an empty run
 *  still has an edge (sentencepiece writes its dummy "▁" before a marker that starts the text). */
function alternate(sections: (string | number)[]): void {
  for (let i = 0; i <= sections.length; i += 2) {
    if (typeof sections[i] !== 'string') sections.splice(i, 0, '');
  }
}

/** The engine trims whitespace beside tokens marked lstrip/rstrip; the same is done here. */
function stripAround(sections: (string | number)[], byId: ReadonlyMap<number, AddedToken>): void {
  sections.forEach((s, i) => {
    if (typeof s !== 'number') return;
    const t = byId.get(s);
    if (t?.lstrip && typeof sections[i - 1] === 'string') sections[i - 1] = (sections[i - 1] as string).trimEnd();
    if (t?.rstrip && typeof sections[i + 1] === 'string') sections[i + 1] = (sections[i + 1] as string).trimStart();
  });
}

function forgedByEngine(text: string, id: number, protect: Prepared): SftError {
  const token = protect.byId.get(id)?.content ?? String(id);
  return new SftError(
    `the tokenizer turns the text ${JSON.stringify(text.slice(0, 60))} into the special token ${JSON.stringify(token)} even with special tokens off; ` +
      'sft cannot keep it as text with this tokenizer. Remove that string from the text, or set parse_special_tokens if the data really means the token.',
  );
}

// ---- leftmost-longest matching on UTF-16 units, as @huggingface/tokenizers splits on added tokens ----

function trieOf(words: readonly string[]): Trie {
  const root: Trie = new Map();
  for (const w of words) {
    let node = root;
    for (let i = 0; i < w.length; i++) {
      const c = w[i];
      let next = node.get(c);
      if (!next) node.set(c, (next = new Map()));
      node = next;
    }
    node.end = w;
  }
  return root;
}

/** `text` cut at the trie's words: strings and {token} pieces, in order. */
export function splitOn(trie: Trie, text: string): (string | { token: string })[] {
  const out: (string | { token: string })[] = [];
  let start = 0;
  for (let i = 0; i < text.length; ) {
    let node: Trie | undefined = trie;
    let match: string | undefined;
    for (let j = i; j < text.length && (node = node.get(text[j])); j++) if (node.end !== undefined) match = node.end;
    if (match === undefined) {
      i++;
      continue;
    }
    if (i > start) out.push(text.slice(start, i));
    out.push({ token: match });
    i += match.length;
    start = i;
  }
  if (start < text.length) out.push(text.slice(start));
  return out;
}
