// PyTorch .bin checkpoints: tensors located in torch.save's zip (fixtures from
// scripts/reference/make_bin_fixtures.py) must hold exactly the bytes of the safetensors copies;
// anything that is not a plain state dict is refused without running it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { readTorchBin, type BinTensor } from '../../src/io/torch-bin.js';
import { readZipDirectory, readZipEntry } from '../../src/io/zip.js';
import { DTYPE_SIZES, readSafetensorsHeader } from '../../src/io/safetensors.js';

const FIX = fileURLToPath(new URL('../fixtures/torch-bin/', import.meta.url));
const fx = (name: string) => path.join(FIX, name);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-bin-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

function readBytes(file: string, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const fd = fs.openSync(file, 'r');
  try {
    assert.equal(fs.readSync(fd, buf, 0, length, offset), length, `${file}: short read at ${offset}`);
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

/** Every tensor of `bin` has the dtype, shape and bytes the safetensors copy holds, and nothing is missing. */
function assertSameAsSafetensors(bin: string, tensors: BinTensor[], stFile: string): void {
  const h = readSafetensorsHeader(stFile);
  assert.deepEqual(tensors.map((t) => t.name).sort(), [...h.tensors.keys()].sort());
  for (const t of tensors) {
    const ref = h.tensors.get(t.name)!;
    assert.equal(t.dtype, ref.dtype, t.name);
    assert.deepEqual(t.shape, ref.shape, t.name);
    const len = ref.end - ref.begin;
    assert.equal(len, t.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZES[t.dtype]);
    assert.ok(readBytes(bin, t.offset, len).equals(readBytes(stFile, h.dataStart + ref.begin, len)), `${t.name}: bytes differ`);
  }
}

test('F32/F16/BF16, tied weights, views with storage offsets, a scalar and a Parameter: same bytes as safetensors', () => {
  const tensors = readTorchBin(fx('tensors.bin'));
  assertSameAsSafetensors(fx('tensors.bin'), tensors, fx('tensors.safetensors'));
  const at = (n: string) => tensors.find((t) => t.name === n)!;
  // Tied weights share one storage; view.weight is base[2:] of the [5, 3] storage view0.weight starts.
  assert.equal(at('lm_head.weight').offset, at('embed.weight').offset);
  assert.equal(at('view.weight').offset, at('view0.weight').offset + 6 * 2);
  assert.equal(at('position_ids').dtype, 'I64');
  assert.deepEqual(at('scalar').shape, []);
});

test('more than 256 memo entries and one shared storage', () => {
  const tensors = readTorchBin(fx('many-views.bin'));
  assert.equal(tensors.length, 300);
  assertSameAsSafetensors(fx('many-views.bin'), tensors, fx('many-views.safetensors'));
  const v0 = tensors.find((t) => t.name === 'v0.weight')!.offset;
  assert.equal(tensors.find((t) => t.name === 'v299.weight')!.offset, v0 + 299 * 2);
});

test('ZIP64 records (as in shards over 4 GB) give the same tensors', () => {
  assertSameAsSafetensors(fx('zip64.bin'), readTorchBin(fx('zip64.bin')), fx('tensors.safetensors'));
});

test('entries past 4 GiB: 64-bit sizes and offsets, in a sparse file', () => {
  // tensors.bin's entries with a 4.5 GiB entry (a hole: no disk space on sparse-capable file systems)
  // after data.pkl, so every storage lies past 4 GiB as the later tensors of a 10 GB shard do.
  const src = readZipDirectory(fx('tensors.bin'));
  const entries: ZipInput[] = src.entries.map((e) => ({ name: e.name, data: readZipEntry(src, e) }));
  entries.splice(1, 0, { name: 'tensors/padding', hole: 4.5 * 2 ** 30 });
  const file = path.join(tmp, 'big.bin');
  writeStoredZip(file, entries, { zip64: true });
  try {
    const tensors = readTorchBin(file);
    assert.ok(tensors.every((t) => t.offset > 2 ** 32));
    assertSameAsSafetensors(file, tensors, fx('tensors.safetensors'));
  } finally {
    fs.rmSync(file);
  }
});

test('a top folder with any name; LONG1, BININT, LONG_BINPUT/LONG_BINGET and APPENDS from a hand-written pickle', () => {
  // {'a': F32 tensor at storage offset 70000 (BININT) with shape (2, 3) stride (3, 1),
  //  'b': F16 tensor at storage offset 5 (LONG1) of its own storage, shape (4,) stride (1,)}
  // The storage class for 'b' is fetched back through LONG_BINGET; hooks built with APPENDS on a list.
  const pkl = Buffer.concat([
    proto2, EMPTY_DICT, MARK,
    uni('a'), REBUILD, MARK,
    persid('FloatStorage', '0', int32(70006)), int32(70000), tuple2(int1(2), int1(3)), tuple2(int1(3), int1(1)),
    NEWFALSE, EMPTY_LIST, MARK, NONE, APPENDS, TUPLE, REDUCE,
    uni('b'), REBUILD, MARK,
    Buffer.from([0x28]), uni('storage'), GLOBAL('torch', 'HalfStorage'), LONG_BINPUT(300), uni('1'), uni('cpu'), long1(9), TUPLE, BINPERSID,
    long1(5), int1(4), TUPLE1_(), int1(1), TUPLE1_(), NEWFALSE, OD_EMPTY, TUPLE, REDUCE,
    uni('c'), REBUILD, MARK,
    Buffer.from([0x28]), uni('storage'), LONG_BINGET(300), uni('1'), uni('cpu'), long1(9), TUPLE, BINPERSID,
    int1(0), int1(2), TUPLE1_(), int1(1), TUPLE1_(), NEWFALSE, OD_EMPTY, TUPLE, REDUCE,
    SETITEMS, STOP,
  ]);
  const file = path.join(tmp, 'hand.bin');
  const fData0 = Buffer.alloc(70006 * 4);
  const fData1 = Buffer.alloc(9 * 2);
  writeStoredZip(file, [
    { name: 'my weights/data.pkl', data: pkl },
    { name: 'my weights/byteorder', data: Buffer.from('little') },
    { name: 'my weights/data/0', data: fData0 },
    { name: 'my weights/data/1', data: fData1 },
  ]);
  const z = readZipDirectory(file);
  const start0 = localDataStart(file, z.byName.get('my weights/data/0')!.localHeaderOffset);
  const start1 = localDataStart(file, z.byName.get('my weights/data/1')!.localHeaderOffset);
  assert.deepEqual(readTorchBin(file), [
    { name: 'a', dtype: 'F32', shape: [2, 3], offset: start0 + 70000 * 4 },
    { name: 'b', dtype: 'F16', shape: [4], offset: start1 + 5 * 2 },
    { name: 'c', dtype: 'F16', shape: [2], offset: start1 },
  ]);
});

test('code-running and unexpected pickles are refused, naming what they import', () => {
  assert.throws(() => readTorchBin(fx('malicious.bin')), (err: Error) => {
    assert.equal(err.name, 'SftError');
    assert.match(err.message, /malicious\.bin \(malicious\/data\.pkl\) imports os\.system; sft refuses the file because it is not a plain state dict/);
    return true;
  });
  assert.equal(fs.existsSync('/tmp/sft-pwned'), false);
  assert.throws(() => readTorchBin(fx('unexpected-global.bin')), /imports torch\.nn\.modules\.linear\.Linear; sft refuses the file because it is not a plain state dict/);

  // An opcode outside the list (NEWOBJ, 0x81), and REDUCE on an allowed but non-callable global.
  const file = path.join(tmp, 'op.bin');
  writeStoredZip(file, [{ name: 'x/data.pkl', data: Buffer.concat([proto2, GLOBAL('collections', 'OrderedDict'), EMPTY_TUPLE, Buffer.from([0x81]), STOP]) }]);
  assert.throws(() => readTorchBin(file), /x\/data\.pkl\) uses pickle opcode 0x81 at byte 28; sft refuses the file/);
  writeStoredZip(file, [{ name: 'x/data.pkl', data: Buffer.concat([proto2, GLOBAL('torch', 'FloatStorage'), EMPTY_TUPLE, REDUCE, STOP]) }]);
  assert.throws(() => readTorchBin(file), /calls torch\.FloatStorage; sft refuses the file/);
});

test('layouts sft cannot read are refused with what to do', () => {
  assert.throws(() => readTorchBin(fx('compressed.bin')), /compressed\.bin: zip entry "tensors\/[^"]+" is compressed \(method 8\); sft reads checkpoints whose entries are stored uncompressed/);
  assert.throws(() => readTorchBin(fx('transposed.bin')), /tensor "t\.weight" \(shape \[4, 3\], strides \[1, 4\]\) is not contiguous row-major; re-save it with tensor\.contiguous\(\)/);
  assert.throws(() => readTorchBin(fx('neg-view.bin')), /tensor "neg\.weight" was saved with torch's "neg" bit set/);
  assert.throws(() => readTorchBin(fx('legacy.bin')), /legacy \(pre-1\.6, non-zip\) format.*torch\.save\(torch\.load/s);

  const lfs = path.join(tmp, 'lfs.bin');
  fs.writeFileSync(lfs, 'version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 9976634558\n');
  assert.throws(() => readTorchBin(lfs), /lfs\.bin is a Git LFS pointer, not the weights/);

  // A training checkpoint ({'model': {...}}) and a truncated shard.
  const file = path.join(tmp, 'nested.bin');
  writeStoredZip(file, [{ name: 'ck/data.pkl', data: Buffer.concat([proto2, EMPTY_DICT, uni('model'), EMPTY_DICT, SETITEM, STOP]) }]);
  assert.throws(() => readTorchBin(file), /"model" is a dict, not a tensor; this looks like a training checkpoint/);
  const cut = path.join(tmp, 'cut.bin');
  const whole = fs.readFileSync(fx('tensors.bin'));
  fs.writeFileSync(cut, whole.subarray(0, whole.length - 300));
  assert.throws(() => readTorchBin(cut), /cut\.bin: not a zip archive \(no end-of-central-directory record\); the file is truncated/);
});

// ---- Hand-written pickles and zips ----------------------------------------------------------------

const proto2 = Buffer.from([0x80, 2]);
const STOP = Buffer.from('.');
const MARK = Buffer.from('(');
const TUPLE = Buffer.from('t');
const EMPTY_TUPLE = Buffer.from(')');
const EMPTY_DICT = Buffer.from('}');
const EMPTY_LIST = Buffer.from(']');
const NONE = Buffer.from('N');
const NEWFALSE = Buffer.from([0x89]);
const REDUCE = Buffer.from('R');
const SETITEM = Buffer.from('s');
const SETITEMS = Buffer.from('u');
const APPENDS = Buffer.from('e');
const BINPERSID = Buffer.from('Q');
const TUPLE1_ = () => Buffer.from([0x85]);
const GLOBAL = (m: string, n: string) => Buffer.from(`c${m}\n${n}\n`, 'latin1');
const REBUILD = GLOBAL('torch._utils', '_rebuild_tensor_v2');
const OD_EMPTY = Buffer.concat([GLOBAL('collections', 'OrderedDict'), EMPTY_TUPLE, REDUCE]);
const uni = (s: string) => {
  const b = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(b.length);
  return Buffer.concat([Buffer.from('X'), len, b]);
};
const int1 = (v: number) => Buffer.from([0x4b, v]);
const int32 = (v: number) => {
  const b = Buffer.alloc(5);
  b[0] = 0x4a;
  b.writeInt32LE(v, 1);
  return b;
};
// LONG1 with a two-byte payload, the way pickle writes small longs.
const long1 = (v: number) => Buffer.from([0x8a, 2, v & 0xff, (v >> 8) & 0xff]);
const tuple2 = (a: Buffer, b: Buffer) => Buffer.concat([a, b, Buffer.from([0x86])]);
const LONG_BINPUT = (id: number) => {
  const b = Buffer.alloc(5);
  b[0] = 0x72;
  b.writeUInt32LE(id, 1);
  return b;
};
const LONG_BINGET = (id: number) => {
  const b = Buffer.alloc(5);
  b[0] = 0x6a;
  b.writeUInt32LE(id, 1);
  return b;
};
const persid = (cls: string, key: string, numel: Buffer) =>
  Buffer.concat([MARK, uni('storage'), GLOBAL('torch', cls), uni(key), uni('cpu'), numel, TUPLE, BINPERSID]);

/** An entry's bytes, or the size of an entry left as a hole in a sparse file. */
type ZipInput = { name: string; data: Buffer } | { name: string; hole: number };

/** A stored zip per APPNOTE 4.3, optionally with ZIP64 size/offset fields everywhere
 *  (a hole's CRC is left 0). */
function writeStoredZip(file: string, entries: ZipInput[], opts: { zip64?: boolean } = {}): void {
  const fd = fs.openSync(file, 'w');
  let pos = 0;
  const put = (b: Buffer) => {
    fs.writeSync(fd, b, 0, b.length, pos);
    pos += b.length;
  };
  const central: Buffer[] = [];
  for (const e of entries) {
    const { name } = e;
    const size = 'data' in e ? e.data.length : e.hole;
    if (size > 0xfffffffe && !opts.zip64) throw new Error('entries over 4 GiB need zip64');
    const offset = pos;
    const crc = 'data' in e ? zlib.crc32(e.data) : 0;
    const nameBuf = Buffer.from(name, 'utf8');
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(45, 4);
    local.writeUInt16LE(0x800, 6);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(opts.zip64 ? 0xffffffff : size, 18);
    local.writeUInt32LE(opts.zip64 ? 0xffffffff : size, 22);
    local.writeUInt16LE(nameBuf.length, 26);
    put(Buffer.concat([local, nameBuf]));
    if ('data' in e) put(e.data);
    else pos += e.hole;
    const extra = opts.zip64 ? Buffer.alloc(4 + 24) : Buffer.alloc(0);
    if (opts.zip64) {
      extra.writeUInt16LE(1, 0);
      extra.writeUInt16LE(24, 2);
      extra.writeBigUInt64LE(BigInt(size), 4);
      extra.writeBigUInt64LE(BigInt(size), 12);
      extra.writeBigUInt64LE(BigInt(offset), 20);
    }
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(45, 4);
    c.writeUInt16LE(45, 6);
    c.writeUInt16LE(0x800, 8);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(opts.zip64 ? 0xffffffff : size, 20);
    c.writeUInt32LE(opts.zip64 ? 0xffffffff : size, 24);
    c.writeUInt16LE(nameBuf.length, 28);
    c.writeUInt16LE(extra.length, 30);
    c.writeUInt32LE(opts.zip64 ? 0xffffffff : offset, 42);
    central.push(Buffer.concat([c, nameBuf, extra]));
  }
  const cdOffset = pos;
  const cd = Buffer.concat(central);
  put(cd);
  if (opts.zip64) {
    const end64At = pos;
    const end64 = Buffer.alloc(56);
    end64.writeUInt32LE(0x06064b50, 0);
    end64.writeBigUInt64LE(44n, 4);
    end64.writeBigUInt64LE(BigInt(entries.length), 24);
    end64.writeBigUInt64LE(BigInt(entries.length), 32);
    end64.writeBigUInt64LE(BigInt(cd.length), 40);
    end64.writeBigUInt64LE(BigInt(cdOffset), 48);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(end64At), 8);
    loc.writeUInt32LE(1, 16);
    put(Buffer.concat([end64, loc]));
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(opts.zip64 ? 0xffff : entries.length, 8);
  end.writeUInt16LE(opts.zip64 ? 0xffff : entries.length, 10);
  end.writeUInt32LE(opts.zip64 ? 0xffffffff : cd.length, 12);
  end.writeUInt32LE(opts.zip64 ? 0xffffffff : cdOffset, 16);
  put(end);
  fs.closeSync(fd);
}

/** Where a local header's data begins (its name and extra lengths read straight from the file). */
function localDataStart(file: string, headerOffset: number): number {
  const h = readBytes(file, headerOffset, 30);
  return headerOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
}

// ---- Damage found by test/fuzz/files.test.ts, one case each -----------------------------------------------

/** readTorchBin refuses `file` with an SftError naming it and matching `re`, in a readable length. */
function refusedBin(file: string, re: RegExp): void {
  assert.throws(() => readTorchBin(file), (err: unknown) => {
    assert.ok(err instanceof Error && err.name === 'SftError', `expected an SftError for ${re}, got ${(err as Error)?.constructor?.name}: ${(err as Error)?.message?.slice(0, 200)}`);
    assert.match(err.message, re);
    assert.ok(err.message.startsWith(file), `message names the file first: ${err.message.slice(0, 200)}`);
    assert.ok(err.message.length < 800, `a ${err.message.length}-character message`);
    return true;
  });
}

/** A one-tensor state dict {name: F32 [1]} whose key is pickled from `nameBytes` (raw UTF-8 or not). */
function oneTensorPickle(nameBytes: Buffer, twice = false): Buffer {
  const key = Buffer.concat([Buffer.from('X'), Buffer.from([nameBytes.length, 0, 0, 0]), nameBytes]);
  const tensor = Buffer.concat([REBUILD, MARK, persid('FloatStorage', '0', int1(1)), int1(0), int1(1), TUPLE1_(), int1(1), TUPLE1_(), NEWFALSE, OD_EMPTY, TUPLE, REDUCE]);
  return Buffer.concat([proto2, EMPTY_DICT, MARK, key, tensor, ...(twice ? [key, tensor] : []), SETITEMS, STOP]);
}

test('a pickled batch of 200,000 items is an SftError, not a stack overflow', () => {
  // {'a': [None] * 200000} built with one APPENDS, as pickle batches long lists.
  const file = path.join(tmp, 'appends.bin');
  const pkl = Buffer.concat([proto2, EMPTY_DICT, uni('a'), EMPTY_LIST, MARK, Buffer.alloc(200_000, NONE[0]), APPENDS, SETITEM, STOP]);
  writeStoredZip(file, [{ name: 'x/data.pkl', data: pkl }]);
  refusedBin(file, /"a" is a tuple\/list, not a tensor/);
});

test('a state-dict key set twice is refused: one of the two tensors would be lost', () => {
  const file = path.join(tmp, 'dup-key.bin');
  writeStoredZip(file, [{ name: 'x/data.pkl', data: oneTensorPickle(Buffer.from('w'), true) }, { name: 'x/data/0', data: Buffer.alloc(4) }]);
  refusedBin(file, /sets the dict key "w" twice; a pickler never writes that/);
});

test('a pickled name that is not UTF-8 is refused, not read with a replacement character', () => {
  const file = path.join(tmp, 'bad-name.bin');
  writeStoredZip(file, [{ name: 'x/data.pkl', data: oneTensorPickle(Buffer.from([0x77, 0xc0, 0xaf])) }, { name: 'x/data/0', data: Buffer.alloc(4) }]);
  refusedBin(file, /x\/data\.pkl\): a pickled string at byte \d+ is not valid UTF-8/);
});

test('a byteorder entry other than "little" or "big" is corrupt, and a huge one is not read', () => {
  const file = path.join(tmp, 'byteorder.bin');
  const entries = (byteorder: ZipInput): ZipInput[] => [{ name: 'x/data.pkl', data: oneTensorPickle(Buffer.from('w')) }, { ...byteorder, name: 'x/byteorder' }, { name: 'x/data/0', data: Buffer.alloc(4) }];
  writeStoredZip(file, entries({ name: '', data: Buffer.from('middle') }));
  refusedBin(file, /x\/byteorder says "middle", not "little" or "big"; the file is corrupt/);
  writeStoredZip(file, entries({ name: '', data: Buffer.from('big\n') }));
  refusedBin(file, /saved on a big-endian machine/);
  // 64 MiB of nothing (a hole in a sparse file): refused from its size, without reading it.
  writeStoredZip(file, entries({ name: '', hole: 64 * 2 ** 20 }));
  const before = process.memoryUsage().rss;
  refusedBin(file, /x\/byteorder is 67108864 bytes; it should hold the word "little"/);
  assert.ok(process.memoryUsage().rss - before < 32 * 2 ** 20, 'the entry was read');
});

test('zip entries named twice, or with a UTF-8 flag on bytes that are not UTF-8, are refused', () => {
  const file = path.join(tmp, 'dup-entry.bin');
  writeStoredZip(file, [{ name: 'x/data.pkl', data: oneTensorPickle(Buffer.from('w')) }, { name: 'x/data/0', data: Buffer.alloc(4) }, { name: 'x/data/0', data: Buffer.alloc(4, 1) }]);
  refusedBin(file, /zip entry "x\/data\/0" appears twice in the central directory/);
  const bad = path.join(tmp, 'bad-entry-name.bin');
  writeStoredZip(bad, [{ name: 'x/data.pkl', data: oneTensorPickle(Buffer.from('w')) }, { name: 'x/data/0', data: Buffer.alloc(4) }]);
  // Rename "x/data/0" in the central directory to "x/data/\xff" (same length) with the UTF-8 flag still set.
  const bytes = fs.readFileSync(bad);
  const at = bytes.lastIndexOf(Buffer.from('x/data/0'));
  bytes[at + 7] = 0xff;
  fs.writeFileSync(bad, bytes);
  refusedBin(bad, /zip central directory entry 1 has a name flagged UTF-8 that is not valid UTF-8/);
});

test('a folder where a .bin should be is named as such', () => {
  const d = path.join(tmp, 'folder.bin');
  fs.mkdirSync(d);
  refusedBin(d, /folder\.bin: is a folder, not a PyTorch checkpoint/);
  assert.throws(() => readZipDirectory(d), /folder\.bin: is a folder, not a zip archive/);
});

test('a ZIP64 field longer than the extra area of its entry is an SftError, not a read past the directory', () => {
  const file = path.join(tmp, 'zip64-extra.bin');
  writeStoredZip(file, [{ name: 'x/data.pkl', data: oneTensorPickle(Buffer.from('w')) }], { zip64: true });
  // The entry's extra area cut to 12 bytes (the field still says 24), and the directory with it, so
  // the compressed size the field promises would lie past the end of the directory.
  const bytes = fs.readFileSync(file);
  const central = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  bytes.writeUInt16LE(12, central + 30);
  const end64 = bytes.indexOf(Buffer.from([0x50, 0x4b, 0x06, 0x06]));
  bytes.writeBigUInt64LE(bytes.readBigUInt64LE(end64 + 40) - 16n, end64 + 40);
  fs.writeFileSync(file, bytes);
  assert.throws(() => readZipDirectory(file), (err: unknown) => {
    assert.ok(err instanceof Error && err.name === 'SftError', `got ${(err as Error).constructor.name}: ${(err as Error).message}`);
    assert.match(err.message, /zip64-extra\.bin: zip entry "x\/data\.pkl" has a ZIP64 field that runs past its entry; the file is corrupt/);
    return true;
  });
});
