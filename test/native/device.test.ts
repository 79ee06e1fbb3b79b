// The device choice: this build computes on the CPU; asking for cuda explains why it cannot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/native/binding.js';
import { resolveDevice } from '../../src/native/device.js';

test('backends() reports the CPU and whether CUDA was built; the addon loads without a GPU driver', () => {
  const b = native().backends();
  assert.equal(b.cpu, true);
  assert.equal(typeof b.cudaBuilt, 'boolean');
  if (b.cudaBuilt && b.cudaDevices === 0) assert.match(String(b.cudaError), /cuda/i);
});

test('device cpu and auto run on the CPU; cuda is refused with the reason', () => {
  const notes: string[] = [];
  assert.equal(resolveDevice('cpu', (l) => notes.push(l)), 'cpu');
  assert.equal(resolveDevice('auto', (l) => notes.push(l)), 'cpu');
  if (native().backends().cudaDevices === 0) assert.deepEqual(notes, []);
  assert.throws(() => resolveDevice('cuda', () => {}), /device "cuda": .*use device "cpu" or "auto"/);
});
