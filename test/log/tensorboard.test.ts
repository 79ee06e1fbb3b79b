// The TensorBoard writer against torch.utils.tensorboard.SummaryWriter's own output
// (test/fixtures/tensorboard/torch.tfevents, made by scripts/reference/read_tfevents.py) and
// against published CRC32C test vectors. The reader below is written here from the format's
// description, independently of src/log/tensorboard.ts: framing, both CRCs, protobuf fields.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32c, maskedCrc32c, defaultLoggingDir, TensorBoardWriter, FILE_VERSION } from '../../src/log/tensorboard.js';
import { packageRoot } from '../../src/native/binding.js';

const FIXTURES = join(packageRoot, 'test', 'fixtures', 'tensorboard');

// ---- an independent reader ---------------------------------------------------------------------

// Bitwise CRC32C (no table), so the reader shares no code with the writer.
function refCrc32c(b: Uint8Array): number {
  let crc = ~0 >>> 0;
  for (const byte of b) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return ~crc >>> 0;
}
const refMask = (c: number) => ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;

interface Field { field: number; wire: number; value: bigint | Buffer; at: number }

function parseProto(b: Buffer): Field[] {
  const out: Field[] = [];
  let i = 0;
  const varint = (): bigint => {
    let v = 0n, shift = 0n;
    for (;;) {
      const byte = b[i++];
      assert.ok(byte !== undefined, 'varint runs past the end');
      v |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return v;
      shift += 7n;
    }
  };
  while (i < b.length) {
    const at = i;
    const key = Number(varint());
    const field = key >> 3, wire = key & 7;
    if (wire === 0) out.push({ field, wire, value: varint(), at });
    else if (wire === 1) { out.push({ field, wire, value: b.subarray(i, i + 8), at }); i += 8; }
    else if (wire === 5) { out.push({ field, wire, value: b.subarray(i, i + 4), at }); i += 4; }
    else if (wire === 2) { const n = Number(varint()); out.push({ field, wire, value: b.subarray(i, i + n), at }); i += n; }
    else assert.fail(`unexpected wire type ${wire}`);
  }
  assert.equal(i, b.length, 'protobuf message overruns its record');
  return out;
}

interface Event { wallTime: number; step: number; fileVersion?: string; writer?: string; values: { tag: string; simpleValue: number }[]; fieldOrder: number[] }

function decodeEvent(data: Buffer): Event {
  const ev: Event = { wallTime: 0, step: 0, values: [], fieldOrder: [] };
  for (const f of parseProto(data)) {
    ev.fieldOrder.push(f.field);
    const buf = f.value as Buffer;
    if (f.field === 1 && f.wire === 1) ev.wallTime = buf.readDoubleLE(0);
    else if (f.field === 2 && f.wire === 0) ev.step = Number(BigInt.asIntN(64, f.value as bigint));
    else if (f.field === 3 && f.wire === 2) ev.fileVersion = buf.toString('utf8');
    else if (f.field === 10 && f.wire === 2) ev.writer = parseProto(buf).find((g) => g.field === 1)?.value.toString();
    else if (f.field === 5 && f.wire === 2) {
      for (const v of parseProto(buf)) {
        assert.equal(v.field, 1, 'Summary holds only values');
        const fields = parseProto(v.value as Buffer);
        const tag = fields.find((g) => g.field === 1 && g.wire === 2);
        const simple = fields.find((g) => g.field === 2 && g.wire === 5);
        assert.ok(tag && simple, 'Summary.Value has a tag and a simple_value');
        ev.values.push({ tag: (tag.value as Buffer).toString('utf8'), simpleValue: (simple.value as Buffer).readFloatLE(0) });
      }
    } else assert.fail(`unexpected Event field ${f.field} (wire ${f.wire})`);
  }
  return ev;
}

/** Splits a file into records, checking both CRCs of each; returns each record's data. */
function readRecords(file: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  while (i < file.length) {
    assert.ok(i + 12 <= file.length, `truncated header at byte ${i}`);
    const len = Number(file.readBigUInt64LE(i));
    assert.equal(file.readUInt32LE(i + 8), refMask(refCrc32c(file.subarray(i, i + 8))), `length CRC at byte ${i}`);
    const data = file.subarray(i + 12, i + 12 + len);
    assert.ok(i + 12 + len + 4 <= file.length, `truncated record at byte ${i}`);
    assert.equal(file.readUInt32LE(i + 12 + len), refMask(refCrc32c(data)), `data CRC at byte ${i}`);
    out.push(data);
    i += 12 + len + 4;
  }
  return out;
}

// ---- tests ---------------------------------------------------------------------------------------

interface Expected { scalars: { tag: string; step: number; value: number; wall_time: number }[] }
const expected = JSON.parse(readFileSync(join(FIXTURES, 'expected.json'), 'utf8')) as Expected;
const torchFile = readFileSync(join(FIXTURES, 'torch.tfevents'));

test('crc32c matches the published test vectors (RFC 3720 B.4 and the "123456789" check value)', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
  assert.equal(crc32c(new Uint8Array(0)), 0);
  // The masked CRC of torch's first record header, as it sits in the fixture.
  assert.equal(maskedCrc32c(torchFile.subarray(0, 8)), torchFile.readUInt32LE(8));
});

test("the reader decodes torch's SummaryWriter file into the scalars it was given", () => {
  const events = readRecords(torchFile).map(decodeEvent);
  assert.equal(events.length, 1 + expected.scalars.length);
  assert.equal(events[0].fileVersion, FILE_VERSION);
  assert.ok(events[0].wallTime > 1.7e9);
  expected.scalars.forEach((s, i) => {
    const ev = events[i + 1];
    assert.equal(ev.step, s.step);
    assert.equal(ev.wallTime, s.wall_time);
    assert.deepEqual(ev.values, [{ tag: s.tag, simpleValue: Math.fround(s.value) }]);
  });
});

test("the writer's file is torch's, byte for byte, apart from the writer's name in the first record", () => {
  const dir = mkdtempSync(join(tmpdir(), 'sft-tb-'));
  const torchEvents = readRecords(torchFile);
  const t0 = decodeEvent(torchEvents[0]).wallTime;
  const w = new TensorBoardWriter(dir, { now: () => t0 });
  for (const s of expected.scalars) w.scalar(s.tag, s.value, s.step, s.wall_time);
  w.close();
  w.close(); // harmless

  const files = readdirSync(dir);
  assert.equal(files.length, 1);
  assert.match(files[0], new RegExp(`^events\\.out\\.tfevents\\.${Math.floor(t0)}\\.${hostname().replace(/\./g, '\\.')}\\.${process.pid}\\.\\d+$`));
  const ours = readRecords(readFileSync(join(dir, files[0])));
  assert.equal(ours.length, torchEvents.length);
  const first = decodeEvent(ours[0]), torchFirst = decodeEvent(torchEvents[0]);
  assert.deepEqual(first.fieldOrder, torchFirst.fieldOrder); // wall_time, file_version, source_metadata
  assert.equal(first.wallTime, torchFirst.wallTime);
  assert.equal(first.fileVersion, FILE_VERSION);
  assert.equal(torchFirst.writer, 'tensorboard.summary.writer.event_file_writer');
  assert.equal(first.writer, 'sft');
  for (let i = 1; i < ours.length; i++) assert.deepEqual(ours[i], torchEvents[i], `record ${i} differs from torch's`);
});

test('records reach the file at flush(); a corrupted byte is caught by the CRC', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sft-tb-'));
  const w = new TensorBoardWriter(dir);
  const size = () => readFileSync(w.path).length;
  const afterHeader = size();
  assert.ok(afterHeader > 0, 'the file_version record is written at once');
  w.scalar('train/loss', 1.5, 10);
  assert.equal(size(), afterHeader);
  w.flush();
  assert.ok(size() > afterHeader);
  w.scalar('train/loss', 1.25, -3); // a negative step is a 10-byte varint
  w.close();
  assert.throws(() => w.scalar('train/loss', 1, 11), /already closed/);
  assert.throws(() => new TensorBoardWriter(dir).scalar('x', 1, 1.5), /integer/);

  const bytes = readFileSync(w.path);
  const events = readRecords(bytes).map(decodeEvent);
  assert.deepEqual(events.slice(1).map((e) => [e.step, e.values]), [
    [10, [{ tag: 'train/loss', simpleValue: 1.5 }]],
    [-3, [{ tag: 'train/loss', simpleValue: 1.25 }]],
  ]);
  const bad = Buffer.from(bytes);
  bad[bad.length - 6] ^= 0x01; // inside the last record's data
  assert.throws(() => readRecords(bad), /data CRC/);
});

test("the default logging_dir is HF's output_dir/runs/<Mon><DD>_<HH>-<MM>-<SS>_<host>", () => {
  assert.equal(defaultLoggingDir('out', new Date(2024, 10, 5, 9, 7, 3), 'box'), join('out', 'runs', 'Nov05_09-07-03_box'));
});
