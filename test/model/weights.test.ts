// Locating checkpoint tensors: safetensors and PyTorch .bin, single and sharded, and broken folders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { listCheckpointTensors } from '../../src/model/weights.js';
import { loadBase } from '../../src/model/load.js';
import { readSafetensorsHeader, writeSafetensors } from '../../src/io/safetensors.js';
import type { TensorSource } from '../../src/native/types.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-w-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
const folder = (name: string) => {
  const d = path.join(tmp, name);
  fs.mkdirSync(d);
  return d;
};
// Header JSON lengths below are computed from these exact strings (padded to 8 by the writer).
const headerLen = (json: string) => Math.ceil(Buffer.byteLength(json) / 8) * 8;

test('single model.safetensors: absolute offsets, float tensors only', () => {
  const dir = folder('single');
  writeSafetensors(path.join(dir, 'model.safetensors'), [
    { name: 'a', dtype: 'F32', shape: [2], data: new Float32Array(2) },
    { name: 'pos', dtype: 'I32', shape: [1], data: new Int32Array(1) },
    { name: 'b', dtype: 'BF16', shape: [3, 1], data: new Uint16Array(3) },
  ]);
  const json = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"pos":{"dtype":"I32","shape":[1],"data_offsets":[8,12]},' +
    '"b":{"dtype":"BF16","shape":[3,1],"data_offsets":[12,18]}}';
  const start = 8 + headerLen(json);
  const file = path.join(dir, 'model.safetensors');
  assert.deepEqual(listCheckpointTensors(dir), [
    { name: 'a', file, offset: start, dtype: 'F32', shape: [2] },
    { name: 'b', file, offset: start + 12, dtype: 'BF16', shape: [3, 1] },
  ]);
});

test('sharded index: every weight_map entry, from its shard', () => {
  const dir = folder('sharded');
  const s1 = 'model-00001-of-00002.safetensors';
  const s2 = 'model-00002-of-00002.safetensors';
  writeSafetensors(path.join(dir, s1), [{ name: 'x', dtype: 'F16', shape: [4], data: new Uint16Array(4) }]);
  writeSafetensors(path.join(dir, s2), [
    { name: 'y', dtype: 'F32', shape: [1], data: new Float32Array(1) },
    { name: 'z', dtype: 'F32', shape: [2], data: new Float32Array(2) },
  ]);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 20 }, weight_map: { x: s1, y: s2, z: s2 } }));
  const j1 = '{"x":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}';
  const j2 = '{"y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"z":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}';
  const got = listCheckpointTensors(dir).sort((a, b) => a.name.localeCompare(b.name));
  assert.deepEqual(got, [
    { name: 'x', file: path.join(dir, s1), offset: 8 + headerLen(j1), dtype: 'F16', shape: [4] },
    { name: 'y', file: path.join(dir, s2), offset: 8 + headerLen(j2), dtype: 'F32', shape: [1] },
    { name: 'z', file: path.join(dir, s2), offset: 8 + headerLen(j2) + 4, dtype: 'F32', shape: [2] },
  ]);

  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: s1, w: s1, v: 'model-00003-of-00003.safetensors' } }));
  assert.throws(() => listCheckpointTensors(dir), /lists shards that are not in .*: model-00003-of-00003\.safetensors/);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: s1, w: s1 } }));
  assert.throws(() => listCheckpointTensors(dir), /maps w to model-00001-of-00002\.safetensors, which does not hold them/);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {} }));
  assert.throws(() => listCheckpointTensors(dir), /missing the "weight_map" object/);
});

const FIX = fileURLToPath(new URL('../fixtures/torch-bin/', import.meta.url));
const fx = (name: string) => path.join(FIX, name);

/** The float tensors of a safetensors fixture: what listCheckpointTensors must report for its .bin twin. */
function floatTensorsOf(stFile: string): Map<string, { dtype: string; shape: number[]; bytes: Buffer }> {
  const h = readSafetensorsHeader(stFile);
  const all = fs.readFileSync(stFile);
  const out = new Map<string, { dtype: string; shape: number[]; bytes: Buffer }>();
  for (const [name, t] of h.tensors) {
    if (['F32', 'F16', 'BF16'].includes(t.dtype)) out.set(name, { dtype: t.dtype, shape: t.shape, bytes: all.subarray(h.dataStart + t.begin, h.dataStart + t.end) });
  }
  return out;
}

function assertSourcesMatch(got: TensorSource[], stFile: string): void {
  const want = floatTensorsOf(stFile);
  assert.deepEqual(got.map((s) => s.name).sort(), [...want.keys()].sort());
  for (const s of got) {
    const w = want.get(s.name)!;
    assert.equal(s.dtype, w.dtype, s.name);
    assert.deepEqual(s.shape, w.shape, s.name);
    assert.ok(fs.readFileSync(s.file).subarray(s.offset, s.offset + w.bytes.length).equals(w.bytes), `${s.name}: bytes differ`);
  }
}

test('pytorch_model.bin: its float tensors at the offsets that hold them; int64 buffers skipped', () => {
  const dir = folder('bin');
  fs.copyFileSync(fx('tensors.bin'), path.join(dir, 'pytorch_model.bin'));
  const got = listCheckpointTensors(dir);
  assert.ok(got.every((s) => s.file === path.join(dir, 'pytorch_model.bin')));
  assert.ok(!got.some((s) => s.name === 'position_ids'));
  assertSourcesMatch(got, fx('tensors.safetensors'));
});

test('sharded .bin with pytorch_model.bin.index.json', () => {
  const dir = folder('bin-sharded');
  fs.cpSync(fx('sharded'), dir, { recursive: true });
  const got = listCheckpointTensors(dir);
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'pytorch_model.bin.index.json'), 'utf8'));
  for (const s of got) assert.equal(s.file, path.join(dir, index.weight_map[s.name]), s.name);
  assertSourcesMatch(got, fx('tensors.safetensors'));

  index.weight_map['bf16.weight'] = 'pytorch_model-00001-of-00002.bin';
  fs.writeFileSync(path.join(dir, 'pytorch_model.bin.index.json'), JSON.stringify(index));
  assert.throws(() => listCheckpointTensors(dir), /maps bf16\.weight to pytorch_model-00001-of-00002\.bin, which does not hold them/);
  fs.rmSync(path.join(dir, 'pytorch_model.bin.index.json'));
  assert.throws(() => listCheckpointTensors(dir), /holds shard pytorch_model-0000[12]-of-00002\.bin but not pytorch_model\.bin\.index\.json/);
});

test('safetensors wins over .bin in the same folder; .bin refusals reach the caller', () => {
  const dir = folder('both');
  writeSafetensors(path.join(dir, 'model.safetensors'), [{ name: 'a', dtype: 'F32', shape: [1], data: new Float32Array(1) }]);
  fs.copyFileSync(fx('malicious.bin'), path.join(dir, 'pytorch_model.bin'));
  assert.deepEqual(listCheckpointTensors(dir).map((s) => s.name), ['a']);
  fs.rmSync(path.join(dir, 'model.safetensors'));
  assert.throws(() => listCheckpointTensors(dir), /pytorch_model\.bin \(malicious\/data\.pkl\) imports os\.system; sft refuses the file/);
});

test('F64 and I8 weights are refused, in either format; integer buffers are skipped', () => {
  const dir = folder('f64');
  fs.copyFileSync(fx('float64.bin'), path.join(dir, 'pytorch_model.bin'));
  assert.throws(() => listCheckpointTensors(dir), /pytorch_model\.bin: tensor "w64\.weight" is F64; sft reads F32, F16 and BF16 weights/);
  // writeSafetensors writes no I8/U8/I64, so these headers are written by hand.
  const st = folder('i8');
  const file = path.join(st, 'model.safetensors');
  const rawSafetensors = (header: Record<string, unknown>, dataLen: number) => {
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    fs.writeFileSync(file, Buffer.concat([len, json, Buffer.alloc(dataLen)]));
  };
  rawSafetensors({
    ids: { dtype: 'I64', shape: [1], data_offsets: [0, 8] },
    mask: { dtype: 'U8', shape: [2], data_offsets: [8, 10] },
    'w.weight': { dtype: 'F32', shape: [1], data_offsets: [10, 14] },
  }, 14);
  assert.deepEqual(listCheckpointTensors(st).map((s) => s.name), ['w.weight']);
  rawSafetensors({ 'q.weight': { dtype: 'I8', shape: [4], data_offsets: [0, 4] } }, 4);
  assert.throws(() => listCheckpointTensors(st), /tensor "q\.weight" is I8; sft reads F32, F16 and BF16 weights \(a quantized checkpoint\?/);
});

test('a tiny Baichuan-7B as pytorch_model.bin or .bin shards gives the logits of its safetensors copy and of transformers', async () => {
  const ref = JSON.parse(fs.readFileSync(fx('baichuan-logits.json'), 'utf8')) as { ids: number[]; vocab: number; logits: number[] };
  const ids = new Int32Array(ref.ids);
  const logitsOf = async (dir: string) => (await loadBase(fx(dir), { threads: 1 })).model.logits(ids, 1, ids.length);
  const st = await logitsOf('baichuan-st');
  assert.deepEqual(await logitsOf('baichuan-bin'), st);
  assert.deepEqual(await logitsOf('baichuan-bin-sharded'), st);
  assert.equal(st.length, ref.logits.length);
  let worst = 0;
  for (let i = 0; i < st.length; i++) worst = Math.max(worst, Math.abs(st[i] - ref.logits[i]));
  // transformers computes RoPE angles in float32; at this fixture's weight scale that alone moves the
  // logits by up to 6e-4 (recomputing its reference with float64 angles agrees with the engine to 2e-6).
  assert.ok(worst < 2e-3, `max |engine - transformers| = ${worst}`);
});

test('empty or missing folders name what is missing', () => {
  assert.throws(() => listCheckpointTensors(folder('empty')), /no weights found; expected model\.safetensors, model\.safetensors\.index\.json, pytorch_model\.bin, pytorch_model\.bin\.index\.json/);
  assert.throws(() => listCheckpointTensors(path.join(tmp, 'nope')), /model folder .*nope not found/);
});
