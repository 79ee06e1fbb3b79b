// Puts generation requests onto the model. The HTTP layer sees only the Scheduler interface: run() streams
// one request's tokens and stopping its iteration frees the model.
//
// The engine has one batch-1 KV cache, so FifoScheduler serves requests one at a time in arrival order; the
// others wait. This is the seam for continuous batching: a scheduler over a batched cache would keep
// one slot per running request, add a waiting request to the batch whenever a slot frees, and feed every
// running request's next token in one engine call, still yielding each request's chunks from its own run().
import type { NativeModel } from '../native/types.js';
import type { Tok } from '../tokenizer/types.js';
import { generate, type GenerateChunk, type GenerateOptions, type GenerateResult } from '../chat/generate.js';

export interface SchedulerStats {
  /** 'fifo': one request generates at a time, the rest wait in arrival order. 'continuous': up to maxBatch
   *  requests decode together, one engine step for all (batch-scheduler.ts). */
  kind: 'fifo' | 'continuous';
  /** Requests that can generate at once. */
  maxBatch: number;
  running: number;
  queued: number;
  /** Requests finished (completed, stopped or failed) since the start. */
  served: number;
}

export interface Scheduler {
  /** Waits for the model, then streams the reply to `promptIds`. Breaking out of the iteration ends the
   *  request at once; aborting `signal` while it waits removes it from the queue (the iteration rejects). */
  run(promptIds: number[], options: GenerateOptions, signal?: AbortSignal): AsyncGenerator<GenerateChunk, GenerateResult>;
  stats(): SchedulerStats;
}

export class FifoScheduler implements Scheduler {
  private readonly waiting: (() => void)[] = [];
  private busy = false;
  private served = 0;
  /** Exactly the ids in the model's KV cache: the next request reuses the longest shared prefix. */
  private cacheIds: number[] = [];

  constructor(
    private readonly model: NativeModel,
    private readonly tok: Tok,
  ) {}

  stats(): SchedulerStats {
    return { kind: 'fifo', maxBatch: 1, running: this.busy ? 1 : 0, queued: this.waiting.length, served: this.served };
  }

  async *run(promptIds: number[], options: GenerateOptions, signal?: AbortSignal): AsyncGenerator<GenerateChunk, GenerateResult> {
    await this.acquire(signal);
    try {
      return yield* this.generateOnCache(promptIds, options);
    } finally {
      this.served++;
      this.release();
    }
  }

  /** Resolves when the model is this request's; rejects with the signal's reason if aborted first. */
  private acquire(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (!this.busy) {
      this.busy = true;
      return Promise.resolve();
    }
    return waitInQueue<void>(this.waiting, signal);
  }

  /** Hands the model to the next waiting request (busy stays set), or marks it free. */
  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.busy = false;
  }

  private generateOnCache(promptIds: number[], options: GenerateOptions): AsyncGenerator<GenerateChunk, GenerateResult> {
    const cache: SequenceCache = {
      ids: this.cacheIds,
      feed: (ids) => this.model.feed(ids),
      truncate: (n) => this.model.truncateCache(n),
      length: () => this.model.cacheLength(),
      reset: () => this.model.resetCache(),
    };
    return generateOnCache(cache, this.tok, promptIds, options, (held) => (this.cacheIds = held));
  }
}

/** Waits in `queue` (arrival order) until the scheduler calls the entry with what it hands over (a slot, or
 *  nothing); rejects with the signal's reason, leaving the queue, if aborted first. */
export function waitInQueue<T>(queue: ((value: T) => void)[], signal?: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    const wake = (value: T): void => {
      signal?.removeEventListener('abort', onAbort);
      resolve(value);
    };
    const onAbort = (): void => {
      queue.splice(queue.indexOf(wake), 1);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    queue.push(wake);
  });
}

/** One sequence's KV cache as a scheduler sees it: the ids it holds (exactly), and the engine calls on it. */
export interface SequenceCache {
  ids: number[];
  feed(ids: Int32Array): Promise<Float32Array>;
  truncate(n: number): void;
  length(): number;
  reset(): void;
}

/** generate() on the part of the prompt the cache does not hold yet (at least its last token, whose logits
 *  start the reply); the cached prefix is passed as context so the repetition penalty sees it. When the
 *  reply ends (or fails, or its consumer stops), `held` gets exactly the ids the cache then holds. */
export async function* generateOnCache(
  cache: SequenceCache,
  tok: Tok,
  promptIds: number[],
  options: GenerateOptions,
  held: (ids: number[]) => void,
): AsyncGenerator<GenerateChunk, GenerateResult> {
  const keep = Math.min(sharedPrefix(cache.ids, promptIds), promptIds.length - 1);
  cache.truncate(keep);
  const sampled: number[] = [];
  let failed = false;
  const gen = generate(cache, tok, promptIds.slice(keep), { ...options, contextIds: promptIds.slice(0, keep) });
  try {
    for (;;) {
      const step = await gen.next();
      if (step.done) return step.value;
      sampled.push(step.value.id);
      yield step.value;
    }
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    await gen.return(undefined as never);
    // Each feed appends its tokens or fails whole (and generate awaits each before the next), and the cache
    // takes the prompt, then the sampled ids in order, so its length says which of them it holds (never
    // the last sampled, unfed one).
    const length = cache.length();
    const known = [...promptIds, ...sampled];
    if (failed || length > known.length) {
      cache.reset();
      held([]);
    } else {
      held(known.slice(0, length));
    }
  }
}

export function sharedPrefix(a: number[], b: number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}
