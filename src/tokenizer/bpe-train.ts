// A small byte-level BPE trainer (GPT-2 style) for the tiny models `sft init-model` makes. Its output
// is a tokenizer.json that Hugging Face tokenizers (Rust/Python) and @huggingface/tokenizers load:
// text is split by the GPT-2 regex, each UTF-8 byte becomes one printable character, and merges
// build larger pieces. Every byte is in the base vocabulary, so any text encodes and decodes exactly.

export interface BpeTrainOptions {
  /** Target size including special tokens and the 256 byte symbols; training stops earlier when no pair repeats. */
  vocabSize: number;
  /** Added as special tokens with ids 0..n-1, in this order. */
  specialTokens: string[];
  /** A pair must occur this often to be merged (default 2). */
  minFrequency?: number;
}

/** The subset of the tokenizer.json layout this trainer writes. */
export interface TokenizerJson {
  version: string;
  truncation: null;
  padding: null;
  added_tokens: { id: number; content: string; single_word: boolean; lstrip: boolean; rstrip: boolean; normalized: boolean; special: boolean }[];
  normalizer: null;
  pre_tokenizer: Record<string, unknown>;
  post_processor: null;
  decoder: Record<string, unknown>;
  model: {
    type: 'BPE';
    dropout: null;
    unk_token: null;
    continuing_subword_prefix: null;
    end_of_word_suffix: null;
    fuse_unk: boolean;
    byte_fallback: boolean;
    vocab: Record<string, number>;
    merges: string[];
  };
}

/** GPT-2's byte -> character table: printable Latin-1 bytes map to themselves, the rest to U+0100 upwards. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let next = 256;
  for (let b = 0; b < 256; b++) table.push(String.fromCharCode(printable(b) ? b : next++));
  return table;
})();

// The ByteLevel pre-tokenizer's regex (use_regex: true), as HF tokenizers and tokenizers.js spell it.
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export function trainByteLevelBpe(texts: string[], opts: BpeTrainOptions): TokenizerJson {
  const minFrequency = opts.minFrequency ?? 2;
  const specials = [...new Set(opts.specialTokens)];
  const vocab: string[] = [...specials, ...BYTE_TO_CHAR];
  const idOf = new Map<string, number>(vocab.map((t, i) => [t, i]));
  if (idOf.size !== vocab.length) throw new Error('a special token collides with a byte symbol');

  // Unique pre-tokenized words with their counts, as symbol-id sequences.
  const wordCounts = countWords(texts, specials);
  const words: number[][] = [];
  const freqs: number[] = [];
  for (const [w, n] of wordCounts) {
    words.push([...w].map((ch) => idOf.get(ch)!));
    freqs.push(n);
  }

  const pairs = new PairTable();
  words.forEach((w, i) => pairs.addWord(w, i, freqs[i]));
  pairs.buildHeap();
  const merges: string[] = [];
  // A merge whose result already exists (a special token spelt in bytes) would give one string two ids.
  const forbidden = new Set<number>();

  while (vocab.length < opts.vocabSize) {
    const best = pairs.popBest(minFrequency, forbidden);
    if (best === undefined) break;
    const [a, b] = PairTable.split(best);
    const merged = vocab[a] + vocab[b];
    if (idOf.has(merged)) {
      forbidden.add(best);
      continue;
    }
    const id = vocab.length;
    vocab.push(merged);
    idOf.set(merged, id);
    merges.push(`${vocab[a]} ${vocab[b]}`);
    for (const wi of pairs.wordsWith(best)) {
      words[wi] = mergeWord(words[wi], a, b, id, wi, freqs[wi], pairs);
    }
    pairs.forget(best);
    pairs.requeueGrown();
  }

  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({
      id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab: Object.fromEntries(vocab.map((t, i) => [t, i])),
      merges,
    },
  };
}

/** Pre-tokenized words (already in byte characters) and how often each occurs. Special tokens are cut
 *  out first, as the tokenizer does before pre-tokenizing. */
function countWords(texts: string[], specials: string[]): Map<string, number> {
  const cut = specials.length
    ? new RegExp(specials.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g')
    : undefined;
  const encoder = new TextEncoder();
  const counts = new Map<string, number>();
  for (const text of texts) {
    for (const part of cut ? text.split(cut) : [text]) {
      for (const m of part.matchAll(GPT2_SPLIT)) {
        let w = '';
        for (const byte of encoder.encode(m[0])) w += BYTE_TO_CHAR[byte];
        counts.set(w, (counts.get(w) ?? 0) + 1);
      }
    }
  }
  return counts;
}

/** Replaces each non-overlapping (a, b), scanning left to right, by `id`, and updates the pair counts
 *  around each replacement only (rescanning whole words is slow for long runs of CJK characters). */
function mergeWord(w: number[], a: number, b: number, id: number, wi: number, freq: number, pairs: PairTable): number[] {
  const out: number[] = [];
  for (let i = 0; i < w.length; i++) {
    if (i + 1 < w.length && w[i] === a && w[i + 1] === b) {
      const prev = out.length ? out[out.length - 1] : -1;
      const next = i + 2 < w.length ? w[i + 2] : -1;
      pairs.bump(PairTable.key(a, b), -freq);
      if (prev >= 0) {
        pairs.bump(PairTable.key(prev, a), -freq);
        pairs.bump(PairTable.key(prev, id), freq, wi);
      }
      if (next >= 0) {
        // When another (a, b) follows at once, its own step takes (id, a) back out again.
        pairs.bump(PairTable.key(b, next), -freq);
        pairs.bump(PairTable.key(id, next), freq, wi);
      }
      out.push(id);
      i++;
    } else {
      out.push(w[i]);
    }
  }
  return out;
}

/** Pair counts, the words each pair occurs in, and a lazy max-heap to find the most frequent pair. */
class PairTable {
  private counts = new Map<number, number>();
  private where = new Map<number, Set<number>>();
  // Entries [count, key]; an entry is stale when its count no longer matches `counts`.
  private heap: [number, number][] = [];
  private grown = new Set<number>();

  // Symbol ids stay below 2^21, so a pair fits exactly in a double.
  static key(a: number, b: number): number { return a * 2 ** 21 + b; }
  static split(key: number): [number, number] { return [Math.floor(key / 2 ** 21), key % 2 ** 21]; }

  /** Initial counting; call buildHeap() once after the last word. */
  addWord(w: number[], wi: number, freq: number): void {
    for (let i = 0; i + 1 < w.length; i++) {
      const k = PairTable.key(w[i], w[i + 1]);
      this.counts.set(k, (this.counts.get(k) ?? 0) + freq);
      this.addWhere(k, wi);
    }
  }

  buildHeap(): void {
    for (const [key, n] of this.counts) this.push([n, key]);
  }

  /** Adds delta to a pair's count and, with `wi`, records that word `wi` now holds the pair (entries are
   *  never removed: a word that lost the pair is left unchanged by a later merge). Only increases push a
   *  heap entry (once per merge, in requeueGrown); popBest re-queues pairs whose count fell. */
  bump(key: number, delta: number, wi?: number): void {
    const n = (this.counts.get(key) ?? 0) + delta;
    if (n <= 0) this.counts.delete(key);
    else this.counts.set(key, n);
    if (delta > 0) this.grown.add(key);
    if (wi !== undefined) this.addWhere(key, wi);
  }

  requeueGrown(): void {
    for (const key of this.grown) {
      const n = this.counts.get(key);
      if (n !== undefined) this.push([n, key]);
    }
    this.grown.clear();
  }

  private addWhere(key: number, wi: number): void {
    let s = this.where.get(key);
    if (!s) this.where.set(key, (s = new Set()));
    s.add(wi);
  }

  wordsWith(key: number): number[] {
    return [...(this.where.get(key) ?? [])];
  }

  forget(key: number): void {
    this.counts.delete(key);
    this.where.delete(key);
  }

  /** The most frequent pair with count >= minFrequency (ties: the smaller key), or undefined. */
  popBest(minFrequency: number, forbidden: Set<number>): number | undefined {
    while (this.heap.length) {
      const [count, key] = this.pop();
      const now = this.counts.get(key);
      if (now === undefined || forbidden.has(key) || now > count) continue; // a fresher entry exists
      if (now < count) {
        this.push([now, key]); // the count fell since this entry was queued
        continue;
      }
      return count >= minFrequency ? key : undefined;
    }
    return undefined;
  }

  private before(x: [number, number], y: [number, number]): boolean {
    return x[0] > y[0] || (x[0] === y[0] && x[1] < y[1]);
  }

  private push(e: [number, number]): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  private pop(): [number, number] {
    const h = this.heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.before(h[l], h[m])) m = l;
        if (r < h.length && this.before(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}
