// safetensors reading/writing against byte layouts written out by hand (SPEC.md §3).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readSafetensorsHeader, readTensorF32, writeSafetensors } from '../../src/io/safetensors.js';
import { SftError } from '../../src/errors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-st-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const file = () => path.join(tmp, `f${n++}.safetensors`);

/** u64 LE length + header text + data bytes, exactly as given. */
function rawFile(header: string, data: number[], lenOverride?: bigint): string {
  const f = file();
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(Buffer.byteLength(header)));
  fs.writeFileSync(f, Buffer.concat([len, Buffer.from(header, 'utf8'), Buffer.from(data)]));
  return f;
}

test('parses a hand-built file', () => {
  const header = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"},' +
    '"b":{"dtype":"I32","shape":[1,1],"data_offsets":[8,12]},"h":{"dtype":"F16","shape":[2],"data_offsets":[12,16]},' +
    '"z":{"dtype":"BF16","shape":[0,3],"data_offsets":[16,16]}}';
  const f = rawFile(header, [
    0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0, // F32 1.5, -2
    0x07, 0x00, 0x00, 0x00, // I32 7
    0x00, 0x3c, 0x00, 0xb8, // F16 1, -0.5
  ]);
  const h = readSafetensorsHeader(f);
  assert.equal(h.headerLen, Buffer.byteLength(header));
  assert.equal(h.dataStart, 8 + Buffer.byteLength(header));
  assert.deepEqual(h.metadata, { format: 'pt' });
  assert.deepEqual([...h.tensors.keys()], ['a', 'b', 'h', 'z']);
  assert.deepEqual(h.tensors.get('b'), { dtype: 'I32', shape: [1, 1], begin: 8, end: 12 });
  assert.deepEqual([...readTensorF32(f, h, 'a')], [1.5, -2]);
  assert.deepEqual([...readTensorF32(f, h, 'h')], [1, -0.5]);
  assert.deepEqual([...readTensorF32(f, h, 'z')], []);
  assert.throws(() => readTensorF32(f, h, 'b'), /I32; expected F32, F16 or BF16/);
  assert.throws(() => readTensorF32(f, h, 'nope'), /no tensor named "nope"/);
});

test('writes the exact byte layout: padded header, ordered offsets', () => {
  const f = file();
  writeSafetensors(f, [
    { name: 'x', dtype: 'F16', shape: [2], data: new Uint16Array([0x3c00, 0xc000]) },
    { name: 'y', dtype: 'F32', shape: [1], data: new Float32Array([1]) },
  ], { format: 'pt' });
  const json = '{"__metadata__":{"format":"pt"},"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},' +
    '"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
  const padded = json + ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(padded.length));
  const expected = Buffer.concat([len, Buffer.from(padded), Buffer.from([0x00, 0x3c, 0x00, 0xc0, 0x00, 0x00, 0x80, 0x3f])]);
  assert.deepEqual(fs.readFileSync(f), expected);
  assert.equal(padded.length % 8, 0);
});

test('round trip of every writable dtype, raw Buffer data, and a many-tensor file', () => {
  const f = file();
  const big = new Float32Array(1000).map((_, i) => i * 0.25 - 7);
  writeSafetensors(f, [
    { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'F32', shape: [10, 100], data: big },
    { name: 'bf', dtype: 'BF16', shape: [3], data: new Uint16Array([0x3f80, 0xc000, 0x4049]) },
    { name: 'i', dtype: 'I32', shape: [2], data: new Int32Array([-1, 123456]) },
    { name: 'raw', dtype: 'F32', shape: [1], data: Buffer.from([0x00, 0x00, 0x20, 0x41]) }, // 10.0
    { name: '__proto__', dtype: 'F32', shape: [], data: new Float32Array([5]) },
  ]);
  const h = readSafetensorsHeader(f);
  assert.equal(h.dataStart % 8, 0);
  assert.deepEqual(h.metadata, {});
  assert.deepEqual([...readTensorF32(f, h, 'model.layers.0.self_attn.q_proj.weight')], [...big]);
  assert.deepEqual([...readTensorF32(f, h, 'bf')], [1, -2, 3.140625]);
  assert.deepEqual([...readTensorF32(f, h, 'raw')], [10]);
  assert.deepEqual([...readTensorF32(f, h, '__proto__')], [5]);
  assert.deepEqual(h.tensors.get('i'), { dtype: 'I32', shape: [2], begin: 4000 + 6, end: 4000 + 6 + 8 });
});

test('writer refuses data that does not fit the shape or dtype', () => {
  assert.throws(() => writeSafetensors(file(), [{ name: 'a', dtype: 'F32', shape: [3], data: new Float32Array(2) }]), /needs 12 bytes, got 8/);
  assert.throws(() => writeSafetensors(file(), [{ name: 'a', dtype: 'F16', shape: [2], data: new Float32Array(1) }]), /F16 but its data is a Float32Array/);
  assert.throws(() => writeSafetensors(file(), [
    { name: 'a', dtype: 'F32', shape: [1], data: new Float32Array(1) },
    { name: 'a', dtype: 'F32', shape: [1], data: new Float32Array(1) },
  ]), /duplicate/);
});

test('corrupt files give SftErrors naming the file and tensor', () => {
  const ok = '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
  const cases: [string, RegExp][] = [
    [rawFile(ok, [0, 0, 0, 0], 10n ** 9n), /over the 100 MB limit/],
    [rawFile(ok, [0, 0, 0, 0], 5000n), /runs past the end of the file/],
    [rawFile('{"t":', []), /not valid JSON/],
    [rawFile('[1,2]', []), /must be a JSON object/],
    [rawFile('{"t":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}', [0, 0, 0, 0]), /tensor "t" has unknown dtype "F33"/],
    [rawFile('{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', [0, 0, 0, 0]), /tensor "t": F32\[2\] needs 8 bytes but data_offsets span 4/],
    [rawFile('{"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', [0, 0, 0, 0]), /tensor "t" has shape \[-1\]/],
    [rawFile('{"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}', [0, 0, 0, 0]), /tensor "t" has data_offsets \[4,0\]/],
    [rawFile('{"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', [0, 0, 0, 0, 0, 0, 0, 0]), /tensor "t" starts at data byte 4 and leaves a gap at byte 0/],
    [rawFile('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', [0, 0, 0, 0, 0, 0, 0, 0]), /tensor "b" starts at data byte 4 and overlaps/],
    [rawFile(ok, [0, 0, 0, 0, 9, 9]), /tensors cover 4 bytes but the data buffer holds 6/],
    [rawFile(ok, [0, 0]), /tensors cover 4 bytes but the data buffer holds 2; the file is truncated/],
    [rawFile('{"__metadata__":{"format":1}}', []), /__metadata__.format must be a string/],
  ];
  for (const [f, re] of cases) {
    assert.throws(() => readSafetensorsHeader(f), (err: unknown) => {
      assert.ok(err instanceof SftError, `expected SftError for ${re}`);
      assert.match(err.message, re);
      assert.ok(err.message.includes(f), `message names the file: ${err.message}`);
      return true;
    });
  }
  const short = file();
  fs.writeFileSync(short, Buffer.from([1, 2, 3]));
  assert.throws(() => readSafetensorsHeader(short), /shorter than the 8-byte header length/);
  assert.throws(() => readSafetensorsHeader(path.join(tmp, 'missing.safetensors')), /missing\.safetensors: file not found/);
});

/** An SftError naming `f` whose message matches `re` and stays short enough to read. */
function refused(f: string, re: RegExp): void {
  assert.throws(() => readSafetensorsHeader(f), (err: unknown) => {
    assert.ok(err instanceof SftError, `expected an SftError for ${re}, got ${(err as Error)?.constructor?.name}: ${(err as Error)?.message?.slice(0, 200)}`);
    assert.match(err.message, re);
    assert.ok(err.message.startsWith(f), `message names the file first: ${err.message.slice(0, 200)}`);
    assert.ok(err.message.length < 600, `a ${err.message.length}-character message`);
    return true;
  });
}

test('a tensor name that is not UTF-8 is refused, not read with a replacement character', () => {
  const header = Buffer.concat([Buffer.from('{"w'), Buffer.from([0xff]), Buffer.from('":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}')]);
  const f = file();
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  fs.writeFileSync(f, Buffer.concat([len, header, Buffer.alloc(4)]));
  refused(f, /header is not valid UTF-8 \(byte 0xff at header byte 3\)/);
});

test('a tensor named twice is refused, even when both entries cover the same bytes', () => {
  const entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';
  refused(rawFile(`{"a":${entry},"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}`, [0, 0, 0, 0]), /tensor "a" is listed twice in the header/);
  refused(rawFile(`{"a":${entry},"a":${entry}}`, [0, 0, 0, 0]), /tensor "a" is listed twice/);
});

test('deep nesting and huge values in the header give a short SftError, not a stack overflow', () => {
  refused(rawFile(`{"t":{"dtype":"F32","shape":${'['.repeat(50_000)}${']'.repeat(50_000)},"data_offsets":[0,4]}}`, [0, 0, 0, 0]), /the safetensors header is not valid JSON \(at character \d+: nested more than 100 levels deep;.*\); the file is corrupt/);
  refused(rawFile(`{"t":{"dtype":"F32","shape":[${Array(100_000).fill(2).join(',')}],"data_offsets":[0,4]}}`, [0, 0, 0, 0]), /tensor "t": F32\[2,2,2,.*\.\.\. needs more bytes than any file holds but data_offsets span 4/);
  refused(rawFile(`{"t":{"dtype":"${'F'.repeat(100_000)}","shape":[1],"data_offsets":[0,4]}}`, [0, 0, 0, 0]), /tensor "t" has unknown dtype "FFFF.*\.\.\."; known: BOOL/);
});

test('dtypes named like Object properties are unknown dtypes', () => {
  for (const dtype of ['toString', 'constructor', '__proto__', 'hasOwnProperty']) {
    refused(rawFile(`{"t":{"dtype":"${dtype}","shape":[1],"data_offsets":[0,4]}}`, [0, 0, 0, 0]), new RegExp(`tensor "t" has unknown dtype "${dtype}"`));
  }
});

test('numbers past the float range are shown as typed, not as null', () => {
  refused(rawFile('{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,1e400]}}', [0, 0, 0, 0]), /: safetensors header at character 51: "data_offsets": 1e400 is not a finite number \(it is beyond the range of a 64-bit float/);
});

test('__metadata__ keys named like Object properties are kept', () => {
  const f = rawFile('{"__metadata__":{"__proto__":"x","constructor":"y"}}', []);
  const h = readSafetensorsHeader(f);
  assert.deepEqual(Object.entries(h.metadata), [['__proto__', 'x'], ['constructor', 'y']]);
});

test('a folder where a safetensors file should be is named as such', () => {
  const d = path.join(tmp, 'folder.safetensors');
  fs.mkdirSync(d);
  refused(d, /folder\.safetensors: is a folder, not a safetensors file/);
});
