// The engine's decode step for several sequences (model.decode, continuous batching's core): each row of its
// logits equals, bit for bit, what feed() of that token alone returns on a model that holds only that
// sequence; and feed() equals the full forward without cache (the long-standing reference, within float
// rounding). Llama with LoRA, Qwen2 (biases), Bloom (ALiBi), fp32 and bf16, batches of 1..8 with different
// lengths, slots reused after truncation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { loadBase } from '../../src/model/load.js';
import { loraModulesOf } from '../../src/model/modules.js';
import type { NativeModel } from '../../src/native/types.js';
import { mulberry32 } from '../../src/chat/sampling.js';

const root = mkdtempSync(join(tmpdir(), 'sft-decode-'));

function makeModel(arch: 'llama' | 'qwen2' | 'bloom', vocab = 300): string {
  const dir = join(root, `${arch}-${vocab}`);
  initModel({ arch, outDir: dir, hidden: 64, layers: 2, heads: 4, intermediate: 96, vocab, seed: 11, maxPosition: 512, force: true });
  return dir;
}

/** LoRA on every linear with random B (PEFT starts B at zero, which would hide a wrong LoRA path). */
function withLora(model: NativeModel, arch: 'llama' | 'qwen2' | 'bloom'): void {
  const rng = mulberry32(5);
  for (const p of model.addLora({ targets: loraModulesOf(arch), rank: 4, alpha: 8, dropout: 0, seed: 3 })) {
    if (!p.name.includes('lora_B')) continue;
    const n = p.shape.reduce((a, b) => a * b, 1);
    model.setTensor(p.name, Float32Array.from({ length: n }, () => (rng() - 0.5) * 0.2));
  }
}

const same = (a: Float32Array, b: Float32Array): boolean => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));

// panels: the frozen weights in the GEMM's panels (prepareInference, as chat and serve load), decode
// rows through the panel GEMV; vocab 320 so that lm_head packs too (a multiple of every nr).
for (const [arch, dtype, lora, panels] of [
  ['llama', 'f32', true, false],
  ['qwen2', 'f32', false, false],
  ['bloom', 'f32', true, false],
  ['llama', 'bf16', true, false],
  ['llama', 'f32', true, true],
  ['qwen2', 'f32', false, true],
  ['bloom', 'f32', true, true],
] as const) {
  test(`${arch} ${dtype}${lora ? ' + LoRA' : ''}${panels ? ', weights in panels' : ''}: decode() rows = feed() alone, bit for bit`, async () => {
    const dir = makeModel(arch, panels ? 320 : 300);
    const batched = (await loadBase(dir, { dtype })).model;
    const alone = (await loadBase(dir, { dtype })).model;
    if (lora) {
      withLora(batched, arch);
      withLora(alone, arch);
    }
    if (panels) {
      assert.ok((await batched.prepareInference()) > 0);
      assert.ok((await alone.prepareInference()) > 0);
    }
    const rng = mulberry32(7);
    const id = () => 3 + Math.floor(rng() * 290);
    // Eight sequences with prompts of different lengths, in slots 0..7 of one model.
    const prompts = Array.from({ length: 8 }, (_, s) => Int32Array.from({ length: 2 + 5 * s }, id));
    for (let s = 0; s < 8; s++) await batched.feed(prompts[s], s);
    const streams = prompts.map((p) => [...p]);
    // Steps with every sequence, then with subsets (some sequences sit out), as requests come and go.
    const plans = [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7], [2, 5], [7], [1, 3, 4, 6, 0], [0, 1, 2, 3, 4, 5, 6, 7]];
    for (const slots of plans) {
      const next = slots.map(() => id());
      const got = await batched.decode(Int32Array.from(slots), Int32Array.from(next));
      const V = got.length / slots.length;
      for (let i = 0; i < slots.length; i++) {
        const s = slots[i];
        streams[s].push(next[i]);
        // The reference: this sequence alone in slot 0 of the other model, fed token by token as chat does.
        alone.resetCache();
        await alone.feed(Int32Array.from(streams[s].slice(0, prompts[s].length)));
        let want = new Float32Array();
        for (let t = prompts[s].length; t < streams[s].length; t++) want = await alone.feed(Int32Array.of(streams[s][t]));
        assert.ok(same(got.subarray(i * V, (i + 1) * V), want), `slot ${s} after ${streams[s].length} tokens differs from its lone feed()`);
      }
      for (const s of slots) assert.equal(batched.cacheLength(s), streams[s].length);
    }
    // A slot truncated and refilled serves a new sequence; the others are untouched.
    batched.truncateCache(0, 3);
    const fresh = Int32Array.from({ length: 9 }, id);
    await batched.feed(fresh, 3);
    const tok = id();
    const got = await batched.decode(Int32Array.of(3, 0), Int32Array.of(tok, tok));
    alone.resetCache();
    await alone.feed(fresh);
    const V = got.length / 2;
    assert.ok(same(got.subarray(0, V), await alone.feed(Int32Array.of(tok))), 'a refilled slot equals a fresh sequence');
    alone.resetCache();
    await alone.feed(prompts[0]);
    for (let t = prompts[0].length; t < streams[0].length; t++) await alone.feed(Int32Array.of(streams[0][t]));
    assert.ok(same(got.subarray(V), await alone.feed(Int32Array.of(tok))), 'the other slots are untouched');
    if (panels) assert.equal(batched.packedWeights(), await alone.prepareInference(), 'still packed');
  });
}

test('cached logits equal the full forward (the reference decode is itself right)', async () => {
  const dir = makeModel('llama');
  const { model } = await loadBase(dir);
  const ids = Int32Array.from({ length: 12 }, (_, i) => 5 + i * 7);
  const full = await model.logits(ids, 1, ids.length);
  const V = full.length / ids.length;
  await model.feed(ids.subarray(0, 4), 2);
  for (let t = 4; t < ids.length; t++) {
    const row = await model.decode(Int32Array.of(2), ids.subarray(t, t + 1));
    const want = full.subarray(t * V, (t + 1) * V);
    assert.ok(row.every((x, i) => Math.abs(x - want[i]) < 1e-4 * (1 + Math.abs(want[i]))), `position ${t}`);
  }
});

test('decode refuses what it cannot do, naming it', async () => {
  const { model } = await loadBase(makeModel('llama'));
  await model.feed(Int32Array.of(5, 6), 0);
  await assert.rejects(model.decode(Int32Array.of(1), Int32Array.of(5)), /slot 1 holds no prompt/);
  await assert.rejects(model.decode(Int32Array.of(0, 0), Int32Array.of(5, 6)), /slot 0 appears twice/);
  await assert.rejects(model.decode(Int32Array.from({ length: 9 }, (_, i) => i), Int32Array.from({ length: 9 }, () => 5)), /1\.\.8/);
  await assert.rejects(model.feed(Int32Array.of(5), 64), /slot 64 is out of range/);
  assert.throws(() => model.decode(Int32Array.of(0), Int32Array.of(5, 6)), /same length/);
});

test('KV slots: a new slot keeps the positions per slot (memory follows slots x positions, not 2^slots)', async () => {
  const { model } = await loadBase(makeModel('llama'));
  const kvBytes = () => model.memoryPlan().kinds.find((k) => k.kind === 'kv_cache')?.bytes ?? 0;
  await model.feed(Int32Array.of(5, 6, 7), 0);
  const one = kvBytes(); // one slot of 256 positions
  assert.ok(one > 0);
  for (let s = 1; s < 8; s++) await model.feed(Int32Array.of(5, 6, 7), s);
  assert.equal(kvBytes(), 8 * one, 'eight slots of 256 positions');
  // Positions still grow geometrically when a sequence outgrows them.
  await model.feed(Int32Array.from({ length: 300 }, (_, i) => 3 + (i % 290)), 2);
  assert.equal(kvBytes(), 16 * one);
});
