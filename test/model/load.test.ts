// Loading a model folder into the engine: what a user's broken checkpoint gets told.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { loadBase, loadModel } from '../../src/model/load.js';
import { Stopped } from '../../src/util/interrupt.js';
import { readSafetensorsHeader, readTensorF32, writeSafetensors } from '../../src/io/safetensors.js';
import { writeLoraAdapter } from '../../src/io/peft.js';
import { f32ArrayToF16, f32ArrayToBf16, f16ArrayToF32, bf16ArrayToF32 } from '../../src/io/float16.js';

const root = mkdtempSync(join(tmpdir(), 'sft-load-'));
const good = join(root, 'good');
initModel({ arch: 'llama', outDir: good, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48, vocab: 300, seed: 1, maxPosition: 128, force: true });

/** A copy of the good model whose safetensors holds `edit(tensors)`. */
function variant(name: string, edit: (t: { name: string; shape: number[]; data: Float32Array }[]) => void): string {
  const dir = join(root, name);
  cpSync(good, dir, { recursive: true });
  const file = join(dir, 'model.safetensors');
  const h = readSafetensorsHeader(file);
  const tensors = [...h.tensors.entries()].map(([n, info]) => ({ name: n, shape: info.shape, data: readTensorF32(file, h, n) }));
  edit(tensors);
  writeSafetensors(file, tensors.map((t) => ({ ...t, dtype: 'F32' as const })), { format: 'pt' });
  return dir;
}

test('weights load from safetensors and match what was written', async () => {
  const { model } = await loadBase(good);
  const file = join(good, 'model.safetensors');
  const h = readSafetensorsHeader(file);
  for (const name of ['model.layers.1.self_attn.k_proj.weight', 'model.embed_tokens.weight', 'lm_head.weight']) {
    assert.deepEqual(model.getTensor(name), readTensorF32(file, h, name), name);
  }
});

test('a missing weight tensor is named', async () => {
  const dir = variant('missing', (t) => t.splice(t.findIndex((x) => x.name === 'model.layers.1.mlp.up_proj.weight'), 1));
  await assert.rejects(loadBase(dir), /missing 1 tensor\(s\): model\.layers\.1\.mlp\.up_proj\.weight/);
});

test('a tensor whose shape disagrees with config.json is named with both shapes', async () => {
  const dir = variant('shape', (t) => {
    const x = t.find((y) => y.name === 'model.layers.0.mlp.gate_proj.weight')!;
    x.shape = [40, 32];
    x.data = new Float32Array(40 * 32);
  });
  await assert.rejects(loadBase(dir), /"model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[40, 32\], config\.json implies \[48, 32\]/);
});

test('an unexpected tensor is refused, not silently ignored', async () => {
  const dir = variant('extra', (t) => t.push({ name: 'model.layers.1.mlp.up_proj.bias', shape: [2], data: new Float32Array(2) }));
  await assert.rejects(loadBase(dir), /unexpected tensor "model\.layers\.1\.mlp\.up_proj\.bias"/);
});

// A config.json that does not describe its weights is refused from the checkpoint's headers,
// before anything of its size is built: no minutes of work, no gigabytes, no std::bad_alloc.
for (const [what, edit, message] of [
  ['100,000 layers', { num_hidden_layers: 100000 }, /config\.json says num_hidden_layers 100000 but .*model\.safetensors holds 2 layers — config\.json and the weights do not match/],
  ['a vocabulary of 1e9', { vocab_size: 1e9 }, /config\.json says vocab_size 1000000000 and hidden_size 32, but .*model\.safetensors holds "model\.embed_tokens\.weight" of shape \[\d+, 32\]/],
] as const) {
  test(`a config.json claiming ${what} fails at once, naming config.json and the weights file`, async () => {
    const dir = join(root, `cfg-${what.replace(/\W/g, '')}`);
    cpSync(good, dir, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, ...edit }));
    const t0 = Date.now();
    await assert.rejects(loadBase(dir), message);
    assert.ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`);
  });
}

test('an unsupported architecture is refused with the supported list', async () => {
  const dir = join(root, 'bloom');
  cpSync(good, dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  cfg.architectures = ['GPTNeoXForCausalLM'];
  cfg.model_type = 'gpt_neox';
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  await assert.rejects(loadBase(dir), /GPTNeoX.*LlamaForCausalLM/s);
});

test('token ids outside the vocabulary are refused by the engine, naming the id', async () => {
  const { model, native } = await loadBase(good);
  const ids = new Int32Array([1, 2, native.vocabSize]);
  await assert.rejects(model.logits(ids, 1, 3), new RegExp(`token id ${native.vocabSize} at position 2 is outside the vocabulary \\(size ${native.vocabSize}\\)`));
  await assert.rejects(model.forwardBackward(new Int32Array([-1, 2]), new Int32Array([2, -100]), 1, 2, 1, 0), /token id -1/);
});

test('an adapter for another base model is refused with the tensor named', async () => {
  const dir = join(root, 'adapter');
  writeLoraAdapter(dir, {
    tensors: [{ name: 'model.layers.0.self_attn.q_proj.lora_A.weight', shape: [4, 64], data: new Float32Array(256) }],
    config: { baseModel: 'other', r: 4, loraAlpha: 8, loraDropout: 0, targetModules: ['q_proj'] },
  });
  await assert.rejects(loadModel({ modelDir: good, adapterDir: dir }), /q_proj\.lora_A\.weight" has shape \[4, 64\], this model needs \[4, 32\]/);
});

test('F16 and BF16 checkpoints, and a sharded index, load to the values they store', async () => {
  const file = join(good, 'model.safetensors');
  const h = readSafetensorsHeader(file);
  const tensors = [...h.tensors.keys()].map((n) => ({ name: n, shape: h.tensors.get(n)!.shape, data: readTensorF32(file, h, n) }));
  const ids = new Int32Array([5, 9, 33, 2, 17]);
  const ref = await (await loadBase(good)).model.logits(ids, 1, ids.length);
  for (const dtype of ['F16', 'BF16'] as const) {
    const dir = join(root, dtype);
    cpSync(good, dir, { recursive: true });
    const raw = tensors.map((t) => ({ name: t.name, shape: t.shape, dtype, data: dtype === 'F16' ? f32ArrayToF16(t.data) : f32ArrayToBf16(t.data) }));
    writeSafetensors(join(dir, 'model.safetensors'), raw, { format: 'pt' });
    const { model } = await loadBase(dir);
    // The engine's own conversion must give what the TypeScript converters give for the same bits.
    for (const t of raw.slice(0, 4)) {
      const want = dtype === 'F16' ? f16ArrayToF32(t.data as Uint16Array) : bf16ArrayToF32(t.data as Uint16Array);
      assert.deepEqual(model.getTensor(t.name), want, `${dtype} ${t.name}`);
    }
  }
  // Two shards + model.safetensors.index.json: same logits as the single file.
  const dir = join(root, 'sharded');
  cpSync(good, dir, { recursive: true, filter: (src) => !src.endsWith('model.safetensors') });
  const half = Math.ceil(tensors.length / 2);
  const shards = [tensors.slice(0, half), tensors.slice(half)];
  const weightMap: Record<string, string> = {};
  shards.forEach((part, i) => {
    const name = `model-0000${i + 1}-of-00002.safetensors`;
    writeSafetensors(join(dir, name), part.map((t) => ({ ...t, dtype: 'F32' as const })), { format: 'pt' });
    for (const t of part) weightMap[t.name] = name;
  });
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  const got = await (await loadBase(dir)).model.logits(ids, 1, ids.length);
  assert.deepEqual(got, ref);
});

test('a stop asked for while the weights load ends the load with Stopped (asked before each part of ~64M values)', async () => {
  await assert.rejects(loadBase(good, { shouldStop: () => true }), (e: unknown) => e instanceof Stopped && /^SIGINT: stopped while loading the weights of /.test(e.message));
  const { model } = await loadBase(good, { shouldStop: () => false });
  assert.ok(model.baseParams().length > 0, 'loads whole when not stopped');
});
