// Next-token logits after a prompt, three ways that must agree:
//   cached   the engine's KV cache (batch 1) keeps the tokens of the last prompt; a new prompt feeds
//            only what follows the longest prefix it shares with them. A subject's prompts all start
//            with the same header and shots, so that prefix is computed once per subject and each
//            question costs only its own tokens.
//   full     one forward pass over the whole prompt, no cache (the reference for the cached path).
//   batched  several whole prompts in one forward pass (--batch-size N), right-padded: causal
//            attention never lets a real position see the padding after it.
import type { NativeModel } from '../native/types.js';

export type ScoringMode = 'cached' | 'full' | 'batched';

export interface NextTokenScorer {
  /** Logits (vocab) of the token after `ids`. */
  next(ids: number[]): Promise<Float32Array>;
  /** The same for several prompts (one batch where the scorer batches). */
  nextMany(prompts: number[][]): Promise<Float32Array[]>;
  /** Tokens whose K/V came from the cache rather than a forward pass, over all calls. */
  reused: number;
  /** Tokens run through the model, over all calls. */
  computed: number;
}

export function makeScorer(model: NativeModel, vocabSize: number, mode: ScoringMode): NextTokenScorer {
  if (mode === 'cached') return new CachedScorer(model);
  return mode === 'full' ? new FullScorer(model, vocabSize) : new BatchedScorer(model, vocabSize);
}

/** One prompt at a time. */
abstract class SingleScorer {
  abstract next(ids: number[]): Promise<Float32Array>;
  async nextMany(prompts: number[][]): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (const ids of prompts) out.push(await this.next(ids));
    return out;
  }
}

class CachedScorer extends SingleScorer implements NextTokenScorer {
  reused = 0;
  computed = 0;
  /** The tokens whose K/V the cache holds (the previous prompt). */
  private cached: number[] = [];

  constructor(private readonly model: NativeModel) {
    super();
    model.resetCache();
  }

  async next(ids: number[]): Promise<Float32Array> {
    let keep = 0;
    const limit = Math.min(this.cached.length, ids.length - 1); // feed at least one token: its logits are the answer
    while (keep < limit && this.cached[keep] === ids[keep]) keep++;
    this.model.truncateCache(keep);
    this.cached = [];
    const logits = await this.model.feed(Int32Array.from(ids.slice(keep)));
    this.cached = ids.slice();
    this.reused += keep;
    this.computed += ids.length - keep;
    return logits;
  }
}

class FullScorer extends SingleScorer implements NextTokenScorer {
  reused = 0;
  computed = 0;

  constructor(
    private readonly model: NativeModel,
    private readonly vocabSize: number,
  ) {
    super();
  }

  async next(ids: number[]): Promise<Float32Array> {
    const all = await this.model.logits(Int32Array.from(ids), 1, ids.length);
    this.computed += ids.length;
    return all.slice((ids.length - 1) * this.vocabSize, ids.length * this.vocabSize);
  }
}

class BatchedScorer implements NextTokenScorer {
  reused = 0;
  computed = 0;

  constructor(
    private readonly model: NativeModel,
    private readonly vocabSize: number,
  ) {}

  async next(ids: number[]): Promise<Float32Array> {
    return (await this.nextMany([ids]))[0];
  }

  async nextMany(prompts: number[][]): Promise<Float32Array[]> {
    const T = Math.max(...prompts.map((p) => p.length));
    const ids = new Int32Array(prompts.length * T);  // padding: id 0, after each prompt's end
    prompts.forEach((p, b) => ids.set(p, b * T));
    const all = await this.model.logits(ids, prompts.length, T);
    this.computed += prompts.length * T;
    const V = this.vocabSize;
    return prompts.map((p, b) => all.slice((b * T + p.length - 1) * V, (b * T + p.length) * V));
  }
}

/** Index of the largest of `values` (the first on ties, as numpy's argmax). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}
