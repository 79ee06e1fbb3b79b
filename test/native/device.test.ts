// The device choice: auto takes a GPU when the CUDA backend sees one; cuda without one is refused
// with the reason. This machine may have none: then cpu and auto run on the CPU.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/native/binding.js';
import { cudaUnavailable, resolveDevice } from '../../src/native/device.js';

test('backends() reports the CPU and whether CUDA was built; the addon loads without a GPU driver', () => {
  const b = native().backends();
  assert.equal(b.cpu, true);
  assert.equal(typeof b.cudaBuilt, 'boolean');
  if (b.cudaBuilt && b.cudaDevices === 0) assert.match(String(b.cudaError), /cuda/i);
});

test('device cpu runs on the CPU, auto on a GPU when there is one, cuda without one is refused with the reason', () => {
  const lines: string[] = [];
  assert.equal(resolveDevice('cpu', (l) => lines.push(l), 2), 'cpu');
  assert.match(lines[0], /^device: cpu \(2 threads\)$/);
  const gpu = cudaUnavailable() === undefined;
  assert.equal(resolveDevice('auto', () => {}), gpu ? 'cuda' : 'cpu');
  if (gpu) {
    assert.equal(resolveDevice('cuda', (l) => lines.push(l)), 'cuda');
    assert.match(lines.at(-1)!, /^device: cuda \(.+ GiB free/);
  } else {
    assert.throws(() => resolveDevice('cuda', () => {}), /device "cuda": (this build has no CUDA backend|no usable CUDA device).*use device "cpu" or "auto"/);
  }
});

test('a cuda model without a GPU: building it is fine (no memory yet), touching weights names the reason', () => {
  if (!native().backends().cudaBuilt || native().backends().cudaDevices > 0) return;
  const m = new (native().Model)({
    arch: 'llama', vocabSize: 64, hiddenSize: 16, intermediateSize: 32, numLayers: 1, numHeads: 2, numKvHeads: 2,
    ropeTheta: 10000, rmsNormEps: 1e-5, tieWordEmbeddings: false, qkvBias: false, normHead: false, device: 'cuda',
  });
  assert.equal(m.baseParams().length, 12);  // embed, 2 norms, q k v o, gate up down, norm, lm_head
  assert.throws(() => m.setTensor('model.norm.weight', new Float32Array(16)), /no usable CUDA device/);
});
