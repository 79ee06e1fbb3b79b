// Seeded damage for the files users hand us: safetensors, PyTorch .bin (zip + pickle), JSON (config.json,
// shard indexes) and CSV. Each mutation knows what it did, so the runner (files-runner.ts) can say
// what must follow: `mustRefuse` marks damage that no reader may accept (a duplicate name, a name
// that is not UTF-8, a number that is not finite), because accepting it would lose or forge data.
import zlib from 'node:zlib';
import type { Rand } from './corrupt.js';

export interface Mutated {
  bytes: Buffer;
  /** What was done, for the failure report. */
  what: string;
  /** Why any reader must refuse these bytes; absent when a valid result is possible. */
  mustRefuse?: string;
}

// ---- bytes ----------------------------------------------------------------------------------------------

/** Not UTF-8: a stray continuation byte, an overlong form, a surrogate, past U+10FFFF, a cut sequence. */
export const BAD_UTF8: number[][] = [[0xff], [0xfe], [0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0xc3]];
const AWKWARD_BYTES: number[][] = [...BAD_UTF8, [0x00], [0x0d], [0x0a], [0x22], [0x5c], [0x2c], [0x7b], [0x7d], [0x5b], [0x5d], [0x3a], [0xef, 0xbb, 0xbf]];

/** One blind change anywhere in `b`, or within [from, to) when given (the structural part of a file). */
export function mutateBytes(b: Buffer, r: Rand, from = 0, to = b.length): Mutated {
  const at = from + r.int(Math.max(1, to - from + 1));
  switch (r.int(7)) {
    case 0: {
      const c = Buffer.from(b);
      for (let k = 1 + r.int(4); k > 0 && c.length; k--) c[Math.min(c.length - 1, from + r.int(Math.max(1, to - from)))] ^= 1 << r.int(8);
      return { bytes: c, what: 'bit flips' };
    }
    case 1:
      return { bytes: b.subarray(0, at), what: `truncated at ${at}` };
    case 2:
      return { bytes: Buffer.concat([b.subarray(0, at), Buffer.from(r.pick(AWKWARD_BYTES)), b.subarray(at)]), what: `bytes inserted at ${at}` };
    case 3:
      return { bytes: Buffer.concat([b.subarray(0, at), Buffer.from(r.pick(AWKWARD_BYTES)), b.subarray(at + 1)]), what: `byte replaced at ${at}` };
    case 4: {
      const end = Math.min(b.length, at + 1 + r.int(64));
      return { bytes: Buffer.concat([b.subarray(0, end), b.subarray(at, end), b.subarray(end)]), what: `bytes ${at}..${end} duplicated` };
    }
    case 5: {
      const end = Math.min(b.length, at + 1 + r.int(64));
      return { bytes: Buffer.concat([b.subarray(0, at), b.subarray(end)]), what: `bytes ${at}..${end} removed` };
    }
    default:
      return { bytes: Buffer.concat([b, Buffer.from(r.pick(['\0', ' ', 'x', 'PK\x05\x06', '\n\n']))]), what: 'bytes appended' };
  }
}

/** Integers that break length and offset arithmetic. */
export function edgeNumber(r: Rand, near: number): number {
  return r.pick([0, 1, 2, 7, 8, 31, 0x7f, 0xff, 0xffff, 0x7fffffff, 0xffffffff, near - 1, near + 1, near * 2, Math.floor(near / 2), r.int(1 << 16)]);
}

// ---- JSON text --------------------------------------------------------------------------------------------

/** Raw value texts; the second element says whether it is a non-finite number (must be refused). */
export const RAW_VALUES: [string, boolean][] = [
  ['null', false], ['true', false], ['0', false], ['-1', false], ['1.5', false], ['4096.0', false], ['9007199254740993', false],
  ['1e308', false], ['1e-400', false], ['"x"', false], ['""', false], ['[]', false], ['{}', false], ['[1,2]', false],
  ['"\\ud800"', false], ['"😀"', false], ['1e400', true], ['-1e400', true], ['Infinity', true], ['-Infinity', true], ['NaN', true],
  ['01', false], ['.5', false], ['+1', false], ['True', false], ['None', false], ["'x'", false],
];

export function deepJson(r: Rand): string {
  const depth = r.pick([50, 101, 3000, 100_000]);
  return r.chance(0.5) ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
}

/** Serialises `obj` with one slot (a key of it, or of an object nested in it) replaced by raw text. */
export function withRawValue(obj: Record<string, unknown>, key: string[], raw: string, indent?: number): string {
  const copy = JSON.parse(JSON.stringify(obj)) as Record<string, unknown>;
  let node = copy;
  for (const k of key.slice(0, -1)) {
    if (node[k] === null || typeof node[k] !== 'object') node[k] = {};
    node = node[k] as Record<string, unknown>;
  }
  // defineProperty: a key named "__proto__" must become a plain property, as a JSON parser makes it.
  Object.defineProperty(node, key[key.length - 1], { value: '@@RAW@@', enumerable: true, writable: true, configurable: true });
  return JSON.stringify(copy, null, indent).replace('"@@RAW@@"', () => raw);
}

/** `"key": value` inserted again right after the object's opening brace: a duplicate key. */
export function duplicateKey(text: string, key: string, raw: string): string {
  const at = text.indexOf('{');
  return text.slice(0, at + 1) + `${JSON.stringify(key)}: ${raw},` + text.slice(at + 1);
}

// ---- CSV ---------------------------------------------------------------------------------------------------

/** One CSV-shaped change: quotes, BOM, line ends, columns, huge fields, blank lines, non-UTF-8. */
export function mutateCsv(text: string, r: Rand): Mutated {
  const lines = text.split('\n');
  const li = r.int(lines.length);
  const at = r.int(text.length + 1);
  const enc = (s: string, what: string, mustRefuse?: string): Mutated => ({ bytes: Buffer.from(s), what, mustRefuse });
  switch (r.int(14)) {
    case 0: return enc(text.slice(0, at) + '"' + text.slice(at), `a quote inserted at ${at}`);
    case 1: {
      const q = text.indexOf('"', at);
      return q < 0 ? enc(text, 'unchanged') : enc(text.slice(0, q) + text.slice(q + 1), `the quote at ${q} removed`);
    }
    case 2: return enc('\ufeff' + (r.chance(0.3) ? '\ufeff' : '') + text, 'BOM');
    case 3: return enc(text.replace(/\r?\n/g, '\r\n'), 'CRLF');
    case 4: return enc(text.replace(/\r?\n/g, '\r'), 'CR only');
    case 5: { // a column removed from one line (the header, or a row)
      const cells = lines[li].split(',');
      cells.splice(r.int(cells.length), 1);
      lines[li] = cells.join(',');
      return enc(lines.join('\n'), `a column removed on line ${li + 1}`);
    }
    case 6: lines[li] += ',extra'; return enc(lines.join('\n'), `a column added on line ${li + 1}`);
    case 7: return enc(text.slice(0, at) + '"' + 'x'.repeat(r.pick([10_000, 1_000_000])) + '"' + text.slice(at), 'a huge quoted field');
    case 8: return enc(text.slice(0, at) + 'y'.repeat(r.pick([10_000, 1_000_000])) + text.slice(at), 'a huge unquoted run');
    case 9: lines.splice(li, 0, '', r.chance(0.5) ? ' ' : ''); return enc(lines.join('\n'), 'blank lines');
    case 10: { // a header name changed
      const cells = lines[0].split(',');
      cells[r.int(cells.length)] = r.pick(['', 'Question', ' answer ', 'E', 'id', 'question']);
      lines[0] = cells.join(',');
      return enc(lines.join('\n'), 'header renamed');
    }
    case 11: {
      const b = Buffer.from(text);
      const p = r.int(b.length + 1);
      return { bytes: Buffer.concat([b.subarray(0, p), Buffer.from(r.pick(BAD_UTF8)), b.subarray(p)]), what: `non-UTF-8 at byte ${p}`, mustRefuse: 'not UTF-8' };
    }
    case 12: return enc(r.pick(['', '\ufeff', '\n\n', 'id,question,A,B,C,D,answer\n', '"', '"""']), 'degenerate file');
    default: return mutateBytes(Buffer.from(text), r);
  }
}

// ---- zip (stored entries, as torch.save writes them) ---------------------------------------------------------

export interface ZipIn {
  name: string | Buffer;
  data: Buffer;
  /** Compression method written in the headers (the data stays as given). */
  method?: number;
  flags?: number;
}

/** Where each field lies in a zip built by buildZip, for field-level damage. */
export interface ZipLayout {
  /** [offset, byte width, name] of every header field worth damaging. */
  fields: [number, 2 | 4 | 8, string][];
  cdStart: number;
  /** File offset of each entry's data, in entry order. */
  dataStarts: number[];
}

/** A zip of stored entries per APPNOTE, 64-byte aligned data as torch writes, optionally with ZIP64 records. */
export function buildZip(entries: ZipIn[], zip64: boolean): { bytes: Buffer; layout: ZipLayout } {
  const parts: Buffer[] = [];
  const fields: ZipLayout['fields'] = [];
  const central: Buffer[] = [];
  const dataStarts: number[] = [];
  let pos = 0;
  const put = (b: Buffer) => {
    parts.push(b);
    pos += b.length;
  };
  const sat = (v: number, max: number) => (zip64 ? max : v);
  const centralFields: [number, 2 | 4 | 8, string][] = [];
  let cdPos = 0;
  for (const e of entries) {
    const name = typeof e.name === 'string' ? Buffer.from(e.name, 'utf8') : e.name;
    const offset = pos;
    const pad = (64 - ((offset + 30 + name.length + 4) % 64)) % 64;
    const localExtra = Buffer.alloc(4 + pad);
    localExtra.writeUInt16LE(0x5346, 0); // torch's padding field id ("FS")
    localExtra.writeUInt16LE(pad, 2);
    const h = Buffer.alloc(30);
    h.writeUInt32LE(0x04034b50, 0);
    h.writeUInt16LE(45, 4);
    h.writeUInt16LE(e.flags ?? 0x800, 6);
    h.writeUInt16LE(e.method ?? 0, 8);
    h.writeUInt32LE(zlib.crc32(e.data), 14);
    h.writeUInt32LE(e.data.length, 18);
    h.writeUInt32LE(e.data.length, 22);
    h.writeUInt16LE(name.length, 26);
    h.writeUInt16LE(localExtra.length, 28);
    fields.push([offset + 26, 2, 'local name length'], [offset + 28, 2, 'local extra length'], [offset + 22, 4, 'local size']);
    dataStarts.push(offset + 30 + name.length + localExtra.length);
    put(Buffer.concat([h, name, localExtra, e.data]));

    const extra = zip64 ? Buffer.alloc(28) : Buffer.alloc(0);
    if (zip64) {
      extra.writeUInt16LE(1, 0);
      extra.writeUInt16LE(24, 2);
      extra.writeBigUInt64LE(BigInt(e.data.length), 4);
      extra.writeBigUInt64LE(BigInt(e.data.length), 12);
      extra.writeBigUInt64LE(BigInt(offset), 20);
    }
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(45, 4);
    c.writeUInt16LE(45, 6);
    c.writeUInt16LE(e.flags ?? 0x800, 8);
    c.writeUInt16LE(e.method ?? 0, 10);
    c.writeUInt32LE(zlib.crc32(e.data), 16);
    c.writeUInt32LE(sat(e.data.length, 0xffffffff), 20);
    c.writeUInt32LE(sat(e.data.length, 0xffffffff), 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt16LE(extra.length, 30);
    c.writeUInt32LE(sat(offset, 0xffffffff), 42);
    centralFields.push(
      [cdPos + 8, 2, 'flags'], [cdPos + 10, 2, 'method'], [cdPos + 20, 4, 'compressed size'], [cdPos + 24, 4, 'size'],
      [cdPos + 28, 2, 'name length'], [cdPos + 30, 2, 'extra length'], [cdPos + 32, 2, 'comment length'], [cdPos + 42, 4, 'local header offset'],
    );
    if (zip64) centralFields.push([cdPos + 46 + name.length + 2, 2, 'ZIP64 field length'], [cdPos + 46 + name.length + 4, 8, 'ZIP64 size'], [cdPos + 46 + name.length + 20, 8, 'ZIP64 offset']);
    const entry = Buffer.concat([c, name, extra]);
    central.push(entry);
    cdPos += entry.length;
  }
  const cdStart = pos;
  for (const [at, width, what] of centralFields) fields.push([cdStart + at, width, `central ${what}`]);
  const cd = Buffer.concat(central);
  put(cd);
  if (zip64) {
    const end64 = Buffer.alloc(56);
    end64.writeUInt32LE(0x06064b50, 0);
    end64.writeBigUInt64LE(44n, 4);
    end64.writeBigUInt64LE(BigInt(entries.length), 24);
    end64.writeBigUInt64LE(BigInt(entries.length), 32);
    end64.writeBigUInt64LE(BigInt(cd.length), 40);
    end64.writeBigUInt64LE(BigInt(cdStart), 48);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(pos), 8);
    loc.writeUInt32LE(1, 16);
    fields.push([pos + 32, 8, 'ZIP64 entry count'], [pos + 40, 8, 'ZIP64 directory size'], [pos + 48, 8, 'ZIP64 directory offset'], [pos + 56 + 8, 8, 'ZIP64 locator offset']);
    put(Buffer.concat([end64, loc]));
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(sat(entries.length, 0xffff), 8);
  end.writeUInt16LE(sat(entries.length, 0xffff), 10);
  end.writeUInt32LE(sat(cd.length, 0xffffffff), 12);
  end.writeUInt32LE(sat(cdStart, 0xffffffff), 16);
  fields.push([pos + 10, 2, 'end entry count'], [pos + 12, 4, 'end directory size'], [pos + 16, 4, 'end directory offset'], [pos + 20, 2, 'end comment length']);
  put(end);
  return { bytes: Buffer.concat(parts), layout: { fields, cdStart, dataStarts } };
}

/** One header field of a built zip set to an edge value (sizes, offsets, counts, lengths). */
export function mutateZipField(bytes: Buffer, layout: ZipLayout, r: Rand): Mutated {
  const [at, width, what] = r.pick(layout.fields);
  const c = Buffer.from(bytes);
  const old = width === 2 ? c.readUInt16LE(at) : width === 4 ? c.readUInt32LE(at) : Number(c.readBigUInt64LE(at));
  const v = width === 8 ? r.pick([0n, 1n, BigInt(old) + 1n, BigInt(old) - 1n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, BigInt(c.length)]) : BigInt(edgeNumber(r, old) >>> 0);
  if (width === 2) c.writeUInt16LE(Number(v & 0xffffn), at);
  else if (width === 4) c.writeUInt32LE(Number(v & 0xffffffffn), at);
  else c.writeBigUInt64LE(BigInt.asUintN(64, v), at);
  return { bytes: c, what: `${what} (byte ${at}) ${old} -> ${v}` };
}

// ---- pickles (protocol 2, the subset torch.save writes) ------------------------------------------------------

const op = (...b: number[]) => Buffer.from(b);
const GLOBAL = (m: string, n: string) => Buffer.from(`c${m}\n${n}\n`, 'latin1');
export function pUnicode(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  const len = Buffer.alloc(4);
  len.writeUInt32LE(b.length);
  return Buffer.concat([op(0x58), len, b]);
}
export function pInt(v: number): Buffer {
  if (v >= 0 && v < 256) return op(0x4b, v);
  if (v >= -(2 ** 31) && v < 2 ** 31) {
    const b = Buffer.alloc(5);
    b[0] = 0x4a;
    b.writeInt32LE(v, 1);
    return b;
  }
  const b = Buffer.alloc(10);
  b[0] = 0x8a;
  b[1] = 8;
  b.writeBigInt64LE(BigInt(v), 2);
  return b;
}
const pTuple = (items: Buffer[]) => (items.length === 0 ? op(0x29) : Buffer.concat([op(0x28), ...items, op(0x74)]));

export interface PickledTensor {
  name: string | Buffer;
  storageClass: string;
  key: string;
  storageNumel: number;
  offset: number;
  shape: number[];
  stride: number[];
}

/** torch.save's pickle of an OrderedDict state dict, one REBUILD per tensor (storages shared by key). */
export function statePickle(tensors: PickledTensor[]): Buffer {
  const body: Buffer[] = [op(0x80, 2), GLOBAL('collections', 'OrderedDict'), op(0x29, 0x52), op(0x28)];
  for (const t of tensors) {
    const persid = Buffer.concat([op(0x28), pUnicode('storage'), GLOBAL('torch', t.storageClass), pUnicode(t.key), pUnicode('cpu'), pInt(t.storageNumel), op(0x74, 0x51)]);
    body.push(
      pUnicode(t.name),
      GLOBAL('torch._utils', '_rebuild_tensor_v2'),
      pTuple([persid, pInt(t.offset), pTuple(t.shape.map(pInt)), pTuple(t.stride.map(pInt)), op(0x89), GLOBAL('collections', 'OrderedDict'), op(0x29, 0x52)]),
      op(0x52),
    );
  }
  body.push(op(0x75, 0x2e)); // SETITEMS, STOP
  return Buffer.concat(body);
}

const OPCODES = [0x80, 0x2e, 0x63, 0x51, 0x28, 0x74, 0x29, 0x85, 0x86, 0x87, 0x7d, 0x5d, 0x58, 0x4a, 0x4b, 0x4d, 0x8a, 0x88, 0x89, 0x4e, 0x52, 0x62, 0x73, 0x75, 0x61, 0x65, 0x71, 0x72, 0x68, 0x6a, 0x81, 0x93, 0x94, 0x8c, 0x49, 0x56];

/** Pickle-aware damage: opcodes inserted or dropped, lengths and integers lied about, huge batches. */
export function mutatePickle(pkl: Buffer, r: Rand): Mutated {
  const at = r.int(pkl.length);
  switch (r.int(7)) {
    case 0: {
      const ins = Buffer.from([r.pick(OPCODES), ...Array.from({ length: r.int(5) }, () => r.int(256))]);
      return { bytes: Buffer.concat([pkl.subarray(0, at), ins, pkl.subarray(at)]), what: `opcode 0x${ins[0].toString(16)} inserted at ${at}` };
    }
    case 1: { // a BINUNICODE length lied about
      const x = pkl.indexOf(0x58, at);
      if (x < 0 || x + 5 > pkl.length) return mutateBytes(pkl, r);
      const c = Buffer.from(pkl);
      c.writeUInt32LE(r.pick([0, 1, 0xffffffff, 0x7fffffff, c.readUInt32LE(x + 1) + 1, c.length]), x + 1);
      return { bytes: c, what: `BINUNICODE length at ${x} changed` };
    }
    case 2: { // an integer set to an edge value
      const x = pkl.indexOf(0x4a, at);
      if (x < 0 || x + 5 > pkl.length) return mutateBytes(pkl, r);
      const c = Buffer.from(pkl);
      c.writeInt32LE(r.pick([-1, -(2 ** 31), 2 ** 31 - 1, 0, 1 << 20]), x + 1);
      return { bytes: c, what: `BININT at ${x} changed` };
    }
    case 3: { // a huge MARK-delimited batch: APPENDS, TUPLE or SETITEMS on hundreds of thousands of items
      const n = r.pick([1000, 200_000]);
      const closer = r.pick([0x65, 0x74, 0x75]);
      const batch = Buffer.concat([op(0x5d, 0x28), Buffer.alloc(n, 0x4e), op(closer)]); // ] ( N N ... closer
      const stop = pkl.lastIndexOf(0x2e);
      return { bytes: Buffer.concat([pkl.subarray(0, stop), batch, pkl.subarray(stop)]), what: `a ${n}-item batch closed by 0x${closer.toString(16)}` };
    }
    case 4: { // a memo index read before it is written, or a huge one
      const c = Buffer.concat([pkl.subarray(0, at), op(0x6a, 0xff, 0xff, 0xff, 0xff), pkl.subarray(at)]);
      return { bytes: c, what: `LONG_BINGET inserted at ${at}` };
    }
    case 5:
      return { bytes: pkl.subarray(0, at), what: `pickle truncated at ${at}` };
    default:
      return mutateBytes(pkl, r);
  }
}
