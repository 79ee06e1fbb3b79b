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

// ---- Shard indexes that point out of the folder, and folders that are not what they seem ---------------------

/** A folder with two one-tensor safetensors shards (x in s1, y in s2) and `map` as its index. */
function indexedFolder(name: string, map: Record<string, string>): { dir: string; index: string } {
  const dir = folder(name);
  writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [{ name: 'x', dtype: 'F32', shape: [1], data: new Float32Array(1) }]);
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [{ name: 'y', dtype: 'F32', shape: [1], data: new Float32Array(1) }]);
  const index = path.join(dir, 'model.safetensors.index.json');
  fs.writeFileSync(index, JSON.stringify({ weight_map: map }, null, 2));
  return { dir, index };
}

function refusedListing(dir: string, re: RegExp, starts: string): void {
  assert.throws(() => listCheckpointTensors(dir), (err: unknown) => {
    assert.ok(err instanceof Error && err.name === 'SftError', `expected an SftError for ${re}, got ${(err as Error)?.constructor?.name}: ${(err as Error)?.message?.slice(0, 300)}`);
    assert.match(err.message, re);
    assert.ok(err.message.startsWith(starts), `message starts with ${starts}: ${err.message.slice(0, 300)}`);
    assert.ok(err.message.length < 800, `a ${err.message.length}-character message`);
    return true;
  });
}

test('an index entry that leaves the folder is refused, naming the index and the entry', () => {
  // A real file outside the folder, so that reading it would succeed if it were not refused.
  writeSafetensors(path.join(tmp, 'outside.safetensors'), [{ name: 'x', dtype: 'F32', shape: [1], data: new Float32Array(1) }]);
  const cases: [string, RegExp][] = [
    ['../outside.safetensors', /weight_map\["x"\] is "\.\.\/outside\.safetensors", which is not a file name in the model folder \(it has a directory part\)/],
    [path.join(tmp, 'outside.safetensors'), /weight_map\["x"\] is ".*outside\.safetensors", which is not a file name in the model folder \(it is an absolute path\)/],
    ['sub/model-00001-of-00002.safetensors', /weight_map\["x"\] is "sub\/model-00001-of-00002\.safetensors", which is not a file name in the model folder \(it has a directory part\)/],
    ['./model-00001-of-00002.safetensors', /\(it has a directory part\)/],
    ['sub\\model.safetensors', /\(it has a directory part\)/],
    ['..', /weight_map\["x"\] is "\.\.", which is not a file name/],
    ['', /weight_map\["x"\] is "", which is not a file name/],
  ];
  let k = 0;
  for (const [shard, re] of cases) {
    const { dir, index } = indexedFolder(`escape-${k++}`, { x: shard, y: 'model-00002-of-00002.safetensors' });
    fs.mkdirSync(path.join(dir, 'sub'));
    writeSafetensors(path.join(dir, 'sub', 'model-00001-of-00002.safetensors'), [{ name: 'x', dtype: 'F32', shape: [1], data: new Float32Array(1) }]);
    refusedListing(dir, re, `${index}: `);
  }
});

test('a shard that is a symlink out of the folder is refused; one inside it, or into the HF cache blobs, is read', () => {
  const { dir, index } = indexedFolder('links', { x: 'link-out.safetensors', y: 'model-00002-of-00002.safetensors' });
  fs.symlinkSync('../outside.safetensors', path.join(dir, 'link-out.safetensors'));
  writeSafetensors(path.join(tmp, 'outside.safetensors'), [{ name: 'x', dtype: 'F32', shape: [1], data: new Float32Array(1) }]);
  refusedListing(dir, /weight_map\["x"\] is "link-out\.safetensors", a symlink to .*outside\.safetensors, outside the model folder/, `${index}: `);
  fs.symlinkSync('model-00001-of-00002.safetensors', path.join(dir, 'link-in.safetensors'));
  fs.writeFileSync(index, JSON.stringify({ weight_map: { x: 'link-in.safetensors', y: 'model-00002-of-00002.safetensors' } }));
  assert.deepEqual(listCheckpointTensors(dir).map((s) => [s.name, path.basename(s.file)]), [['x', 'link-in.safetensors'], ['y', 'model-00002-of-00002.safetensors']]);

  // huggingface_hub's cache: snapshots/<rev>/<file> are symlinks to ../../blobs/<hash> of the same repository.
  const repo = path.join(tmp, 'hub', 'models--org--tiny');
  const snap = path.join(repo, 'snapshots', 'abc123');
  fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
  fs.mkdirSync(snap, { recursive: true });
  writeSafetensors(path.join(repo, 'blobs', 'aaaa'), [{ name: 'x', dtype: 'F32', shape: [1], data: new Float32Array(1) }]);
  fs.symlinkSync('../../blobs/aaaa', path.join(snap, 'model-00001-of-00001.safetensors'));
  fs.writeFileSync(path.join(snap, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: 'model-00001-of-00001.safetensors' } }));
  assert.deepEqual(listCheckpointTensors(snap).map((s) => s.name), ['x']);
  // ... but not into another repository's blobs.
  fs.mkdirSync(path.join(tmp, 'hub', 'models--other--repo', 'blobs'), { recursive: true });
  writeSafetensors(path.join(tmp, 'hub', 'models--other--repo', 'blobs', 'bbbb'), [{ name: 'x', dtype: 'F32', shape: [1], data: new Float32Array(1) }]);
  fs.rmSync(path.join(snap, 'model-00001-of-00001.safetensors'));
  fs.symlinkSync('../../../models--other--repo/blobs/bbbb', path.join(snap, 'model-00001-of-00001.safetensors'));
  refusedListing(snap, /outside the model folder/, path.join(snap, 'model.safetensors.index.json'));
});

test('shards that are folders, folders that are files, a model.safetensors that is a folder: SftErrors', () => {
  const { dir, index } = indexedFolder('dir-shard', { x: 'shard.safetensors', y: 'model-00002-of-00002.safetensors' });
  fs.mkdirSync(path.join(dir, 'shard.safetensors'));
  refusedListing(dir, /weight_map\["x"\] is "shard\.safetensors", which is a folder, not a file/, `${index}: `);
  const plain = path.join(tmp, 'a-file');
  fs.writeFileSync(plain, 'x');
  refusedListing(plain, /model folder .*a-file is a file, not a folder/, 'model folder');
  const single = folder('single-dir');
  fs.mkdirSync(path.join(single, 'model.safetensors'));
  refusedListing(single, /model\.safetensors: is a folder, not a safetensors file/, path.join(single, 'model.safetensors'));
});

test('a tensor mapped twice in the index is refused with the position of the second', () => {
  const { dir, index } = indexedFolder('dup-map', {});
  fs.writeFileSync(index, '{"weight_map": {\n  "x": "model-00001-of-00002.safetensors",\n  "x": "model-00002-of-00002.safetensors"\n}}');
  refusedListing(dir, /model\.safetensors\.index\.json:3:3: not valid JSON: duplicate key "x"/, `${index}:3:3: `);
});

test('long shard names are cut in messages', () => {
  const { dir, index } = indexedFolder('long', { x: 'q'.repeat(5000) + '.safetensors', y: 'model-00002-of-00002.safetensors' });
  refusedListing(dir, /lists shards that are not in .*: qqqq.*\.\.\./, index);
});

test('an index of 100,000 tensors in one shard is listed in a few seconds', () => {
  const dir = folder('many');
  const names = Array.from({ length: 100_000 }, (_, i) => `t${i}`);
  writeSafetensors(path.join(dir, 'model-00001-of-00001.safetensors'), names.map((name) => ({ name, dtype: 'F32' as const, shape: [0], data: new Float32Array(0) })));
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: Object.fromEntries(names.map((n) => [n, 'model-00001-of-00001.safetensors'])) }));
  const t0 = performance.now();
  assert.equal(listCheckpointTensors(dir).length, 100_000);
  const ms = performance.now() - t0;
  assert.ok(ms < 5000, `${ms.toFixed(0)} ms`);
});
