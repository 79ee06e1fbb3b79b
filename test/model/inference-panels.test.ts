// Frozen weights packed once for inference (model.prepareInference, issue 13): the engine keeps the
// frozen fp32 linear weights (and an untied lm_head) in the CPU GEMM's panels. References are the
// same model never packed:
// - scoring and prefill (more than 8 rows: the blocked GEMM either way, the same sums) equal it bit
//   for bit; decode and products of up to 8 rows take the panel GEMV instead of the row-major GEMV,
//   whose sums are ordered differently: equal within float rounding (bounded here), and the greedy
//   tokens the same;
// - whatever reads, changes or trains base weights (getTensor, as save and export read them;
//   setTensor; mergeLora; quantize; training, LoRA or full) sees the original row-major values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { loadBase, loadModel } from '../../src/model/load.js';
import { loraModulesOf } from '../../src/model/modules.js';
import type { NativeModel } from '../../src/native/types.js';
import { mulberry32 } from '../../src/chat/sampling.js';

type Arch = 'llama' | 'qwen2' | 'bloom';
const root = mkdtempSync(join(tmpdir(), 'sft-panels-'));
// Widths that are multiples of every ISA's nr (8, 16, 32), so every linear and the untied lm_head
// pack (N = 300 would leave the head row-major).
function makeModel(arch: Arch): string {
  const dir = join(root, arch);
  initModel({ arch, outDir: dir, hidden: 64, layers: 2, heads: 4, intermediate: 96, vocab: 320, seed: 11, maxPosition: 512, force: true });
  return dir;
}
const dirs = new Map<Arch, string>();
const dirOf = (arch: Arch): string => {
  if (!dirs.has(arch)) dirs.set(arch, makeModel(arch));
  return dirs.get(arch)!;
};

function withLora(model: NativeModel, arch: Arch): void {
  const rng = mulberry32(5);
  for (const p of model.addLora({ targets: loraModulesOf(arch), rank: 4, alpha: 8, dropout: 0, seed: 3 })) {
    if (!p.name.includes('lora_B')) continue;
    const n = p.shape.reduce((a, b) => a * b, 1);
    model.setTensor(p.name, Float32Array.from({ length: n }, () => (rng() - 0.5) * 0.2));
  }
}

const same = (a: Float32Array, b: Float32Array): boolean => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));
const maxRel = (a: Float32Array, b: Float32Array): number => {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) num = Math.max(num, Math.abs(a[i] - b[i])), den = Math.max(den, Math.abs(b[i]));
  return num / Math.max(den, 1e-30);
};
const argmax = (a: Float32Array): number => a.reduce((best, x, i) => (x > a[best] ? i : best), 0);
const ids = (n: number, seed: number): Int32Array => {
  const rng = mulberry32(seed);
  return Int32Array.from({ length: n }, () => 3 + Math.floor(rng() * 310));
};

async function pair(arch: Arch, lora: boolean): Promise<{ packed: NativeModel; plain: NativeModel; count: number }> {
  const packed = (await loadBase(dirOf(arch))).model;
  const plain = (await loadBase(dirOf(arch))).model;
  if (lora) withLora(packed, arch), withLora(plain, arch);
  const count = await packed.prepareInference();
  return { packed, plain, count };
}

for (const [arch, lora] of [['llama', true], ['qwen2', false], ['bloom', true]] as const) {
  test(`${arch}${lora ? ' + LoRA' : ''}: packed scoring/prefill = unpacked bit for bit; decode within rounding, same greedy tokens`, async () => {
    const { packed, plain, count } = await pair(arch, lora);
    // Per layer: every linear (llama: 7, fused or not as the family lays them out) packs; the
    // head only when untied (llama), never the tied embedding (qwen2, bloom).
    assert.ok(count >= 2 * 4, `${count} matrices packed`);
    assert.equal(packed.packedWeights(), count);
    // Scoring: 2 x 20 rows and 1 x 33 rows.
    for (const [B, T] of [[2, 20], [1, 33]]) {
      const x = ids(B * T, B + T);
      assert.ok(same(await packed.logits(x, B, T), await plain.logits(x, B, T)), `logits ${B} x ${T}`);
    }
    const batch = ids(2 * 16, 9), labels = Int32Array.from(batch, (v, i) => (i % 16 < 4 ? -100 : v));
    assert.deepEqual(await packed.forwardLoss(batch, labels, 2, 16), await plain.forwardLoss(batch, labels, 2, 16));
    // Up to 8 rows: the panel GEMV (sums in kc blocks, k in order) vs the row-major GEMV.
    const short = ids(5, 4);
    const rel = maxRel(await packed.logits(short, 1, 5), await plain.logits(short, 1, 5));
    assert.ok(rel < 1e-5, `logits 1 x 5: ${rel}`);
    // Chat: a 24-token prompt, then 24 greedy tokens. The prompt's 24 rows take the blocked GEMM
    // (the same bits), but feed() returns lm_head of its last row alone: a 1-row product, so with an
    // untied head (llama, packed) that row is within rounding, with a tied one (row-major) exact.
    const prompt = ids(24, 2);
    let a = await packed.feed(prompt), b = await plain.feed(prompt);
    if (arch === 'llama') assert.ok(maxRel(a, b) < 1e-5, `prefill logits ${maxRel(a, b)}`);
    else assert.ok(same(a, b), 'prefill logits');
    let worst = 0;
    for (let t = 0; t < 24; t++) {
      const ta = argmax(a), tb = argmax(b);
      assert.equal(ta, tb, `greedy token ${t}`);
      a = await packed.feed(Int32Array.of(ta));
      b = await plain.feed(Int32Array.of(tb));
      worst = Math.max(worst, maxRel(a, b));
    }
    assert.ok(worst < 1e-5, `decode logits rel ${worst}`);
    assert.equal(packed.packedWeights(), count, 'inference reads the panels, it does not unpack them');
  });
}

test('loadModel (chat, score, eval, serve) packs the weights; loadBase (train, merge, export) does not', async () => {
  const { model } = await loadModel({ modelDir: dirOf('llama') });
  assert.ok(model.packedWeights() > 0);
  assert.equal((await loadBase(dirOf('llama'))).model.packedWeights(), 0);
});

test('getTensor / setTensor of base weights see row-major values; the next inference call packs again', async () => {
  const { packed, plain, count } = await pair('llama', false);
  const x = ids(30, 1);
  await packed.logits(x, 1, 30);
  // What save and export read: every base tensor, as loaded.
  for (const p of plain.baseParams()) assert.ok(same(packed.getTensor(p.name), plain.getTensor(p.name)), p.name);
  assert.equal(packed.packedWeights(), 0, 'reading a base tensor unpacks');
  assert.ok(same(await packed.logits(x, 1, 30), await plain.logits(x, 1, 30)));
  assert.equal(packed.packedWeights(), count, 'repacked by the next forward');
  const name = 'model.layers.1.mlp.down_proj.weight';
  const v = plain.getTensor(name).map((w, i) => w + (i % 7) * 1e-2);
  packed.setTensor(name, v);
  plain.setTensor(name, v);
  assert.ok(same(packed.getTensor(name), v));
  assert.ok(same(await packed.logits(x, 1, 30), await plain.logits(x, 1, 30)), 'logits after setTensor');
});

test('mergeLora after packing: the result of the never-packed model', async () => {
  const x = ids(30, 3);
  {
    const { packed, plain } = await pair('llama', true);
    await packed.logits(x, 1, 30);
    packed.mergeLora();
    plain.mergeLora();
    for (const p of plain.baseParams()) assert.ok(same(packed.getTensor(p.name), plain.getTensor(p.name)), `merged ${p.name}`);
    assert.ok(same(await packed.logits(x, 1, 30), await plain.logits(x, 1, 30)), 'merged logits');
  }
});

test('quantize (NF4) after packing: the result of the never-packed model', async () => {
  const x = ids(30, 3);
  {
    const { packed, plain } = await pair('llama', false);
    await packed.logits(x, 1, 30);
    assert.deepEqual(packed.quantize({ bits: 4 }), plain.quantize({ bits: 4 }));
    for (const p of plain.baseParams()) assert.ok(same(packed.getTensor(p.name), plain.getTensor(p.name)), `NF4 ${p.name}`);
    assert.ok(same(await packed.logits(x, 1, 30), await plain.logits(x, 1, 30)), 'NF4 logits');
  }
});

test('training after packing (LoRA, full) sees row-major weights and ends inference mode', async () => {
  const batch = ids(2 * 12, 6), labels = Int32Array.from(batch);
  for (const full of [false, true]) {
    const { packed, plain } = await pair('llama', !full);
    await packed.logits(batch, 2, 12);
    if (full) {
      packed.setBaseTrainable(true), plain.setBaseTrainable(true);
      assert.equal(packed.packedWeights(), 0, 'setBaseTrainable unpacks');
    }
    const a = await packed.forwardBackward(batch, labels, 2, 12, 1, 0);
    const b = await plain.forwardBackward(batch, labels, 2, 12, 1, 0);
    assert.deepEqual(a, b);
    for (const p of plain.trainableParams()) assert.ok(same(packed.getGrad(p.name), plain.getGrad(p.name)), `gradient of ${p.name}`);
    // Evaluation between steps stays row-major (no pack/unpack per eval).
    await packed.forwardLoss(batch, labels, 2, 12);
    assert.equal(packed.packedWeights(), 0, 'training ended inference mode');
  }
});
