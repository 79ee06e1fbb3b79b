// safetensors files (SPEC.md §3): an 8-byte little-endian header length N, N bytes of JSON
// `{name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__"?: {string: string}}`, then the
// data buffer the offsets point into. Checkpoints can be many GB, so reading parses only the header;
// the engine reads tensor bytes itself from the absolute offsets.
import fs from 'node:fs';
import { SftError } from '../errors.js';
import { JsonSyntaxError, clip, parseJsonObject, showJson } from '../config/json.js';
import { bf16ArrayToF32, f16ArrayToF32 } from './float16.js';
import { describeBadByte, strictUtf8 } from './utf8.js';
import { withPath, writeAll } from './atomic.js';

/** Bytes per element of every dtype the format defines. */
export const DTYPE_SIZES = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  F64: 8, I64: 8, U64: 8,
} as const;

export type SafetensorsDtype = keyof typeof DTYPE_SIZES;

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte range [begin, end) relative to the start of the data buffer (add dataStart for a file offset). */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  headerLen: number;
  /** File offset of the data buffer: 8 + headerLen. */
  dataStart: number;
  /** In the header's order. */
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

// The reference implementation refuses headers above 100 MB; a bigger one means a corrupt file.
const MAX_HEADER_LEN = 100_000_000;

export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = openForRead(file);
  try {
    const fileSize = fs.fstatSync(fd).size;
    if (fileSize < 8) throw new SftError(`${file}: not a safetensors file (${fileSize} bytes, shorter than the 8-byte header length).`);
    const lenBuf = Buffer.alloc(8);
    readFully(file, fd, lenBuf, 0);
    const len = lenBuf.readBigUInt64LE(0);
    if (len > BigInt(MAX_HEADER_LEN)) {
      throw new SftError(`${file}: safetensors header length ${len} is over the 100 MB limit; the file is corrupt or not safetensors.`);
    }
    const headerLen = Number(len);
    const dataStart = 8 + headerLen;
    if (dataStart > fileSize) {
      throw new SftError(`${file}: safetensors header length ${headerLen} runs past the end of the file (${fileSize} bytes); the file is truncated.`);
    }
    const headerBuf = Buffer.alloc(headerLen);
    readFully(file, fd, headerBuf, 8);
    const parsed = parseHeaderJson(file, decodeHeader(file, headerBuf));
    const { tensors, metadata } = validateHeader(file, parsed, fileSize - dataStart);
    return { headerLen, dataStart, tensors, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

// The format says UTF-8; decoding loosely would turn a damaged name into one with U+FFFD in it.
function decodeHeader(file: string, bytes: Buffer): string {
  const decoded = strictUtf8(bytes);
  if ('text' in decoded) return decoded.text;
  throw new SftError(`${file}: the safetensors header is not valid UTF-8 (${describeBadByte(bytes, decoded.badByte, 'header byte')}); the file is corrupt.`);
}

// The strict parser, not JSON.parse: it refuses a name listed twice (JSON.parse keeps the last, losing
// the first) and numbers beyond the float range, and it bounds nesting.
function parseHeaderJson(file: string, text: string): Record<string, unknown> {
  if (!text.trimStart().startsWith('{')) throw new SftError(`${file}: the safetensors header must be a JSON object; the file is corrupt or not safetensors.`);
  try {
    return parseJsonObject(text).value;
  } catch (err) {
    if (!(err instanceof JsonSyntaxError)) throw err;
    const where = err.pos.line === 1 ? `at character ${err.pos.col}` : `line ${err.pos.line}, column ${err.pos.col}`;
    const duplicate = /^duplicate key (".*")$/.exec(err.message);
    if (duplicate) throw new SftError(`${file}: tensor ${duplicate[1]} is listed twice in the header (${where}); the file is corrupt.`);
    if (!err.invalidJson) throw new SftError(`${file}: safetensors header ${where}: ${err.message}; the file is corrupt.`);
    throw new SftError(`${file}: the safetensors header is not valid JSON (${where}: ${err.message}); the file is corrupt.`);
  }
}

function validateHeader(file: string, header: Record<string, unknown>, dataLen: number): Pick<SafetensorsHeader, 'tensors' | 'metadata'> {
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) {
        throw new SftError(`${file}: __metadata__ must be an object of strings.`);
      }
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') throw new SftError(`${file}: __metadata__.${clip(k, 60)} must be a string.`);
        // defineProperty: a key named "__proto__" must stay a key, not replace the prototype.
        Object.defineProperty(metadata, k, { value: v, enumerable: true, writable: true, configurable: true });
      }
      continue;
    }
    tensors.set(name, validateEntry(file, name, value));
  }
  // The ranges must tile the data buffer exactly: no gaps, no overlaps, nothing left over.
  const byBegin = [...tensors.entries()].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let cursor = 0;
  for (const [name, t] of byBegin) {
    if (t.begin !== cursor) {
      const what = t.begin > cursor ? `leaves a gap at byte ${cursor}` : `overlaps the previous tensor (which ends at byte ${cursor})`;
      throw new SftError(`${file}: tensor ${showJson(name, 100)} starts at data byte ${t.begin} and ${what}; the file is corrupt.`);
    }
    cursor = t.end;
  }
  if (cursor !== dataLen) {
    throw new SftError(`${file}: tensors cover ${cursor} bytes but the data buffer holds ${dataLen}; the file is ${cursor > dataLen ? 'truncated' : 'corrupt'}.`);
  }
  return { tensors, metadata };
}

function validateEntry(file: string, name: string, value: unknown): TensorInfo {
  const where = `${file}: tensor ${showJson(name, 100)}`;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new SftError(`${where} must be an object with dtype, shape and data_offsets.`);
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  // Object.hasOwn: "toString" and "constructor" are in every object, not dtypes.
  if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_SIZES, dtype)) {
    throw new SftError(`${where} has unknown dtype ${showJson(dtype, 40)}; known: ${Object.keys(DTYPE_SIZES).join(' ')}.`);
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    throw new SftError(`${where} has shape ${showJson(shape)}; expected an array of non-negative integers.`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[1] < offsets[0]) {
    throw new SftError(`${where} has data_offsets ${showJson(offsets)}; expected [begin, end] with begin <= end.`);
  }
  const info: TensorInfo = { dtype: dtype as SafetensorsDtype, shape: shape as number[], begin: offsets[0], end: offsets[1] };
  const bytes = numel(info.shape) * DTYPE_SIZES[info.dtype];
  if (bytes !== info.end - info.begin) {
    const needs = Number.isSafeInteger(bytes) ? `${bytes} bytes` : 'more bytes than any file holds';
    throw new SftError(`${where}: ${info.dtype}${showJson(info.shape)} needs ${needs} but data_offsets span ${info.end - info.begin}; the file is corrupt.`);
  }
  return info;
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export type WritableDtype = 'F32' | 'F16' | 'BF16' | 'I32' | 'U8';

export interface TensorToWrite {
  name: string;
  dtype: WritableDtype;
  shape: number[];
  /** F32: Float32Array; F16/BF16: Uint16Array of bits; I32: Int32Array; U8: Uint8Array; any dtype: raw little-endian bytes. */
  data: Float32Array | Uint16Array | Int32Array | Uint8Array | Buffer;
}

/** Writes tensors in the given order, offsets ascending, header padded with spaces to 8 bytes. */
export function writeSafetensors(file: string, tensors: TensorToWrite[], metadata?: Record<string, string>): void {
  // Null prototype: a tensor may be named anything, "__proto__" and "constructor" included.
  const header: Record<string, unknown> = Object.create(null);
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.hasOwn(header, t.name)) throw new SftError(`writing ${file}: duplicate or reserved tensor name "${t.name}".`);
    const bytes = tensorBytes(file, t);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    chunks.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  const jsonLen = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - (jsonLen % 8)) % 8);
  const headerBuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(headerBuf.length));
  try {
    const fd = fs.openSync(file, 'w');
    try {
      writeAll(fd, lenBuf);
      writeAll(fd, headerBuf);
      for (const c of chunks) writeAll(fd, c);
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    throw withPath(file, err);  // write(2) errors name no file; the caller's message will
  }
}

function tensorBytes(file: string, t: TensorToWrite): Uint8Array {
  const expected = numel(t.shape) * DTYPE_SIZES[t.dtype];
  const okType =
    Buffer.isBuffer(t.data) ||
    (t.dtype === 'F32' && t.data instanceof Float32Array) ||
    ((t.dtype === 'F16' || t.dtype === 'BF16') && t.data instanceof Uint16Array) ||
    (t.dtype === 'I32' && t.data instanceof Int32Array) ||
    (t.dtype === 'U8' && t.data instanceof Uint8Array);
  if (!okType) throw new SftError(`writing ${file}: tensor "${t.name}" is ${t.dtype} but its data is a ${t.data.constructor.name}.`);
  if (t.data.byteLength !== expected) {
    throw new SftError(`writing ${file}: tensor "${t.name}" ${t.dtype}${JSON.stringify(t.shape)} needs ${expected} bytes, got ${t.data.byteLength}.`);
  }
  // Typed arrays are stored in the platform's byte order, little-endian on every platform Node supports.
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** Reads one tensor's raw bytes (any dtype). */
export function readTensorBytes(file: string, header: SafetensorsHeader, name: string): Uint8Array {
  const info = header.tensors.get(name);
  if (!info) throw new SftError(`${file}: no tensor named "${name}".`);
  const bytes = new Uint8Array(info.end - info.begin);
  const fd = openForRead(file);
  try {
    readFully(file, fd, bytes, header.dataStart + info.begin);
  } finally {
    fs.closeSync(fd);
  }
  return bytes;
}

/** Reads one tensor as float32 (F32, F16 or BF16 on disk). Meant for small tensors such as adapters. */
export function readTensorF32(file: string, header: SafetensorsHeader, name: string): Float32Array {
  const info = header.tensors.get(name);
  if (!info) throw new SftError(`${file}: no tensor named "${name}".`);
  if (info.dtype !== 'F32' && info.dtype !== 'F16' && info.dtype !== 'BF16') {
    throw new SftError(`${file}: tensor "${name}" is ${info.dtype}; expected F32, F16 or BF16.`);
  }
  // A fresh Uint8Array starts at offset 0 of its own buffer, so typed views on it are aligned.
  const bytes = new Uint8Array(info.end - info.begin);
  const fd = openForRead(file);
  try {
    readFully(file, fd, bytes, header.dataStart + info.begin);
  } finally {
    fs.closeSync(fd);
  }
  switch (info.dtype) {
    case 'F32': return new Float32Array(bytes.buffer);
    case 'F16': return f16ArrayToF32(new Uint16Array(bytes.buffer));
    case 'BF16': return bf16ArrayToF32(new Uint16Array(bytes.buffer));
  }
}

function readFully(file: string, fd: number, buf: Uint8Array, position: number): void {
  let done = 0;
  while (done < buf.byteLength) {
    const n = fs.readSync(fd, buf, done, buf.byteLength - done, position + done);
    if (n === 0) throw new SftError(`${file}: unexpected end of file at byte ${position + done}; the file is truncated.`);
    done += n;
  }
}

function openForRead(file: string): number {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new SftError(`${file}: file not found.`);
    throw new SftError(`${file}: cannot open (${code ?? (err as Error).message}).`);
  }
  // A folder opens fine on Linux; only reading it fails, with a bare EISDIR.
  if (!fs.fstatSync(fd).isFile()) {
    const isDir = fs.fstatSync(fd).isDirectory();
    fs.closeSync(fd);
    throw new SftError(`${file}: ${isDir ? 'is a folder' : 'is not a regular file'}, not a safetensors file.`);
  }
  return fd;
}
