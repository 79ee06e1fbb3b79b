import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyRepetitionPenalty, applyTopK, applyTopP, mulberry32, sampleNext } from '../../src/chat/sampling.js';

const NO_WARP = { temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1 };
const kept = (s: Float64Array): number[] => [...s.keys()].filter((i) => s[i] !== -Infinity);
const fixed = (u: number) => () => u;

test('repetition penalty divides positive and multiplies negative logits, once per id', () => {
  const s = Float64Array.from([2, -2, 1, 0.5]);
  applyRepetitionPenalty(s, [0, 1, 1, 1], 2);
  assert.deepEqual([...s], [1, -4, 1, 0.5]);
});

test('a penalty below 1 rewards seen tokens', () => {
  const s = Float64Array.from([2, -2]);
  applyRepetitionPenalty(s, [0, 1], 0.5);
  assert.deepEqual([...s], [4, -1]);
});

test('greedy picks the argmax after the penalty; ties go to the lowest id', () => {
  const g = { ...NO_WARP, temperature: 0, rng: fixed(0.99) };
  assert.equal(sampleNext(Float32Array.from([1, 3, 3, 0]), [], g), 1);
  // 2 / 2 = 1 < 1.5: the penalised favourite loses.
  assert.equal(sampleNext(Float32Array.from([2, -2, 1.5]), [0], { ...g, repetitionPenalty: 2 }), 2);
  // -1 * 3 = -3 ties with -3: lowest id wins; with 4 it drops below.
  assert.equal(sampleNext(Float32Array.from([-1, -3]), [0], { ...g, repetitionPenalty: 3 }), 0);
  assert.equal(sampleNext(Float32Array.from([-1, -3]), [0], { ...g, repetitionPenalty: 4 }), 1);
});

test('temperature divides logits before the draw', () => {
  // logits [0, ln 3]: T=1 gives p = [1/4, 3/4]; T=1/2 gives [0, 2 ln 3] -> p = [1/10, 9/10].
  const logits = Float32Array.from([0, Math.log(3)]);
  assert.equal(sampleNext(logits, [], { ...NO_WARP, rng: fixed(0.2) }), 0);
  assert.equal(sampleNext(logits, [], { ...NO_WARP, rng: fixed(0.26) }), 1);
  assert.equal(sampleNext(logits, [], { ...NO_WARP, temperature: 0.5, rng: fixed(0.09) }), 0);
  assert.equal(sampleNext(logits, [], { ...NO_WARP, temperature: 0.5, rng: fixed(0.11) }), 1);
});

test('top-k keeps the k largest, and ties with the k-th', () => {
  const run = (k: number) => {
    const s = Float64Array.from([1, 4, 3, 4, 2]);
    applyTopK(s, k);
    return kept(s);
  };
  assert.deepEqual(run(1), [1, 3]);
  assert.deepEqual(run(2), [1, 3]);
  assert.deepEqual(run(3), [1, 2, 3]);
  assert.deepEqual(run(9), [0, 1, 2, 3, 4]);
});

test('top-p keeps the smallest top set whose mass reaches p, at least one token', () => {
  // p = [0.5, 0.3, 0.15, 0.05]
  const run = (p: number) => {
    const s = Float64Array.from([0.5, 0.3, 0.15, 0.05].map(Math.log));
    applyTopP(s, p);
    return kept(s);
  };
  assert.deepEqual(run(0.4), [0]);
  assert.deepEqual(run(0.75), [0, 1]);
  assert.deepEqual(run(0.85), [0, 1, 2]);
  assert.deepEqual(run(0.99), [0, 1, 2, 3]);
  assert.deepEqual(run(0.01), [0]);
});

test('top-p removes a token whose running sum equals 1 - p exactly; equal scores go lowest id first', () => {
  // Four equal logits: p = 0.25 each (exact in binary). top-p 0.5: ascending sums 0.25, 0.5 are <= 0.5 -> ids 0, 1 go.
  const s = new Float64Array(4);
  applyTopP(s, 0.5);
  assert.deepEqual(kept(s), [2, 3]);
});

test('top-p over a large vocabulary: small tokens go lowest id first, as a stable ascending sort does', () => {
  // logits 10, 9 and 998 zeros: Z = e^10 + e^9 + 998; each small p = 1/Z = 3.2126e-5; p0 = 0.70762, p1 = 0.26032.
  const logits = new Float64Array(1000);
  logits[0] = 10;
  logits[1] = 9;
  const p90 = Float64Array.from(logits);
  applyTopP(p90, 0.9); // the 998 small ones hold 0.0321 <= 0.1
  assert.deepEqual(kept(p90), [0, 1]);
  const p98 = Float64Array.from(logits);
  applyTopP(p98, 0.98); // remove while k/Z <= 0.02: k <= 622.55, so ids 2..623 go
  const k98 = kept(p98);
  assert.equal(k98.length, 2 + 376);
  assert.deepEqual(k98.slice(0, 3), [0, 1, 624]);
  assert.equal(k98.at(-1), 999);
});

test('the draw renormalises over the kept tokens', () => {
  // After top-p 0.9 only ids 0 and 1 remain: p0' = e/(e+1) = 0.73106.
  const logits = new Float32Array(1000);
  logits[0] = 10;
  logits[1] = 9;
  const o = { ...NO_WARP, topP: 0.9 };
  assert.equal(sampleNext(logits, [], { ...o, rng: fixed(0.73) }), 0);
  assert.equal(sampleNext(logits, [], { ...o, rng: fixed(0.732) }), 1);
  assert.equal(sampleNext(logits, [], { ...o, rng: fixed(0.999999) }), 1);
});

test('top-k then top-p, as HF orders them', () => {
  // p = [0.5, 0.3, 0.15, 0.05]; top-k 3 drops id 3, renormalised [0.5263, 0.3158, 0.1579];
  // top-p 0.8: ascending sums 0.1579 <= 0.2 removed, 0.4737 > 0.2 kept -> ids 0, 1 (mass 0.842).
  const logits = Float32Array.from([0.5, 0.3, 0.15, 0.05].map(Math.log));
  const o = { ...NO_WARP, topK: 3, topP: 0.8 };
  // u just below p0' = 0.5/0.8 = 0.625 picks 0, just above picks 1; never 2 or 3.
  assert.equal(sampleNext(logits, [], { ...o, rng: fixed(0.62) }), 0);
  assert.equal(sampleNext(logits, [], { ...o, rng: fixed(0.63) }), 1);
  assert.equal(sampleNext(logits, [], { ...o, rng: fixed(0.999) }), 1);
});

test('mulberry32 is reproducible and uniform-ish in [0, 1)', () => {
  const a = mulberry32(7);
  const b = mulberry32(7);
  const xs = Array.from({ length: 1000 }, () => a());
  assert.deepEqual(xs.slice(0, 5), Array.from({ length: 5 }, () => b()));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
  assert.notEqual(mulberry32(8)(), mulberry32(7)());
});
