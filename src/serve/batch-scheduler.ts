// Continuous batching: up to maxBatch requests generate at once, each in its own slot of the engine's KV
// cache, and every decode step feeds all of them their next token in ONE engine call (model.decode), so
// the weights are read once per step for all of them instead of once per request. A request that
// arrives takes a free slot at once and joins at the next step; one that finishes leaves and frees its
// slot for the next waiting one. A long prompt is fed in chunks of `prefillChunk` tokens, one chunk per
// step between decode steps, so it does not stall the requests already answering.
//
// Each request runs the ordinary generate() (sampling, stop strings, streaming text) over a view of its
// slot whose feed() queues work for the step loop below; greedy outputs equal the request's alone
// because decode() computes each row exactly as a lone feed() would (native/model/model.h), and the
// prompt's chunks are the same alone or not.
import type { NativeModel } from '../native/types.js';
import type { Tok } from '../tokenizer/types.js';
import type { GenerateChunk, GenerateOptions, GenerateResult } from '../chat/generate.js';
import { generateOnCache, sharedPrefix, waitInQueue, type Scheduler, type SchedulerStats, type SequenceCache } from './scheduler.js';

/** The engine's most sequences per decode step (native kDecodeBatchMax). */
export const MAX_DECODE_BATCH = 8;

export interface BatchOptions {
  /** Requests generating at once (KV cache slots), 1..8. Default 8. */
  maxBatch?: number;
  /** Most prompt tokens fed in one step. Default 256. */
  prefillChunk?: number;
}

interface Job {
  slot: number;
  ids: Int32Array;
  resolve: (logits: Float32Array) => void;
  reject: (err: unknown) => void;
}

export class BatchScheduler implements Scheduler {
  readonly maxBatch: number;
  readonly prefillChunk: number;
  private readonly free: number[] = [];
  private readonly waiting: ((slot: number) => void)[] = [];
  /** Exactly the ids each slot's cache holds: a request reuses its slot's longest shared prefix. */
  private readonly slotIds: number[][] = [];
  private readonly decodes: Job[] = [];
  private readonly prefills: Job[] = [];
  private stepping = false;
  private served = 0;
  /** Decode steps run and the rows they fed (for the bench: rows / steps is the mean batch). */
  steps = 0;
  rows = 0;

  constructor(
    private readonly model: NativeModel,
    private readonly tok: Tok,
    opts: BatchOptions = {},
  ) {
    this.maxBatch = opts.maxBatch ?? MAX_DECODE_BATCH;
    this.prefillChunk = opts.prefillChunk ?? 256;
    if (!Number.isInteger(this.maxBatch) || this.maxBatch < 1 || this.maxBatch > MAX_DECODE_BATCH) {
      throw new RangeError(`maxBatch must be an integer 1..${MAX_DECODE_BATCH}, got ${this.maxBatch}`);
    }
    if (!Number.isInteger(this.prefillChunk) || this.prefillChunk < 1) throw new RangeError(`prefillChunk must be a positive integer, got ${this.prefillChunk}`);
    for (let s = 0; s < this.maxBatch; s++) {
      this.free.push(s);
      this.slotIds.push([]);
    }
  }

  stats(): SchedulerStats {
    return { kind: 'continuous', maxBatch: this.maxBatch, running: this.maxBatch - this.free.length, queued: this.waiting.length, served: this.served };
  }

  async *run(promptIds: number[], options: GenerateOptions, signal?: AbortSignal): AsyncGenerator<GenerateChunk, GenerateResult> {
    const slot = await this.acquire(promptIds, signal);
    try {
      return yield* this.generateInSlot(slot, promptIds, options);
    } finally {
      this.served++;
      this.release(slot);
    }
  }

  /** A free slot, at once or when one frees (arrival order); rejects with the signal's reason if aborted first.
   *  Of the free slots, the one whose cache shares the longest prefix with the prompt (a conversation's next
   *  turn finds its earlier turns there), else the lowest. */
  private acquire(promptIds: number[], signal?: AbortSignal): Promise<number> {
    signal?.throwIfAborted();
    if (this.free.length > 0) {
      let best = 0, bestShared = -1;
      for (let i = 0; i < this.free.length; i++) {
        const shared = sharedPrefix(this.slotIds[this.free[i]], promptIds);
        if (shared > bestShared || (shared === bestShared && this.free[i] < this.free[best])) best = i, bestShared = shared;
      }
      return Promise.resolve(this.free.splice(best, 1)[0]);
    }
    return waitInQueue<number>(this.waiting, signal);
  }

  private release(slot: number): void {
    const next = this.waiting.shift();
    if (next) next(slot);
    else this.free.push(slot);
  }

  /** generate() over a view of `slot`, on the part of the prompt its cache does not hold yet. */
  private generateInSlot(slot: number, promptIds: number[], options: GenerateOptions): AsyncGenerator<GenerateChunk, GenerateResult> {
    const cache: SequenceCache = {
      ids: this.slotIds[slot],
      feed: (ids) => this.feed(slot, ids),
      truncate: (n) => this.model.truncateCache(n, slot),
      length: () => this.model.cacheLength(slot),
      reset: () => this.model.resetCache(slot),
    };
    return generateOnCache(cache, this.tok, promptIds, options, (held) => (this.slotIds[slot] = held));
  }

  /** The slot view's feed: one token after the prompt is a row of the next decode step; anything else is
   *  prompt, fed in chunks between steps. Resolves with the logits after the last token. */
  private async feed(slot: number, ids: Int32Array): Promise<Float32Array> {
    if (ids.length === 1 && this.model.cacheLength(slot) > 0) return this.enqueue(this.decodes, slot, ids);
    let logits: Float32Array | undefined;
    for (let i = 0; i < ids.length; i += this.prefillChunk) {
      logits = await this.enqueue(this.prefills, slot, ids.subarray(i, i + this.prefillChunk));
    }
    return logits as Float32Array;
  }

  private enqueue(queue: Job[], slot: number, ids: Int32Array): Promise<Float32Array> {
    return new Promise((resolve, reject) => {
      queue.push({ slot, ids, resolve, reject });
      this.kick();
    });
  }

  /** Starts the step loop unless it runs. It first lets the requests whose logits just arrived sample
   *  and queue their next token (all of that happens in promise callbacks, before setImmediate). */
  private kick(): void {
    if (this.stepping) return;
    this.stepping = true;
    setImmediate(() => void this.loop());
  }

  private async loop(): Promise<void> {
    try {
      while (this.decodes.length > 0 || this.prefills.length > 0) {
        // One step: every queued decode row in one engine call, then one chunk of one prompt.
        const rows = this.decodes.splice(0, this.decodes.length);
        if (rows.length > 0) await this.decodeStep(rows);
        const chunk = this.prefills.shift();
        if (chunk) await this.prefillStep(chunk);
        // Let the requests just answered queue their next tokens before the next step.
        await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      this.stepping = false;
    }
  }

  private async decodeStep(rows: Job[]): Promise<void> {
    let logits: Float32Array;
    try {
      logits = await this.model.decode(Int32Array.from(rows, (j) => j.slot), Int32Array.from(rows, (j) => j.ids[0]));
    } catch (err) {
      for (const j of rows) j.reject(err);
      return;
    }
    this.steps++;
    this.rows += rows.length;
    const V = logits.length / rows.length;
    rows.forEach((j, i) => j.resolve(logits.slice(i * V, (i + 1) * V)));
  }

  private async prefillStep(job: Job): Promise<void> {
    try {
      job.resolve(await this.model.feed(job.ids, job.slot));
    } catch (err) {
      job.reject(err);
    }
  }
}
