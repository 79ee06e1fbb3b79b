// TensorBoard event files, written without TensorFlow: what torch.utils.tensorboard.SummaryWriter
// writes for add_scalar, byte for byte (test/log/tensorboard.test.ts compares against its output,
// and scripts/reference/read_tfevents.py reads ours with TensorBoard's own reader).
//
// A file is a sequence of TFRecords:
//   uint64 LE  length of data
//   uint32 LE  masked CRC32C of those 8 length bytes
//   bytes      data: one serialized tensorboard.Event protobuf
//   uint32 LE  masked CRC32C of data
// The Event messages used here (tensorboard/compat/proto/event.proto, summary.proto):
//   Event          { double wall_time = 1; int64 step = 2; string file_version = 3;
//                    Summary summary = 5; SourceMetadata source_metadata = 10; }
//   Summary        { repeated Value value = 1; }
//   Summary.Value  { string tag = 1; float simple_value = 2; }
//   SourceMetadata { string writer = 1; }
// The first record of a file is Event{wall_time, file_version: "brain.Event:2"}: readers check it.
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const FILE_VERSION = 'brain.Event:2';

// ---- CRC32C (Castagnoli), as TFRecord framing needs it ------------------------------------------

/** Table for the reflected Castagnoli polynomial 0x1EDC6F41 (reversed: 0x82F63B78). */
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC32C of `bytes` (crc32c("123456789") = 0xE3069283). */
export function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 bits and add a constant, so that a CRC of data that
 *  itself holds CRCs stays well distributed. */
export function maskedCrc32c(bytes: Uint8Array): number {
  const crc = crc32c(bytes);
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord around `data`. */
export function tfRecord(data: Uint8Array): Buffer {
  const out = Buffer.alloc(8 + 4 + data.length + 4);
  out.writeBigUInt64LE(BigInt(data.length), 0);
  out.writeUInt32LE(maskedCrc32c(out.subarray(0, 8)), 8);
  out.set(data, 12);
  out.writeUInt32LE(maskedCrc32c(data), 12 + data.length);
  return out;
}

// ---- protobuf encoding (the few wire types the Event messages use) ------------------------------

const VARINT = 0, FIXED64 = 1, LENGTH_DELIMITED = 2, FIXED32 = 5;

class ProtoWriter {
  private parts: Uint8Array[] = [];

  private key(field: number, wireType: number): void {
    this.varint(BigInt((field << 3) | wireType));
  }

  /** int64 as protobuf writes it: a negative number is its 64-bit two's complement (10 bytes). */
  private varint(v: bigint): void {
    let u = BigInt.asUintN(64, v);
    const bytes: number[] = [];
    do {
      const low = Number(u & 0x7fn);
      u >>= 7n;
      bytes.push(u ? low | 0x80 : low);
    } while (u);
    this.parts.push(Uint8Array.from(bytes));
  }

  int64(field: number, v: number): this {
    this.key(field, VARINT);
    this.varint(BigInt(v));
    return this;
  }
  double(field: number, v: number): this {
    this.key(field, FIXED64);
    const b = Buffer.alloc(8);
    b.writeDoubleLE(v);
    this.parts.push(b);
    return this;
  }
  float(field: number, v: number): this {
    this.key(field, FIXED32);
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.parts.push(b);
    return this;
  }
  bytes(field: number, v: Uint8Array): this {
    this.key(field, LENGTH_DELIMITED);
    this.varint(BigInt(v.length));
    this.parts.push(v);
    return this;
  }
  string(field: number, v: string): this {
    return this.bytes(field, Buffer.from(v, 'utf8'));
  }
  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export interface EventFields {
  wallTime: number;
  step?: number;
  fileVersion?: string;
  /** Scalars of one Summary, written as simple_value (float32), as torch's add_scalar does. */
  scalars?: { tag: string; value: number }[];
  /** SourceMetadata.writer: which program wrote the file. */
  sourceWriter?: string;
}

/** Serializes one Event. Fields are written in field-number order and proto3 defaults (a zero
 *  wall_time or step) are left out, as protobuf's own serializer does; simple_value sits in a oneof,
 *  so it is written even when 0. */
export function encodeEvent(e: EventFields): Buffer {
  const w = new ProtoWriter();
  if (e.wallTime !== 0) w.double(1, e.wallTime);
  if (e.step) w.int64(2, e.step);
  if (e.fileVersion !== undefined) w.string(3, e.fileVersion);
  if (e.scalars !== undefined) {
    const summary = new ProtoWriter();
    for (const s of e.scalars) summary.bytes(1, new ProtoWriter().string(1, s.tag).float(2, s.value).finish());
    w.bytes(5, summary.finish());
  }
  if (e.sourceWriter !== undefined) w.bytes(10, new ProtoWriter().string(1, e.sourceWriter).finish());
  return w.finish();
}

// ---- the writer ------------------------------------------------------------------------------

/** HF's default logging_dir below output_dir: runs/<Mon><DD>_<HH>-<MM>-<SS>_<host> (local time),
 *  as transformers' default_logdir() names it. */
export function defaultLoggingDir(outputDir: string, now = new Date(), host = hostname()): string {
  const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p2 = (n: number) => String(n).padStart(2, '0');
  const stamp = `${MONTHS[now.getMonth()]}${p2(now.getDate())}_${p2(now.getHours())}-${p2(now.getMinutes())}-${p2(now.getSeconds())}`;
  return join(outputDir, 'runs', `${stamp}_${host}`);
}

export interface TensorBoardWriterOptions {
  /** Seconds since the epoch, for the file name and the first record (tests pin it). */
  now?: () => number;
}

/** Appends scalars to a new events.out.tfevents.<secs>.<host>.<pid>.<n> file in `dir`. Scalars are
 *  buffered until flush(); each flush is one write, so a crash loses at most the unflushed step. */
export class TensorBoardWriter {
  private static files = 0;
  readonly path: string;
  private fd: number | undefined;
  private pending: Buffer[] = [];
  private readonly now: () => number;

  constructor(readonly dir: string, opts: TensorBoardWriterOptions = {}) {
    this.now = opts.now ?? (() => Date.now() / 1000);
    const t = this.now();
    mkdirSync(dir, { recursive: true });
    this.path = join(dir, `events.out.tfevents.${String(Math.floor(t)).padStart(10, '0')}.${hostname()}.${process.pid}.${TensorBoardWriter.files++}`);
    this.fd = openSync(this.path, 'wx');
    this.pending.push(tfRecord(encodeEvent({ wallTime: t, fileVersion: FILE_VERSION, sourceWriter: 'sft' })));
    this.flush();
  }

  /** One scalar at `step` (an integer); `wallTime` in seconds since the epoch, default now. */
  scalar(tag: string, value: number, step: number, wallTime = this.now()): void {
    if (this.fd === undefined) throw new Error(`TensorBoardWriter: ${this.path} is already closed`);
    if (!Number.isSafeInteger(step)) throw new Error(`TensorBoardWriter: step must be an integer, got ${step}`);
    this.pending.push(tfRecord(encodeEvent({ wallTime, step, scalars: [{ tag, value }] })));
  }

  flush(): void {
    if (this.fd === undefined || this.pending.length === 0) return;
    const bytes = Buffer.concat(this.pending);
    this.pending = [];
    for (let done = 0; done < bytes.length; ) done += writeSync(this.fd, bytes, done, bytes.length - done);
  }

  close(): void {
    if (this.fd === undefined) return;
    this.flush();
    closeSync(this.fd);
    this.fd = undefined;
  }
}
