// PyTorch checkpoints (pytorch_model.bin, SPEC.md §3): a zip whose entries share one top folder,
// `<p>/data.pkl` (a pickle of the state dict) and one `<p>/data/<key>` entry of raw little-endian
// bytes per storage. We locate each tensor's bytes without loading them: the pickle is run by a small
// interpreter that knows only the opcodes and globals a plain state dict uses and builds inert
// descriptions; it never imports or calls anything, and refuses every other pickle.
import fs from 'node:fs';
import { SftError } from '../errors.js';
import { clip } from '../config/json.js';
import { DTYPE_SIZES, numel, type SafetensorsDtype } from './safetensors.js';
import { entryDataOffset, readZipDirectory, readZipEntry, type ZipArchive, type ZipEntry } from './zip.js';
import { strictUtf8 } from './utf8.js';

/** One state-dict tensor: dtype in safetensors' spelling, offset from the start of the .bin file. */
export interface BinTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  offset: number;
}

// torch.save names each storage by its legacy typed class (torch 2.x still does for these dtypes).
const STORAGE_DTYPES: Record<string, SafetensorsDtype> = {
  FloatStorage: 'F32', HalfStorage: 'F16', BFloat16Storage: 'BF16', DoubleStorage: 'F64',
  LongStorage: 'I64', IntStorage: 'I32', ShortStorage: 'I16', CharStorage: 'I8', ByteStorage: 'U8', BoolStorage: 'BOOL',
};
const REBUILD_TENSOR = 'torch._utils._rebuild_tensor_v2';
const REBUILD_PARAMETER = 'torch._utils._rebuild_parameter';
const ORDERED_DICT = 'collections.OrderedDict';
const MAX_PICKLE_BYTES = 256 * 2 ** 20;
const ALLOWED_GLOBALS = new Set([ORDERED_DICT, REBUILD_TENSOR, REBUILD_PARAMETER, ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`)]);

/** Lists the tensors of a torch.save'd state dict; reads the zip directory and data.pkl only. */
export function readTorchBin(file: string): BinTensor[] {
  refuseNonZip(file);
  const zip = readZipDirectory(file);
  const first = zip.entries[0]?.name ?? '';
  const slash = first.indexOf('/');
  if (slash <= 0) throw new SftError(`${file}: a zip archive, but not a PyTorch checkpoint (its first entry "${first}" is not inside a folder).`);
  const prefix = first.slice(0, slash);
  const pklEntry = zip.byName.get(`${prefix}/data.pkl`);
  if (!pklEntry) throw new SftError(`${file}: a zip archive without ${prefix}/data.pkl, so not a PyTorch checkpoint.`);
  // A 7B state dict pickles to ~50 KB; anything near this bound is not a list of tensors.
  if (pklEntry.size > MAX_PICKLE_BYTES) throw new SftError(`${file}: ${prefix}/data.pkl is ${pklEntry.size} bytes, too large for a state dict's tensor list; not a plain checkpoint.`);
  const byteorder = zip.byName.get(`${prefix}/byteorder`);
  if (byteorder) checkByteOrder(zip, byteorder, `${prefix}/byteorder`);
  const where = `${file} (${prefix}/data.pkl)`;
  const stateDict = unpickle(readZipEntry(zip, pklEntry), where);
  return locateTensors(zip, prefix, stateDict, where);
}

// torch writes "little" or "big"; the size is checked first, so a damaged entry claiming gigabytes is not read.
function checkByteOrder(zip: ZipArchive, entry: ZipEntry, name: string): void {
  if (entry.size > 16) throw new SftError(`${zip.file}: ${name} is ${entry.size} bytes; it should hold the word "little" (or "big"). The file is corrupt.`);
  const word = readZipEntry(zip, entry).toString('latin1').trim();
  if (word === 'big') throw new SftError(`${zip.file}: saved on a big-endian machine; sft reads little-endian checkpoints. Re-save it on a little-endian machine.`);
  if (word !== 'little') throw new SftError(`${zip.file}: ${name} says ${JSON.stringify(word)}, not "little" or "big"; the file is corrupt.`);
}

function refuseNonZip(file: string): void {
  const head = Buffer.alloc(32);
  let n: number;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      n = fs.readSync(fd, head, 0, head.length, 0);
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EISDIR') throw new SftError(`${file}: is a folder, not a PyTorch checkpoint.`);
    throw new SftError(code === 'ENOENT' ? `${file}: file not found.` : `${file}: cannot open (${code ?? (err as Error).message}).`);
  }
  if (n >= 4 && head.readUInt32LE(0) === 0x04034b50) return;
  if (head.toString('latin1', 0, n).startsWith('version https://git-lfs')) {
    throw new SftError(`${file} is a Git LFS pointer, not the weights; fetch them (git lfs pull, or download the file again).`);
  }
  if (n > 0 && head[0] === 0x80) {
    throw new SftError(
      `${file}: PyTorch's legacy (pre-1.6, non-zip) format, which sft does not read. Re-save it with a current torch: ` +
      `python -c "import torch; torch.save(torch.load('${file}', map_location='cpu'), '${file}')"`,
    );
  }
  throw new SftError(`${file}: not a PyTorch checkpoint (not a zip archive)${n === 0 ? '; the file is empty' : ''}.`);
}

// ---- The pickle interpreter ----------------------------------------------------------------------
// Values it builds: null, booleans, numbers, strings, arrays (tuples and lists), Maps (dicts), and
// the inert markers below. A global only ever becomes a Global marker; REDUCE maps the few allowed
// ones to a description, never to a call.

class Global {
  constructor(readonly path: string) {}
}
class Storage {
  constructor(readonly key: string, readonly dtype: SafetensorsDtype, readonly numel: number) {}
}
class Tensor {
  constructor(
    readonly storage: Storage,
    readonly storageOffset: number,
    readonly shape: number[],
    readonly stride: number[],
    /** torch's tensor metadata, e.g. {neg: true} for a saved negative view. */
    readonly flags: Map<unknown, unknown> | undefined,
  ) {}
}
type Value = null | boolean | number | string | Value[] | Map<unknown, unknown> | Global | Storage | Tensor;

function unpickle(data: Buffer, where: string): Value {
  const stack: Value[] = [];
  const marks: number[] = [];
  const memo = new Map<number, Value>();
  const storages = new Map<string, Storage>();
  let p = 0;
  let protocol = 0;

  const fail = (why: string): never => {
    throw new SftError(`${where}: ${why}; the file is corrupt.`);
  };
  const need = (n: number): number => {
    if (p + n > data.length) fail(`the pickle ends inside an instruction at byte ${p}`);
    const at = p;
    p += n;
    return at;
  };
  const pop = (): Value => (stack.length > (marks.at(-1) ?? 0) ? (stack.pop() as Value) : fail(`pickle stack underflow at byte ${p}`));
  const top = (): Value => (stack.length ? stack[stack.length - 1] : fail(`pickle stack underflow at byte ${p}`));
  const popMark = (): Value[] => {
    const m = marks.pop() ?? fail(`pickle has no MARK to close at byte ${p}`);
    return stack.splice(m);
  };
  const line = (): string => {
    const end = data.indexOf(0x0a, p);
    if (end < 0) fail(`unterminated GLOBAL at byte ${p}`);
    const s = data.toString('latin1', p, end);
    p = end + 1;
    return s;
  };
  const dictOnTop = (): Map<unknown, unknown> => {
    const d = top();
    return d instanceof Map ? d : fail(`SETITEM on a ${describe(d)} at byte ${p}`);
  };
  // A pickler writes each key of a dict once; a second one would silently replace the first tensor.
  const setItem = (d: Map<unknown, unknown>, k: Value, v: Value): void => {
    if (d.has(k)) fail(`the pickle sets the dict key ${typeof k === 'string' ? JSON.stringify(clip(k, 100)) : describe(k)} twice; a pickler never writes that`);
    d.set(k, v);
  };
  const listOnTop = (): Value[] => {
    const l = top();
    return Array.isArray(l) ? l : fail(`APPEND on a ${describe(l)} at byte ${p}`);
  };

  for (;;) {
    const at = need(1);
    const op = data[at];
    switch (op) {
      case 0x80: protocol = data[need(1)]; break; // PROTO
      case 0x2e: { // STOP
        if (stack.length !== 1 || marks.length) fail('the pickle stops with a malformed stack');
        return stack[0];
      }
      case 0x63: { // GLOBAL "module\nname\n"
        const path = `${line()}.${line()}`;
        if (!ALLOWED_GLOBALS.has(path)) refuse(where, `imports ${path}`);
        stack.push(new Global(path));
        break;
      }
      case 0x51: stack.push(persistentStorage(pop(), storages, where)); break; // BINPERSID
      case 0x28: marks.push(stack.length); break; // MARK
      case 0x74: stack.push(popMark()); break; // TUPLE
      case 0x29: stack.push([]); break; // EMPTY_TUPLE
      case 0x85: stack.push([pop()]); break; // TUPLE1
      case 0x86: { const b = pop(); stack.push([pop(), b]); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); stack.push([pop(), b, c]); break; } // TUPLE3
      case 0x7d: stack.push(new Map()); break; // EMPTY_DICT
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x58: { // BINUNICODE: UTF-8, as Python decodes it (strictly: a damaged name must not read as another)
        const len = data.readUInt32LE(need(4));
        const s = need(len);
        const decoded = strictUtf8(data.subarray(s, s + len));
        if (!('text' in decoded)) fail(`a pickled string at byte ${s} is not valid UTF-8`);
        stack.push((decoded as { text: string }).text);
        break;
      }
      case 0x4a: stack.push(data.readInt32LE(need(4))); break; // BININT
      case 0x4b: stack.push(data[need(1)]); break; // BININT1
      case 0x4d: stack.push(data.readUInt16LE(need(2))); break; // BININT2
      case 0x8a: { // LONG1: n bytes of little-endian two's complement
        const n = data[need(1)];
        const s = need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[s + i]);
        if (n > 0 && data[s + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) fail(`integer ${v} is out of range`);
        stack.push(Number(v));
        break;
      }
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4e: stack.push(null); break; // NONE
      case 0x52: { // REDUCE
        const args = pop();
        stack.push(reduce(pop(), args, where));
        break;
      }
      case 0x62: { // BUILD: only a state_dict()'s OrderedDict gets state (its _metadata attribute), which we drop
        const state = pop();
        if (!(top() instanceof Map) || !(state instanceof Map)) refuse(where, `sets the state of a ${describe(top())}`);
        break;
      }
      case 0x73: { const v = pop(); const k = pop(); setItem(dictOnTop(), k, v); break; } // SETITEM
      case 0x75: { // SETITEMS
        const items = popMark();
        if (items.length % 2) fail(`SETITEMS with an odd number of items at byte ${p}`);
        const d = dictOnTop();
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1]);
        break;
      }
      case 0x61: { const v = pop(); listOnTop().push(v); break; } // APPEND
      // APPENDS, item by item: push(...items) overflows the call stack past ~100,000 items.
      case 0x65: { const items = popMark(); const list = listOnTop(); for (const v of items) list.push(v); break; }
      case 0x71: memo.set(data[need(1)], top()); break; // BINPUT
      case 0x72: memo.set(data.readUInt32LE(need(4)), top()); break; // LONG_BINPUT
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const id = op === 0x68 ? data[need(1)] : data.readUInt32LE(need(4));
        if (!memo.has(id)) fail(`pickle memo ${id} read before it is written`);
        stack.push(memo.get(id) as Value);
        break;
      }
      default: {
        const ch = op >= 0x20 && op < 0x7f ? ` ('${String.fromCharCode(op)}')` : '';
        const proto = protocol > 2 ? ` (it was pickled with protocol ${protocol}; torch.save uses 2 unless told otherwise)` : '';
        refuse(where, `uses pickle opcode 0x${op.toString(16).padStart(2, '0')}${ch} at byte ${at}${proto}`);
      }
    }
  }
}

function refuse(where: string, what: string): never {
  throw new SftError(
    `${where} ${what}; sft refuses the file because it is not a plain state dict of tensors ` +
    `(only ${[...ALLOWED_GLOBALS].filter((g) => !g.endsWith('Storage')).join(', ')} and torch.*Storage are allowed), ` +
    `and unpickling anything else could run code. If you trust the file, load it in Python and save model.state_dict() again.`,
  );
}

// A persistent id names a storage: ('storage', torch.XStorage, key, location, numel).
function persistentStorage(pid: Value, storages: Map<string, Storage>, where: string): Storage {
  if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== 'storage' || !(pid[1] instanceof Global) ||
      typeof pid[2] !== 'string' || !isCount(pid[4])) {
    refuse(where, `has a persistent id that is not a storage (${describe(pid)})`);
  }
  const cls = (pid[1] as Global).path;
  const dtype = STORAGE_DTYPES[cls.replace(/^torch\./, '')];
  if (!cls.startsWith('torch.') || !dtype) refuse(where, `names ${cls} as a storage type`);
  const key = pid[2] as string;
  const known = storages.get(key);
  if (known) {
    if (known.dtype !== dtype) throw new SftError(`${where}: storage ${key} is read both as ${known.dtype} and ${dtype}; the file is corrupt.`);
    return known;
  }
  const s = new Storage(key, dtype, pid[4] as number);
  storages.set(key, s);
  return s;
}

function reduce(callable: Value, args: Value, where: string): Value {
  if (!(callable instanceof Global) || !Array.isArray(args)) return refuse(where, `calls a ${describe(callable)}`);
  switch (callable.path) {
    case ORDERED_DICT:
      if (args.length !== 0) refuse(where, 'builds an OrderedDict from arguments');
      return new Map();
    case REBUILD_PARAMETER: // (data, requires_grad, backward_hooks): the tensor is all we keep
      if (args.length !== 3 || !(args[0] instanceof Tensor)) refuse(where, `calls ${REBUILD_PARAMETER} on a ${describe(args[0])}`);
      return args[0];
    case REBUILD_TENSOR: { // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      const [storage, offset, size, stride, , , metadata] = args;
      if ((args.length !== 6 && args.length !== 7) || !(storage instanceof Storage) || !isCount(offset) ||
          !isCountList(size) || !isCountList(stride) || size.length !== stride.length ||
          !(metadata === undefined || metadata === null || metadata instanceof Map)) {
        refuse(where, `calls ${REBUILD_TENSOR} with arguments that do not describe a tensor`);
      }
      return new Tensor(storage as Storage, offset as number, size as number[], stride as number[], metadata as Map<unknown, unknown> | undefined);
    }
    default:
      return refuse(where, `calls ${callable.path}`);
  }
}

// ---- From pickled descriptions to file offsets ---------------------------------------------------

function locateTensors(zip: ZipArchive, prefix: string, stateDict: Value, where: string): BinTensor[] {
  if (!(stateDict instanceof Map)) {
    throw new SftError(`${where}: holds a ${describe(stateDict)}, not a state dict; save model.state_dict() instead.`);
  }
  const storageStart = new Map<string, number>();
  const out: BinTensor[] = [];
  for (const [name, t] of stateDict) {
    if (typeof name !== 'string') throw new SftError(`${where}: has a non-string key ${describe(name as Value)}; not a state dict.`);
    if (!(t instanceof Tensor)) {
      throw new SftError(`${where}: "${name}" is a ${describe(t as Value)}, not a tensor; this looks like a training checkpoint — save model.state_dict() alone.`);
    }
    const { storage: s, shape, stride } = t;
    for (const [flag, on] of t.flags ?? []) {
      if (on !== false) throw new SftError(`${where}: tensor "${name}" was saved with torch's "${String(flag)}" bit set; re-save it with tensor.resolve_${String(flag)}().clone().`);
    }
    if (!isRowMajor(shape, stride)) {
      throw new SftError(`${where}: tensor "${name}" (shape [${shape.join(', ')}], strides [${stride.join(', ')}]) is not contiguous row-major; re-save it with tensor.contiguous().`);
    }
    const count = numel(shape);
    if (t.storageOffset + count > s.numel) {
      throw new SftError(`${where}: tensor "${name}" reaches element ${t.storageOffset + count} of storage ${s.key}, which holds ${s.numel}; the file is corrupt.`);
    }
    let start = storageStart.get(s.key);
    if (start === undefined) {
      const entry = zip.byName.get(`${prefix}/data/${s.key}`);
      if (!entry) throw new SftError(`${zip.file}: storage ${s.key} of tensor "${name}" has no ${prefix}/data/${s.key} entry; the file is corrupt.`);
      if (entry.size < s.numel * DTYPE_SIZES[s.dtype]) {
        throw new SftError(`${zip.file}: ${prefix}/data/${s.key} holds ${entry.size} bytes, but its ${s.dtype} storage needs ${s.numel * DTYPE_SIZES[s.dtype]}; the file is corrupt.`);
      }
      start = entryDataOffset(zip, entry);
      storageStart.set(s.key, start);
    }
    out.push({ name, dtype: s.dtype, shape, offset: start + t.storageOffset * DTYPE_SIZES[s.dtype] });
  }
  return out;
}

/** Row-major contiguity as torch defines it: size-1 dims may have any stride; empty tensors always qualify. */
function isRowMajor(shape: number[], stride: number[]): boolean {
  if (numel(shape) === 0) return true;
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d];
  }
  return true;
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function isCountList(x: unknown): x is number[] {
  return Array.isArray(x) && x.every(isCount);
}

function describe(v: Value | undefined): string {
  if (v === undefined || v === null) return 'None';
  if (v instanceof Global) return `global ${v.path}`;
  if (v instanceof Map) return 'dict';
  if (Array.isArray(v)) return 'tuple/list';
  if (v instanceof Storage) return 'storage';
  if (v instanceof Tensor) return 'tensor';
  return typeof v === 'string' ? `string "${v.slice(0, 40)}"` : `${typeof v} ${v}`;
}
