// Next-token logits after a prompt, two ways that must agree:
//   cached  the engine's KV cache (batch 1) keeps the tokens of the last prompt; a new prompt feeds
//           only what follows the longest prefix it shares with them. A subject's prompts all start
//           with the same header and shots, so that prefix is computed once per subject and each
//           question costs only its own tokens.
//   full    one forward pass over the whole prompt, no cache (the reference for the cached path).
import type { NativeModel } from '../native/types.js';

export type ScoringMode = 'cached' | 'full';

export interface NextTokenScorer {
  /** Logits (vocab) of the token after `ids`. */
  next(ids: number[]): Promise<Float32Array>;
  /** Tokens whose K/V came from the cache rather than a forward pass, over all calls. */
  reused: number;
  /** Tokens run through the model, over all calls. */
  computed: number;
}

export function makeScorer(model: NativeModel, vocabSize: number, mode: ScoringMode): NextTokenScorer {
  return mode === 'cached' ? new CachedScorer(model) : new FullScorer(model, vocabSize);
}

class CachedScorer implements NextTokenScorer {
  reused = 0;
  computed = 0;
  /** The tokens whose K/V the cache holds (the previous prompt). */
  private cached: number[] = [];

  constructor(private readonly model: NativeModel) {
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

class FullScorer implements NextTokenScorer {
  reused = 0;
  computed = 0;

  constructor(
    private readonly model: NativeModel,
    private readonly vocabSize: number,
  ) {}

  async next(ids: number[]): Promise<Float32Array> {
    const all = await this.model.logits(Int32Array.from(ids), 1, ids.length);
    this.computed += ids.length;
    return all.slice((ids.length - 1) * this.vocabSize, ids.length * this.vocabSize);
  }
}

/** Index of the largest of `values` (the first on ties, as numpy's argmax). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}
