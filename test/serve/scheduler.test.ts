// The FIFO scheduler over one KV cache: requests run one at a time in arrival order, each gets exactly the
// tokens it would get alone, a shared prompt prefix is not fed twice, and a request that waits or stops
// early gives the model back. The model here is a fake whose next token depends on everything in its cache,
// so any mixing of two requests in the cache shows up as wrong tokens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { FifoScheduler } from '../../src/serve/scheduler.js';
import type { GenerateOptions } from '../../src/chat/generate.js';
import type { NativeModel } from '../../src/native/types.js';
import { ByteTok } from '../chat/fakes.js';

const V = 200;

function hash(ids: number[]): number {
  let h = 7;
  for (const id of ids) h = (h * 31 + id) % 1000003;
  return h;
}

/** The token a cache holding `ids` predicts (a letter, from a hash of the whole sequence)... */
const predict = (ids: number[]): number => 97 + (hash(ids) % 26);
/** ...and its runner-up, which wins when a repetition penalty pushes the letter down. */
const runnerUp = (ids: number[]): number => 150 + (hash(ids) % 40);

class HistoryModel {
  cache: number[] = [];
  feeds: number[][] = [];
  busy = false;
  overlaps = 0;
  async feed(ids: Int32Array): Promise<Float32Array> {
    if (this.busy) this.overlaps++;
    this.busy = true;
    await sleep(1);
    this.busy = false;
    this.feeds.push(Array.from(ids));
    this.cache.push(...ids);
    const logits = new Float32Array(V);
    logits[predict(this.cache)] = 5;
    logits[runnerUp(this.cache)] = 2;
    return logits;
  }
  resetCache(): void {
    this.cache = [];
  }
  truncateCache(n: number): void {
    assert.ok(n <= this.cache.length, `truncateCache(${n}) on ${this.cache.length} tokens`);
    this.cache.length = n;
  }
  cacheLength(): number {
    return this.cache.length;
  }
}

/** What a request gets alone: greedy continuation of the prompt by `predict`. */
function expected(prompt: number[], n: number): number[] {
  const seq = [...prompt];
  for (let i = 0; i < n; i++) seq.push(predict(seq));
  return seq.slice(prompt.length);
}

const opts = (maxNewTokens: number): GenerateOptions => ({
  maxNewTokens,
  temperature: 0,
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
  stopIds: [],
  stopStrings: [],
  seed: 0,
});

function setup() {
  const model = new HistoryModel();
  const scheduler = new FifoScheduler(model as unknown as NativeModel, new ByteTok());
  return { model, scheduler };
}

async function collect(gen: AsyncGenerator<{ id: number }, unknown>, log?: { order: number[]; who: number }): Promise<number[]> {
  const ids: number[] = [];
  for await (const c of gen) {
    ids.push(c.id);
    log?.order.push(log.who);
  }
  return ids;
}

test('concurrent requests run one at a time, in arrival order, each with its own tokens', async () => {
  const { model, scheduler } = setup();
  const prompts = [[1, 2, 3], [4, 5], [1, 2, 9, 9], [6], [1, 2, 3]];
  const log = { order: [] as number[], who: 0 };
  const runs = prompts.map((p, who) => collect(scheduler.run(p, opts(6 + who)), { order: log.order, who }));
  assert.deepEqual(scheduler.stats(), { kind: 'fifo', maxBatch: 1, running: 1, queued: 4, served: 0 });
  const results = await Promise.all(runs);
  prompts.forEach((p, i) => assert.deepEqual(results[i], expected(p, 6 + i), `request ${i}`));
  // Each request's tokens come out together, requests in the order they were made.
  assert.deepEqual(log.order, prompts.flatMap((_, who) => Array(6 + who).fill(who)));
  assert.equal(model.overlaps, 0);
  assert.deepEqual(scheduler.stats(), { kind: 'fifo', maxBatch: 1, running: 0, queued: 0, served: 5 });
});

test('a prompt sharing a prefix with the cache feeds only the rest; an identical prompt feeds its last token', async () => {
  const { model, scheduler } = setup();
  await collect(scheduler.run([1, 2, 3, 4], opts(3)));
  const reply = expected([1, 2, 3, 4], 3);
  // The cache holds the prompt and the fed reply tokens (not the last one).
  assert.deepEqual(model.cache, [1, 2, 3, 4, ...reply.slice(0, 2)]);
  model.feeds.length = 0;
  assert.deepEqual(await collect(scheduler.run([1, 2, 7], opts(2))), expected([1, 2, 7], 2));
  assert.deepEqual(model.feeds[0], [7]);
  model.feeds.length = 0;
  assert.deepEqual(await collect(scheduler.run([1, 2, 7], opts(2))), expected([1, 2, 7], 2));
  assert.deepEqual(model.feeds[0], [7]);
  // A prompt that continues the previous reply reuses the reply's fed tokens too.
  const cont = [1, 2, 7, expected([1, 2, 7], 1)[0], 50];
  model.feeds.length = 0;
  assert.deepEqual(await collect(scheduler.run(cont, opts(2))), expected(cont, 2));
  assert.deepEqual(model.feeds[0], [50]);
});

test('the repetition penalty sees the cached prefix as it sees a whole prompt', async () => {
  // Every letter is in the prompt, so the penalty turns each first choice into its runner-up.
  const letters = Array.from({ length: 26 }, (_, i) => 97 + i);
  const prompt = [...letters, 5];
  const penal = { ...opts(1), repetitionPenalty: 100 };
  const alone = await collect(setup().scheduler.run(prompt, penal));
  assert.deepEqual(alone, [runnerUp(prompt)]);
  const { model, scheduler } = setup();
  await collect(scheduler.run([...letters, 6], opts(1)));
  model.feeds.length = 0;
  assert.deepEqual(await collect(scheduler.run(prompt, penal)), alone);
  assert.deepEqual(model.feeds[0], [5]);
});

test('a request that stops early gives the model back, and the next request is still right', async () => {
  const { model, scheduler } = setup();
  const first = scheduler.run([1, 2, 3], opts(50));
  const second = collect(scheduler.run([1, 2, 4], opts(5)));
  let got = 0;
  for await (const _ of first) if (++got === 3) break;
  assert.deepEqual(await second, expected([1, 2, 4], 5));
  assert.equal(model.overlaps, 0);
  assert.equal(scheduler.stats().served, 2);
});

test('a request aborted while it waits leaves the queue; the others run', async () => {
  const { scheduler } = setup();
  const a = collect(scheduler.run([1], opts(10)));
  const ctl = new AbortController();
  const b = collect(scheduler.run([2], opts(10), ctl.signal));
  const c = collect(scheduler.run([3], opts(10)));
  await sleep(3);
  assert.equal(scheduler.stats().queued, 2);
  ctl.abort(new Error('gone'));
  await assert.rejects(b, /gone/);
  assert.equal(scheduler.stats().queued, 1);
  assert.deepEqual(await a, expected([1], 10));
  assert.deepEqual(await c, expected([3], 10));
  assert.deepEqual(scheduler.stats(), { kind: 'fifo', maxBatch: 1, running: 0, queued: 0, served: 2 });
});

test('a failing feed empties the cache and frees the model', async () => {
  const { model, scheduler } = setup();
  await collect(scheduler.run([1, 2, 3], opts(2)));
  const feed = model.feed.bind(model);
  model.feed = async () => {
    throw new Error('engine failure');
  };
  await assert.rejects(collect(scheduler.run([1, 2, 3, 4], opts(2))), /engine failure/);
  model.feed = feed;
  assert.deepEqual(model.cache, []);
  model.feeds.length = 0;
  assert.deepEqual(await collect(scheduler.run([1, 2, 3, 4], opts(2))), expected([1, 2, 3, 4], 2));
  assert.deepEqual(model.feeds[0], [1, 2, 3, 4]);
});
