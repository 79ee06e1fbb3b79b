// Expected values are worked out by hand from HF transformers' scheduler lambdas
// (optimization.py) and Trainer step arithmetic, not taken from the code under test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lrAt, resolveInterval, resolveWarmup, totalTrainSteps } from '../../src/train/schedule.js';
import type { LrScheduleOptions } from '../../src/train/schedule.js';
import { SftError } from '../../src/errors.js';

const close = (actual: number, expected: number) =>
  assert.ok(Math.abs(actual - expected) <= 1e-12 * Math.max(1, Math.abs(expected)), `${actual} != ${expected}`);

const base = 2e-4;
const opts = (type: LrScheduleOptions['type'], warmupSteps: number, totalSteps: number): LrScheduleOptions => ({ type, baseLr: base, warmupSteps, totalSteps });

test('constant ignores warmup', () => {
  const o = opts('constant', 10, 100);
  for (const s of [0, 1, 5, 10, 99, 1000]) close(lrAt(s, o), base);
});

test('constant_with_warmup: linear ramp from 0, then flat', () => {
  const o = opts('constant_with_warmup', 10, 100);
  close(lrAt(0, o), 0);
  close(lrAt(1, o), base * 0.1);
  close(lrAt(5, o), base * 0.5);
  close(lrAt(9, o), base * 0.9);
  close(lrAt(10, o), base);
  close(lrAt(500, o), base); // past the end stays flat
  close(lrAt(0, opts('constant_with_warmup', 0, 100)), base); // no warmup: full rate at once
});

test('linear: warmup then straight down to 0 at totalSteps', () => {
  const o = opts('linear', 10, 110);
  close(lrAt(0, o), 0);
  close(lrAt(5, o), base * 0.5);
  close(lrAt(10, o), base); // (110 - 10) / 100
  close(lrAt(35, o), base * 0.75); // (110 - 35) / 100
  close(lrAt(60, o), base * 0.5);
  close(lrAt(109, o), base * 0.01);
  close(lrAt(110, o), 0);
  close(lrAt(120, o), 0); // clamped at 0
  const noWarm = opts('linear', 0, 4);
  close(lrAt(0, noWarm), base); // 4/4
  close(lrAt(1, noWarm), base * 0.75);
  close(lrAt(3, noWarm), base * 0.25);
});

test('cosine: warmup then half a cosine wave to 0', () => {
  const o = opts('cosine', 10, 110);
  close(lrAt(0, o), 0);
  close(lrAt(4, o), base * 0.4);
  close(lrAt(10, o), base); // progress 0: 0.5 * (1 + cos 0)
  close(lrAt(35, o), base * 0.5 * (1 + Math.SQRT1_2)); // progress 1/4: cos(pi/4) = sqrt(2)/2
  close(lrAt(60, o), base * 0.5); // progress 1/2: cos(pi/2) = 0
  close(lrAt(85, o), base * 0.5 * (1 - Math.SQRT1_2)); // progress 3/4
  close(lrAt(110, o), 0); // progress 1: cos(pi) = -1
});

test('cosine past the end follows HF (no clamp on progress)', () => {
  // progress = (130 - 10) / 100 = 1.2; 0.5 * (1 + cos(1.2 pi)) = 0.5 * (1 - cos(0.2 pi)), cos(pi/5) = (1 + sqrt 5) / 4
  close(lrAt(130, opts('cosine', 10, 110)), base * 0.5 * (1 - (1 + Math.sqrt(5)) / 4));
});

test('an unimplemented scheduler is an SftError', () => {
  assert.throws(() => lrAt(0, opts('polynomial', 0, 10)), SftError);
});

test('resolveWarmup: steps, then HF 5 ratio in warmup_steps, then warmup_ratio', () => {
  assert.equal(resolveWarmup(100, 0.5, 1000), 100); // warmup_steps wins
  assert.equal(resolveWarmup(0, 0.1, 1000), 100);
  assert.equal(resolveWarmup(0, 0.01, 150), 2); // ceil(1.5)
  assert.equal(resolveWarmup(0.05, 0, 150), 8); // ceil(7.5)
  assert.equal(resolveWarmup(0.05, 0.5, 150), 8); // a ratio in warmup_steps still beats warmup_ratio
  assert.equal(resolveWarmup(0, 0, 50), 0);
});

test('resolveInterval: ratios of the total round up', () => {
  assert.equal(resolveInterval(10, 150), 10);
  assert.equal(resolveInterval(0.1, 150), 15);
  assert.equal(resolveInterval(0.25, 10), 3); // ceil(2.5)
  assert.equal(resolveInterval(0.5, 1), 1);
});

test('totalTrainSteps: max_steps wins; else ceil(epochs * ceil(batches / accumulation))', () => {
  assert.equal(totalTrainSteps({ maxSteps: 150, numTrainEpochs: 3, batchesPerEpoch: 45, gradientAccumulationSteps: 1 }), 150);
  assert.equal(totalTrainSteps({ maxSteps: -1, numTrainEpochs: 1, batchesPerEpoch: 45, gradientAccumulationSteps: 16 }), 3); // 45/16 -> 3
  assert.equal(totalTrainSteps({ maxSteps: -1, numTrainEpochs: 2.5, batchesPerEpoch: 10, gradientAccumulationSteps: 1 }), 25);
  assert.equal(totalTrainSteps({ maxSteps: -1, numTrainEpochs: 3, batchesPerEpoch: 3, gradientAccumulationSteps: 16 }), 3); // at least 1 per epoch
  assert.equal(totalTrainSteps({ maxSteps: -1, numTrainEpochs: 0.5, batchesPerEpoch: 45, gradientAccumulationSteps: 1 }), 23); // ceil(22.5)
});
