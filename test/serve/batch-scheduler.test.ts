// Continuous batching (src/serve/batch-scheduler.ts) on a small random Llama: requests that run together,
// join while others generate, or wait for a slot produce exactly the ids they produce alone — greedy and
// sampled with a seed, prompts fed in chunks or whole — and batching really happens (decode steps carry
// several rows). Aborting a request frees its slot; a waiting request then runs.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { loadModel, type LoadedModel } from '../../src/model/load.js';
import { BatchScheduler } from '../../src/serve/batch-scheduler.js';
import type { GenerateOptions } from '../../src/chat/generate.js';
import { generated, GREEDY } from './reference.js';

const dir = join(mkdtempSync(join(tmpdir(), 'sft-batch-')), 'tiny');
initModel({ arch: 'llama', outDir: dir, hidden: 64, layers: 2, heads: 4, intermediate: 128, vocab: 400, seed: 3, maxPosition: 2048, force: true });

let served: LoadedModel;
let ref: LoadedModel;
before(async () => {
  served = await loadModel({ modelDir: dir });
  ref = await loadModel({ modelDir: dir });
});

const opts = (maxNewTokens: number, extra: Partial<GenerateOptions> = {}): GenerateOptions => ({ ...GREEDY, maxNewTokens, stopIds: [], ...extra });
const prompt = (seed: number, n: number): number[] => Array.from({ length: n }, (_, i) => 3 + ((seed * 131 + i * 17) % 390));

async function collect(s: BatchScheduler, ids: number[], o: GenerateOptions, signal?: AbortSignal): Promise<number[]> {
  const out: number[] = [];
  for await (const chunk of s.run(ids, o, signal)) out.push(chunk.id);
  return out;
}

test('eight requests at once, greedy and sampled: each equals generate() alone on a fresh cache', async () => {
  const s = new BatchScheduler(served.model, served.tok, { maxBatch: 8 });
  const reqs = Array.from({ length: 8 }, (_, i) => ({
    ids: prompt(i, 3 + 7 * i),
    o: opts(20 + 3 * i, i % 2 ? { temperature: 0.9, topP: 0.95, seed: 100 + i } : {}),
  }));
  const got = await Promise.all(reqs.map((r) => collect(s, r.ids, r.o)));
  for (let i = 0; i < reqs.length; i++) {
    const want = await generated(ref.model, ref.tok, reqs[i].ids, reqs[i].o);
    assert.deepEqual(got[i], want.ids, `request ${i}`);
  }
  assert.ok(s.rows / s.steps > 4, `decode steps carried ${s.rows} rows in ${s.steps} steps`);
  assert.deepEqual(s.stats(), { kind: 'continuous', maxBatch: 8, running: 0, queued: 0, served: 8 });
});

test('requests joining mid-run and waiting for a slot, long prompts in chunks: each equals itself alone', async () => {
  // A small prefill chunk, so the long prompts take several steps between decode steps.
  const mk = () => new BatchScheduler(served.model, served.tok, { maxBatch: 3, prefillChunk: 16 });
  const reqs = Array.from({ length: 7 }, (_, i) => ({ ids: prompt(20 + i, i % 3 === 0 ? 70 : 5 + i), o: opts(12 + 2 * i) }));
  // Alone: one request at a time on a scheduler of its own (fresh slots, no shared prefix).
  const alone: number[][] = [];
  for (const r of reqs) alone.push(await collect(mk(), r.ids, r.o));
  const s = mk();
  const got = await Promise.all(
    reqs.map(async (r, i) => {
      await new Promise((res) => setTimeout(res, 3 * i));
      return collect(s, r.ids, r.o);
    }),
  );
  assert.deepEqual(got, alone);
  assert.ok(s.rows > s.steps, 'several requests decoded together');
});

test('an aborted request frees its slot for the next waiting one', async () => {
  const s = new BatchScheduler(served.model, served.tok, { maxBatch: 1 });
  const aborter = new AbortController();
  const first = (async () => {
    const out: number[] = [];
    for await (const chunk of s.run(prompt(1, 4), opts(1000))) {
      out.push(chunk.id);
      if (out.length === 5) break; // the client went away
    }
    return out;
  })();
  const waiting = collect(s, prompt(2, 4), opts(6));
  // A request that gives up while it waits leaves the queue.
  const gaveUp = collect(s, prompt(3, 4), opts(6), aborter.signal);
  aborter.abort(new Error('gave up'));
  await assert.rejects(gaveUp, /gave up/);
  assert.equal((await first).length, 5);
  assert.deepEqual(await waiting, (await generated(ref.model, ref.tok, prompt(2, 4), opts(6))).ids);
  assert.equal(s.stats().running, 0);
});

test('bad options are refused', () => {
  assert.throws(() => new BatchScheduler(served.model, served.tok, { maxBatch: 9 }), /1\.\.8/);
  assert.throws(() => new BatchScheduler(served.model, served.tok, { prefillChunk: 0 }), /prefillChunk/);
});
