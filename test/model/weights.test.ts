// Locating checkpoint tensors: single file, sharded index, .bin-only and broken folders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { listCheckpointTensors } from '../../src/model/weights.js';
import { writeSafetensors } from '../../src/io/safetensors.js';

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

test('.bin-only folders are refused with the conversion command', () => {
  const dir = folder('bin');
  fs.writeFileSync(path.join(dir, 'pytorch_model-00001-of-00002.bin'), '');
  fs.writeFileSync(path.join(dir, 'pytorch_model.bin.index.json'), '{}');
  assert.throws(() => listCheckpointTensors(dir), (err: Error) => {
    assert.match(err.message, /PyTorch \.bin weights; loading \.bin comes in a later version/);
    assert.match(err.message, /from safetensors\.torch import save_file/);
    return true;
  });
});

test('empty or missing folders name what is missing', () => {
  assert.throws(() => listCheckpointTensors(folder('empty')), /no weights found; expected model\.safetensors or model\.safetensors\.index\.json/);
  assert.throws(() => listCheckpointTensors(path.join(tmp, 'nope')), /model folder .*nope not found/);
});
