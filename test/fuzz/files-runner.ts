// The file-reader fuzz cases (files.test.ts), run in a child process so that a watchdog can kill one
// that hangs and a heap blow-up kills only the child. Protocol on stdout, one line each:
//   > N          case N starts
//   ! {json}     case N ended in something other than a checked result or an SftError naming the file
//   # {json}     memory: RSS at start and at its peak, the largest single Buffer allocated over its input
//   = {json}     all done: outcome counts
// Replay one case:  node --import tsx test/fuzz/files-runner.ts <kind> <seed> <count> --case N
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SftError } from '../../src/errors.js';
import { DTYPE_SIZES, numel, readSafetensorsHeader, readTensorF32, writeSafetensors, type SafetensorsHeader } from '../../src/io/safetensors.js';
import { readTorchBin, type BinTensor } from '../../src/io/torch-bin.js';
import { readZipDirectory, readZipEntry } from '../../src/io/zip.js';
import { expectedTensors, readHfConfig } from '../../src/model/hfconfig.js';
import { listCheckpointTensors } from '../../src/model/weights.js';
import { loadSubjects, type BenchmarkName } from '../../src/eval/datasets.js';
import { packageRoot } from '../../src/native/binding.js';
import { rng, type Rand } from './corrupt.js';
import {
  BAD_UTF8, RAW_VALUES, buildZip, deepJson, duplicateKey, edgeNumber, mutateBytes, mutateCsv, mutatePickle, mutateZipField,
  statePickle, withRawValue, type Mutated, type PickledTensor, type ZipIn,
} from './files-mutate.js';

export const FILE_KINDS = ['safetensors', 'torch-bin', 'hf-config', 'shard-index', 'ceval-csv', 'self-check'] as const;
type Kind = (typeof FILE_KINDS)[number];

const caseRand = (seed: number, i: number): Rand => rng(Math.imul(seed, 1_000_003) + i * 7919 + 1);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-fuzz-files-'));
const FIX = path.join(packageRoot, 'test', 'fixtures', 'torch-bin');

class Unexpected extends Error {}
/** What the current case did to its input, for the failure report. */
let currentWhat = '';
const noted = <T extends { what: string }>(m: T): T => {
  currentWhat = m.what;
  return m;
};
const fail = (why: string): never => {
  throw new Unexpected(why);
};

// ---- memory: the largest Buffer any reader asks for, against the bytes the case wrote ---------------------
// A length field claiming gigabytes must be checked against the file before anything is allocated.
let maxAlloc = 0;
for (const fn of ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const) {
  const original = Buffer[fn] as (size: number, ...rest: unknown[]) => Buffer;
  (Buffer as unknown as Record<string, unknown>)[fn] = (size: number, ...rest: unknown[]) => {
    if (size > maxAlloc) maxAlloc = size;
    return original.call(Buffer, size, ...rest);
  };
}
/** Slack over the input: zip's tail read (64 KiB), small fixed headers. */
const ALLOC_SLACK = 256 * 1024;

const utf8 = new TextDecoder('utf-8', { fatal: true });
const isUtf8 = (b: Uint8Array): boolean => {
  try {
    utf8.decode(b);
    return true;
  } catch {
    return false;
  }
};

/** An SftError about the case's input: it names `file` (or one of `files`) first, and is short enough to read. */
function checkError(err: unknown, files: string[], alsoOk: RegExp[] = []): string {
  if (!(err instanceof SftError)) throw err;
  const m = err.message;
  if (m.length > 2000) fail(`an error message of ${m.length} characters: ${m.slice(0, 200)}`);
  if (!files.some((f) => m.startsWith(f)) && !alsoOk.some((re) => re.test(m))) fail(`SftError does not start with the file it is about: ${m.slice(0, 300)}`);
  return 'error';
}

/** A result when the input must be refused is a failure; otherwise checks run on it. */
function refuseOr(mut: Mutated, check: () => void): string {
  if (mut.mustRefuse) fail(`accepted input that must be refused (${mut.mustRefuse})`);
  check();
  return 'ok';
}

// ---- safetensors ---------------------------------------------------------------------------------------------

const ST_SEEDS: Buffer[] = (() => {
  const make = (tensors: Parameters<typeof writeSafetensors>[1], meta?: Record<string, string>) => {
    const f = path.join(tmp, 'seed.safetensors');
    writeSafetensors(f, tensors, meta);
    return fs.readFileSync(f);
  };
  const f32 = (n: number) => new Float32Array(n).map((_, i) => i - 1.5);
  return [
    make([
      { name: 'a', dtype: 'F32', shape: [2, 3], data: f32(6) },
      { name: 'b', dtype: 'F16', shape: [4], data: new Uint16Array([0x3c00, 0xc000, 0, 0x7bff]) },
      { name: 'e', dtype: 'BF16', shape: [0, 3], data: new Uint16Array(0) },
      { name: 'i', dtype: 'I32', shape: [1], data: new Int32Array([7]) },
      { name: 'u', dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
    ], { format: 'pt' }),
    make(Array.from({ length: 40 }, (_, k) => ({ name: k % 7 === 0 ? `层.${k}.权重` : `model.layers.${k}.w`, dtype: 'F32' as const, shape: [1 + (k % 3)], data: f32(1 + (k % 3)) }))),
    make([{ name: '__proto__', dtype: 'F32', shape: [], data: f32(1) }, { name: 'constructor', dtype: 'BF16', shape: [2], data: new Uint16Array(2) }]),
    make([], { only: 'metadata' }),
  ];
})();

const DTYPE_LIES = ['"F32"', '"F16"', '"BF16"', '"I64"', '"F64"', '"U8"', '"BOOL"', '"F33"', '""', '"f32"', '"toString"', '"__proto__"', '"constructor"', '5', 'null', '["F32"]'];
const SHAPE_LIES = ['[-1]', '[1.5]', '[9007199254740992]', '[1099511627776,1099511627776]', '[]', '[0]', '"3"', 'null', '[1e400]', '[[2]]', `[${Array(100_000).fill(1).join(',')}]`, '[2,2]', '[3]', '[6]', '[1,6]'];
const OFFSET_LIES = ['[0]', '[0,1,2]', '[-4,0]', '["0","4"]', '[1e400,1e400]', '[9007199254740992,9007199254740996]', '[0,0]', '[0,24]', '[4,28]', '[24,0]', '{"0":0}', '[0,4294967296]'];

function splitSafetensors(b: Buffer): { header: Record<string, Record<string, unknown>>; text: string; data: Buffer } {
  const len = Number(b.readBigUInt64LE(0));
  const text = b.toString('utf8', 8, 8 + len);
  return { header: JSON.parse(text) as Record<string, Record<string, unknown>>, text, data: b.subarray(8 + len) };
}

function joinSafetensors(headerText: string | Buffer, data: Buffer, lenField?: bigint): Buffer {
  const h = typeof headerText === 'string' ? Buffer.from(headerText) : headerText;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenField ?? BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

function mutateSafetensors(seed: Buffer, r: Rand): Mutated {
  const { header, text, data } = splitSafetensors(seed);
  const names = Object.keys(header).filter((k) => k !== '__metadata__' && k !== '__proto__');
  const name = names.length ? r.pick(names) : 'a';
  switch (r.int(12)) {
    case 0: return { bytes: joinSafetensors(withRawValue(header, [name, 'dtype'], r.pick(DTYPE_LIES)), data), what: `dtype of ${name}` };
    case 1: return { bytes: joinSafetensors(withRawValue(header, [name, 'shape'], r.pick(SHAPE_LIES)), data), what: `shape of ${name}` };
    case 2: return { bytes: joinSafetensors(withRawValue(header, [name, 'data_offsets'], r.pick(OFFSET_LIES)), data), what: `data_offsets of ${name}` };
    case 3: { // the same name twice, as the same bytes seen with another dtype or shape
      const entry = { ...header[name], ...(r.chance(0.5) ? { dtype: 'I32' } : {}) };
      return { bytes: joinSafetensors(duplicateKey(text, name, JSON.stringify(entry)), data), what: `duplicate ${name}`, mustRefuse: 'a duplicate tensor name' };
    }
    case 4: { // a name that is not UTF-8
      const h = Buffer.from(text);
      const at = h.indexOf(Buffer.from(JSON.stringify(name))) + 1 + r.int(Buffer.byteLength(name) + 1);
      if (at <= 0) return mutateBytes(seed, r);
      return { bytes: joinSafetensors(Buffer.concat([h.subarray(0, at), Buffer.from(r.pick(BAD_UTF8)), h.subarray(at)]), data), what: `non-UTF-8 in ${name}`, mustRefuse: 'a name that is not UTF-8' };
    }
    case 5: return { bytes: joinSafetensors(withRawValue(header, r.chance(0.5) ? [name, 'shape'] : [name], deepJson(r)), data), what: 'deep nesting' };
    case 6: {
      const raw = r.pick(['{"__proto__":"x"}', '{"a":1}', '[]', '"s"', '{"a":{"b":"c"}}', '{"k":"' + 'v'.repeat(100_000) + '"}', deepJson(r)]);
      return { bytes: joinSafetensors(withRawValue(header, ['__metadata__'], raw), data), what: '__metadata__' };
    }
    case 7: { // an entry removed or added
      const copy = { ...header };
      if (r.chance(0.5)) delete copy[name];
      else copy[`extra${r.int(3)}`] = { dtype: 'F32', shape: [1], data_offsets: [edgeNumber(r, data.length), edgeNumber(r, data.length) + 4] };
      return { bytes: joinSafetensors(JSON.stringify(copy), data), what: 'an entry removed or added' };
    }
    case 8: { // the header length field lies
      const len = Buffer.byteLength(text);
      const v = r.pick([0n, 1n, 7n, BigInt(len - 1), BigInt(len + 1), BigInt(len + 8), 2n ** 63n, 2n ** 64n - 1n, 2n ** 64n - 8n, 2n ** 32n + BigInt(len), 100_000_000n, 100_000_001n, BigInt(seed.length - 8), BigInt(seed.length - 7)]);
      return { bytes: joinSafetensors(text, data, v), what: `header length ${v}` };
    }
    case 9: { // garbage in the padding after the JSON
      const pad = r.pick(['\0', 'x', '\t', '\n', '}', ' ']);
      return { bytes: joinSafetensors(text.trimEnd() + pad.repeat(1 + r.int(8)), data), what: 'padding' };
    }
    case 10: // the data buffer cut or extended
      return { bytes: joinSafetensors(text, r.chance(0.5) ? data.subarray(0, r.int(data.length + 1)) : Buffer.concat([data, Buffer.alloc(1 + r.int(9))])), what: 'data length' };
    default: {
      const end = 8 + Buffer.byteLength(text);
      return mutateBytes(seed, r, 0, r.chance(0.8) ? end : seed.length);
    }
  }
}

/** What an accepted safetensors header must satisfy, checked without the reader's own code. */
function checkSafetensorsResult(file: string, bytes: Buffer, h: SafetensorsHeader): void {
  if (h.dataStart !== 8 + h.headerLen || h.dataStart > bytes.length) fail(`dataStart ${h.dataStart} for a ${bytes.length}-byte file`);
  if (!isUtf8(bytes.subarray(8, h.dataStart))) fail('accepted a header that is not UTF-8');
  const ranges = [...h.tensors].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let cursor = 0;
  for (const [name, t] of ranges) {
    if (name === '__metadata__') fail('a tensor named __metadata__');
    if (!Object.hasOwn(DTYPE_SIZES, t.dtype)) fail(`dtype ${t.dtype}`);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`shape ${t.shape}`);
    if (numel(t.shape) * DTYPE_SIZES[t.dtype] !== t.end - t.begin) fail(`${name}: shape and range disagree`);
    if (t.begin !== cursor) fail(`${name}: starts at ${t.begin}, expected ${cursor}`);
    cursor = t.end;
    if (['F32', 'F16', 'BF16'].includes(t.dtype) && readTensorF32(file, h, name).length !== numel(t.shape)) fail(`${name}: read the wrong length`);
  }
  if (cursor !== bytes.length - h.dataStart) fail(`tensors cover ${cursor} of ${bytes.length - h.dataStart} data bytes`);
  for (const v of Object.values(h.metadata)) if (typeof v !== 'string') fail('metadata value that is not a string');
}

function safetensorsCase(r: Rand, i: number): Outcome {
  const seed = r.pick(ST_SEEDS);
  let mut = mutateSafetensors(seed, r);
  if (r.chance(0.2)) mut = { ...mutateBytes(mut.bytes, r), mustRefuse: undefined, what: `${mut.what}, then bytes` };
  noted(mut);
  const file = path.join(tmp, `st-${i}.safetensors`);
  fs.writeFileSync(file, mut.bytes);
  maxAlloc = 0;
  try {
    const h = readSafetensorsHeader(file);
    return { mut, outcome: refuseOr(mut, () => checkSafetensorsResult(file, mut.bytes, h)) };
  } catch (err) {
    return { mut, outcome: checkError(err, [file]) };
  }
}

// ---- PyTorch .bin --------------------------------------------------------------------------------------------

/** The fixtures' entries, to rebuild as zips with or without ZIP64 records. */
const BIN_SEEDS: ZipIn[][] = ['tensors.bin', 'zip64.bin', 'neg-view.bin'].map((f) => {
  const zip = readZipDirectory(path.join(FIX, f));
  return zip.entries.map((e) => ({ name: e.name, data: readZipEntry(zip, e) }));
});
const STORAGES: [string, number][] = [['FloatStorage', 4], ['HalfStorage', 2], ['BFloat16Storage', 2], ['LongStorage', 8], ['ByteStorage', 1], ['BoolStorage', 1]];
const DTYPE_OF: Record<string, string> = { FloatStorage: 'F32', HalfStorage: 'F16', BFloat16Storage: 'BF16', LongStorage: 'I64', ByteStorage: 'U8', BoolStorage: 'BOOL' };

interface Generated {
  entries: ZipIn[];
  tensors: PickledTensor[];
  /** Why the description cannot be read as it stands (a lie about sizes, a duplicate name, ...). */
  lie?: string;
  mustRefuse?: string;
}

/** A random state dict: a few storages, tensors that view them (offsets, shared storages), maybe one lie. */
function generateStateDict(r: Rand): Generated {
  const storages = Array.from({ length: 1 + r.int(3) }, (_, k) => {
    const [cls, size] = r.pick(STORAGES);
    return { key: String(k), cls, size, numel: r.int(20) };
  });
  const tensors: PickledTensor[] = [];
  for (let k = 0, n = 1 + r.int(5); k < n; k++) {
    const s = r.pick(storages);
    const count = r.int(s.numel + 1);
    const offset = r.int(s.numel - count + 1);
    const shape = count === 0 ? [0] : r.chance(0.3) ? [] : [count];
    if (shape.length === 0 && count !== 1) shape.push(count);
    const name = r.pick([`layer.${k}.weight`, `名字.${k}`, `😀${k}`, `k${k}`, k === 0 ? '__proto__' : `b${k}`]);
    tensors.push({ name, storageClass: s.cls, key: s.key, storageNumel: s.numel, offset, shape, stride: shape.map(() => 1) });
  }
  const data = new Map(storages.map((s) => [s.key, Buffer.alloc(s.numel * s.size, 0xab)]));
  const g: Generated = { entries: [], tensors };
  switch (r.int(8)) {
    case 0: { // a tensor reaching past its storage
      const t = r.pick(tensors);
      t.offset = t.storageNumel + r.int(3);
      t.shape = [1];
      t.stride = [1];
      g.lie = 'a tensor past its storage';
      break;
    }
    case 1: { // a storage entry shorter than its storage claims
      const s = r.pick(storages);
      if (s.numel > 0) {
        data.set(s.key, data.get(s.key)!.subarray(0, r.int(s.numel * s.size)));
        if (tensors.some((t) => t.key === s.key)) g.lie = 'a short storage entry';
      }
      break;
    }
    case 2: { // a duplicate name
      const t = r.pick(tensors);
      tensors.push({ ...t });
      g.mustRefuse = 'a duplicate state-dict key';
      break;
    }
    case 3: { // a name that is not UTF-8
      const t = r.pick(tensors);
      t.name = Buffer.concat([Buffer.from('w.'), Buffer.from(r.pick(BAD_UTF8))]);
      g.mustRefuse = 'a name that is not UTF-8';
      break;
    }
    default:
  }
  g.entries = [
    { name: 'archive/data.pkl', data: statePickle(tensors) },
    { name: 'archive/byteorder', data: Buffer.from('little') },
    ...storages.map((s) => ({ name: `archive/data/${s.key}`, data: data.get(s.key)! })),
    { name: 'archive/version', data: Buffer.from('3\n') },
  ];
  return g;
}

/** What readTorchBin must return for a generated state dict without lies: every tensor, in order, exactly. */
function expectedBin(g: Generated, dataStarts: number[]): BinTensor[] {
  return g.tensors.map((t) => {
    const entry = g.entries.findIndex((e) => e.name === `archive/data/${t.key}`);
    const size = STORAGES.find(([c]) => c === t.storageClass)![1];
    return { name: t.name as string, dtype: DTYPE_OF[t.storageClass] as BinTensor['dtype'], shape: t.shape, offset: dataStarts[entry] + t.offset * size };
  });
}

function mutateBin(r: Rand): { mut: Mutated; expected?: BinTensor[] } {
  const zip64 = r.chance(0.4);
  if (r.chance(0.3)) {
    const g = generateStateDict(r);
    const { bytes, layout } = buildZip(g.entries, zip64);
    const what = `generated state dict${g.lie ? ` with ${g.lie}` : ''}${g.mustRefuse ? ` with ${g.mustRefuse}` : ''}`;
    if (g.lie || g.mustRefuse) return { mut: { bytes, what, mustRefuse: g.mustRefuse ?? g.lie } };
    return { mut: { bytes, what }, expected: expectedBin(g, layout.dataStarts) };
  }
  const entries = r.pick(BIN_SEEDS).map((e) => ({ ...e }));
  switch (r.int(5)) {
    case 0: {
      const { bytes, layout } = buildZip(entries, zip64);
      return { mut: mutateZipField(bytes, layout, r) };
    }
    case 1: {
      const pkl = entries.findIndex((e) => String(e.name).endsWith('/data.pkl'));
      const m = mutatePickle(entries[pkl].data, r);
      entries[pkl].data = m.bytes;
      return { mut: { bytes: buildZip(entries, zip64).bytes, what: m.what } };
    }
    case 2: { // entry-level damage
      const k = r.int(entries.length);
      const e = entries[k];
      switch (r.int(6)) {
        case 0: entries.splice(k, 1); return { mut: { bytes: buildZip(entries, zip64).bytes, what: `entry ${e.name} dropped` } };
        case 1: entries.push({ ...e, data: Buffer.alloc(e.data.length, 0x11) }); return { mut: { bytes: buildZip(entries, zip64).bytes, what: `entry ${e.name} twice`, mustRefuse: 'a duplicate zip entry' } };
        case 2: {
          const name = Buffer.concat([Buffer.from(String(e.name)), Buffer.from(r.pick(BAD_UTF8))]);
          entries[k] = { ...e, name };
          return { mut: { bytes: buildZip(entries, zip64).bytes, what: `entry ${e.name} renamed to non-UTF-8`, mustRefuse: 'a zip entry name that is not UTF-8' } };
        }
        case 3: entries[k] = { ...e, method: r.pick([8, 12, 99]) }; return { mut: { bytes: buildZip(entries, zip64).bytes, what: `entry ${e.name} marked compressed` } };
        case 4: entries[k] = { ...e, flags: 0x801 }; return { mut: { bytes: buildZip(entries, zip64).bytes, what: `entry ${e.name} marked encrypted` } };
        default: entries[k] = { ...e, data: e.data.subarray(0, r.int(e.data.length + 1)) }; return { mut: { bytes: buildZip(entries, zip64).bytes, what: `entry ${e.name} cut` } };
      }
    }
    default: {
      const { bytes, layout } = buildZip(entries, zip64);
      return { mut: mutateBytes(bytes, r, r.chance(0.5) ? layout.cdStart : 0, r.chance(0.5) ? bytes.length : Math.min(bytes.length, 400)) };
    }
  }
}

function torchBinCase(r: Rand, i: number): Outcome {
  const { mut, expected } = mutateBin(r);
  noted(mut);
  const file = path.join(tmp, `bin-${i}.bin`);
  fs.writeFileSync(file, mut.bytes);
  maxAlloc = 0;
  try {
    const got = readTorchBin(file);
    return {
      mut,
      outcome: refuseOr(mut, () => {
        const seen = new Set<string>();
        for (const t of got) {
          if (typeof t.name !== 'string' || seen.has(t.name)) fail(`name ${JSON.stringify(t.name)} missing or repeated`);
          seen.add(t.name);
          if (t.name.includes('\ufffd')) fail(`a name with a replacement character: ${t.name}`);
          if (!Object.hasOwn(DTYPE_SIZES, t.dtype) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`${t.name}: ${t.dtype} ${t.shape}`);
          const end = t.offset + numel(t.shape) * DTYPE_SIZES[t.dtype];
          if (!(t.offset >= 0 && end <= mut.bytes.length)) fail(`${t.name}: bytes ${t.offset}..${end} outside the ${mut.bytes.length}-byte file`);
        }
        if (expected && JSON.stringify(got) !== JSON.stringify(expected)) fail(`got ${JSON.stringify(got).slice(0, 300)}, expected ${JSON.stringify(expected).slice(0, 300)}`);
      }),
    };
  } catch (err) {
    if (expected && err instanceof SftError) fail(`a valid state dict refused: ${err.message.slice(0, 300)}`);
    return { mut, outcome: checkError(err, [file]) };
  }
}

// ---- config.json ---------------------------------------------------------------------------------------------

const HF_SEEDS: Record<string, unknown>[] = [
  { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 16, intermediate_size: 32, num_attention_heads: 4, num_key_value_heads: 2, num_hidden_layers: 2, vocab_size: 64, rms_norm_eps: 1e-6, rope_theta: 10000, hidden_act: 'silu', tie_word_embeddings: false, rope_scaling: null, torch_dtype: 'float16' },
  { architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', hidden_size: 16, intermediate_size: 32, num_attention_heads: 4, num_key_value_heads: 4, num_hidden_layers: 1, vocab_size: 64, rope_theta: 1000000.0, rms_norm_eps: 1e-6, tie_word_embeddings: true },
  { architectures: ['BaiChuanForCausalLM'], model_type: 'baichuan', hidden_size: 16, intermediate_size: 32, num_attention_heads: 4, num_hidden_layers: 1, vocab_size: 64 },
  { architectures: ['BaichuanForCausalLM'], model_type: 'baichuan', hidden_size: 16, intermediate_size: 32, num_attention_heads: 2, num_hidden_layers: 1, vocab_size: 125696, z_loss_weight: 0 },
  { architectures: ['BloomForCausalLM'], model_type: 'bloom', n_embed: 16, n_head: 4, n_layer: 2, vocab_size: 64, layer_norm_epsilon: 1e-5 },
  { model_type: 'llama', hidden_size: 16, intermediate_size: 32, num_attention_heads: 4, num_hidden_layers: 1, vocab_size: 64, rope_parameters: { rope_type: 'default', rope_theta: 500000 } },
];
const HF_KEYS = ['hidden_size', 'num_attention_heads', 'num_key_value_heads', 'intermediate_size', 'num_hidden_layers', 'vocab_size', 'rope_theta', 'rms_norm_eps',
  'tie_word_embeddings', 'rope_scaling', 'head_dim', 'hidden_act', 'rope_parameters', 'architectures', 'model_type', 'n_embed', 'n_head', 'n_layer',
  'layer_norm_epsilon', 'pretraining_tp', 'slow_but_exact', 'attention_bias', 'apply_residual_connection_post_layernorm', '__proto__', 'constructor'];

function mutateJsonObject(seed: Record<string, unknown>, keys: string[], r: Rand): Mutated {
  const indent = r.chance(0.5) ? 2 : undefined;
  const text = JSON.stringify(seed, null, indent);
  const key = r.chance(0.8) ? r.pick(keys) : r.pick(Object.keys(seed));
  switch (r.int(6)) {
    case 0: case 1: {
      const [raw, nonFinite] = r.pick(RAW_VALUES);
      const at = key === 'rope_parameters' && r.chance(0.5) ? [key, 'rope_theta'] : [key];
      return { bytes: Buffer.from(withRawValue(seed, at, raw, indent)), what: `${at.join('.')} = ${raw}`, mustRefuse: nonFinite ? 'a number that is not finite' : undefined };
    }
    case 2: return { bytes: Buffer.from(withRawValue(seed, [key], deepJson(r), indent)), what: `${key} nested deep` };
    case 3: {
      const [raw, nonFinite] = r.pick(RAW_VALUES);
      return { bytes: Buffer.from(duplicateKey(text, key, raw)), what: `${key} twice`, mustRefuse: Object.hasOwn(seed, key) || nonFinite ? 'a duplicate key' : undefined };
    }
    case 4: {
      const copy = { ...seed };
      delete copy[key];
      return { bytes: Buffer.from(JSON.stringify(copy, null, indent)), what: `${key} removed` };
    }
    default: return mutateBytes(Buffer.from(text), r);
  }
}

function hfConfigCase(r: Rand, i: number): Outcome {
  const dir = path.join(tmp, `hf-${i}`);
  fs.mkdirSync(dir);
  const file = path.join(dir, 'config.json');
  const asFolder = r.chance(0.01);
  const mut = noted(asFolder ? { bytes: Buffer.alloc(0), what: 'config.json is a folder' } : mutateJsonObject(r.pick(HF_SEEDS), HF_KEYS, r));
  if (asFolder) fs.mkdirSync(file);
  else fs.writeFileSync(file, mut.bytes);
  maxAlloc = 0;
  try {
    const { native } = readHfConfig(dir);
    return {
      mut,
      outcome: refuseOr(mut, () => {
        for (const k of ['vocabSize', 'hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads'] as const) {
          if (!Number.isSafeInteger(native[k]) || native[k] <= 0) fail(`${k} = ${native[k]}`);
        }
        if (!Number.isFinite(native.ropeTheta) || native.ropeTheta < 0 || !Number.isFinite(native.rmsNormEps) || native.rmsNormEps <= 0) fail(`ropeTheta ${native.ropeTheta}, eps ${native.rmsNormEps}`);
        if (native.numLayers <= 1000 && expectedTensors(native).length === 0) fail('no tensors expected');
      }),
    };
  } catch (err) {
    return { mut, outcome: checkError(err, [file]) };
  }
}

// ---- shard indexes ---------------------------------------------------------------------------------------------

interface IndexFolder {
  dir: string;
  index: string;
  weightMap: Record<string, string>;
  /** Names in the folder that are files inside it. */
  good: string[];
  /** Entries that must be refused: outside the folder, with a directory part, or not a file. */
  unsafe: string[];
  /** Where accepted files may lie (the folder; for the HF cache, the repository's blobs/). */
  roots: string[];
}

const INDEX_FOLDERS: IndexFolder[] = (() => {
  const base = path.join(tmp, 'index');
  const st = (file: string, names: string[]) => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    writeSafetensors(file, names.map((name) => ({ name, dtype: 'F32' as const, shape: [2], data: new Float32Array([1, 2]) })));
  };
  // A plain folder of safetensors shards, with traps around it.
  const m = path.join(base, 'm');
  st(path.join(m, 'model-00001-of-00002.safetensors'), ['x', 'y']);
  st(path.join(m, 'model-00002-of-00002.safetensors'), ['z']);
  st(path.join(m, 'sub', 'model-00003.safetensors'), ['w']);
  st(path.join(base, 'outside.safetensors'), ['x', 'y', 'z', 'w']);
  fs.mkdirSync(path.join(m, 'dir.safetensors'));
  fs.symlinkSync('model-00001-of-00002.safetensors', path.join(m, 'link-in.safetensors'));
  fs.symlinkSync('../outside.safetensors', path.join(m, 'link-out.safetensors'));
  fs.symlinkSync(path.join(base, 'outside.safetensors'), path.join(m, 'link-abs.safetensors'));
  // .bin shards, from the fixtures.
  const b = path.join(base, 'b');
  fs.cpSync(path.join(FIX, 'sharded'), b, { recursive: true });
  fs.copyFileSync(path.join(FIX, 'sharded', 'pytorch_model-00001-of-00002.bin'), path.join(base, 'outside.bin'));
  fs.symlinkSync('../outside.bin', path.join(b, 'link-out.bin'));
  const binMap = (JSON.parse(fs.readFileSync(path.join(b, 'pytorch_model.bin.index.json'), 'utf8')) as { weight_map: Record<string, string> }).weight_map;
  // The Hugging Face cache: snapshot files are symlinks into the repository's blobs/.
  const repo = path.join(base, 'hub', 'models--org--tiny');
  const snap = path.join(repo, 'snapshots', 'abc123');
  st(path.join(repo, 'blobs', 'aaaa'), ['x', 'y']);
  st(path.join(repo, 'blobs', 'bbbb'), ['z']);
  st(path.join(base, 'hub', 'models--other--repo', 'blobs', 'cccc'), ['x', 'y']);
  fs.mkdirSync(snap, { recursive: true });
  fs.symlinkSync('../../blobs/aaaa', path.join(snap, 'model-00001-of-00002.safetensors'));
  fs.symlinkSync('../../blobs/bbbb', path.join(snap, 'model-00002-of-00002.safetensors'));
  fs.symlinkSync('../../../models--other--repo/blobs/cccc', path.join(snap, 'link-other-repo.safetensors'));
  const stMap = { x: 'model-00001-of-00002.safetensors', y: 'model-00001-of-00002.safetensors', z: 'model-00002-of-00002.safetensors' };
  const outsideUnsafe = ['../outside.safetensors', path.join(base, 'outside.safetensors'), 'sub/model-00003.safetensors', './model-00001-of-00002.safetensors',
    'sub/../model-00002-of-00002.safetensors', '', '.', '..', 'dir.safetensors', 'link-out.safetensors', 'link-abs.safetensors', 'sub\\model-00003.safetensors'];
  return [
    { dir: m, index: 'model.safetensors.index.json', weightMap: stMap, good: ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'link-in.safetensors'], unsafe: outsideUnsafe, roots: [m] },
    { dir: b, index: 'pytorch_model.bin.index.json', weightMap: binMap, good: ['pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin'], unsafe: ['../outside.bin', 'link-out.bin', path.join(base, 'outside.bin'), '/dev/null', '/proc/self/environ'], roots: [b] },
    { dir: snap, index: 'model.safetensors.index.json', weightMap: stMap, good: ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'], unsafe: ['link-other-repo.safetensors', '../../blobs/aaaa', '../abc123/model-00001-of-00002.safetensors'], roots: [snap, path.join(repo, 'blobs')] },
  ];
})();
const ODD_SHARDS = ['nonexistent.safetensors', 'model-00001-of-00002.safetensors\0', 'x'.repeat(5000), 'C:\\x.safetensors', 'MODEL-00001-OF-00002.SAFETENSORS', '😀.safetensors', ' model-00001-of-00002.safetensors'];
const ODD_VALUES = ['1', 'null', '[]', '{}', 'true', '"model-00001-of-00002.safetensors"', deepJson(rng(1))];

function mutateIndex(f: IndexFolder, r: Rand): Mutated & { map?: Record<string, string> } {
  const map: Record<string, string> = { ...f.weightMap };
  const names = Object.keys(map);
  const what: string[] = [];
  for (let k = 1 + r.int(3); k > 0; k--) {
    const name = r.chance(0.8) ? r.pick(names) : `extra.${k}`;
    const roll = r.int(4);
    const shard = roll === 0 ? r.pick(f.unsafe) : roll === 1 ? r.pick(ODD_SHARDS) : r.pick(f.good);
    map[name] = shard;
    what.push(`${name} -> ${JSON.stringify(shard)}`);
  }
  /** Whether the final map names a shard that must be refused. */
  const unsafe = (m: Record<string, string>): string | undefined => {
    const bad = Object.values(m).find((v) => f.unsafe.includes(v));
    return bad === undefined ? undefined : `weight_map names ${JSON.stringify(bad)}`;
  };
  if (r.chance(0.05)) for (const n of names) delete map[n];
  const doc: Record<string, unknown> = { metadata: r.chance(0.9) ? { total_size: 20 } : r.pick([null, 'x', [], { total_size: 1e308 }]), weight_map: map };
  let text = JSON.stringify(doc, null, r.chance(0.5) ? 2 : undefined);
  switch (r.int(8)) {
    case 0: {
      const key = r.pick(names);
      text = text.replace('"weight_map": {', `"weight_map": {${JSON.stringify(key)}: ${JSON.stringify(f.weightMap[key])},`).replace('"weight_map":{', `"weight_map":{${JSON.stringify(key)}:${JSON.stringify(f.weightMap[key])},`);
      return { bytes: Buffer.from(text), what: [...what, `${key} twice`].join('; '), mustRefuse: 'a tensor mapped twice' };
    }
    case 1: {
      const raw = r.pick(ODD_VALUES);
      const whole = r.chance(0.5);
      const key = r.pick(names);
      const rest = { ...map };
      delete rest[key];
      return { bytes: Buffer.from(withRawValue(doc, whole ? ['weight_map'] : ['weight_map', key], raw)), what: [...what, `a value ${raw.slice(0, 20)}`].join('; '), mustRefuse: whole ? undefined : unsafe(rest) };
    }
    case 2: { // byte damage: what the index then says is not known, only that no error may be of the wrong kind
      const m = mutateBytes(Buffer.from(text), r);
      return { ...m, what: [...what, m.what].join('; ') };
    }
    default:
      return { bytes: Buffer.from(text), what: what.join('; '), mustRefuse: unsafe(map), map };
  }
}

function shardIndexCase(r: Rand, i: number): Outcome {
  const f = r.pick(INDEX_FOLDERS);
  const mut = noted(mutateIndex(f, r));
  const indexFile = path.join(f.dir, f.index);
  fs.writeFileSync(indexFile, mut.bytes);
  const roots = f.roots.map((d) => fs.realpathSync(d) + path.sep);
  maxAlloc = 0;
  try {
    const got = listCheckpointTensors(f.dir);
    return {
      mut,
      outcome: refuseOr(mut, () => {
        for (const s of got) {
          const real = fs.realpathSync(s.file);
          if (!roots.some((root) => real.startsWith(root))) fail(`read ${s.file} (${real}), outside ${f.dir}`);
          if (mut.map && mut.map[s.name] !== undefined && path.join(f.dir, mut.map[s.name]) !== s.file) fail(`${s.name} read from ${s.file}, the index says ${mut.map[s.name]}`);
        }
      }),
    };
  } catch (err) {
    // Only the index or a shard inside the folder may be blamed: an error about a file outside it means it was opened.
    return { mut, outcome: checkError(err, [indexFile, ...f.good.map((g) => path.join(f.dir, g))]) };
  } finally {
    fs.rmSync(indexFile);
  }
}

// ---- C-Eval / MMLU CSV -----------------------------------------------------------------------------------------

const SHARED_CEVAL = path.join(packageRoot, '..', 'shared', 'ceval');
const HEADER_DEV = 'id,question,A,B,C,D,answer,explanation';
const GENERATED_CSV = {
  dev: `${HEADER_DEV}\n0,"甲, 乙 ""丙""",1,2,3,4,A,"1. 第一步\n2. 第二步"\n1,q,a,b,c,d,D,\n`,
  val: 'id,question,A,B,C,D,answer\r\n0,普通问题,a,b,c,d,B\r\n1,"多行\r\n问题",",",""""," ",x,C\r\n',
  test: 'id,question,A,B,C,D\n0,q,a,b,c,d\n',
  mmluDev: 'q1,a,b,c,d,A\n"q, 2",a,b,c,d,B\n',
  mmluTest: '"x ""y""",1,2,3,4,C\n',
};
/** [dev, val] pairs from the real C-Eval folder when it is there. */
export const REAL_CEVAL: [string, string][] = (() => {
  if (!fs.existsSync(path.join(SHARED_CEVAL, 'val'))) return [];
  return fs.readdirSync(path.join(SHARED_CEVAL, 'val')).sort().slice(0, 12).flatMap((f) => {
    const subject = f.replace(/_val\.csv$/, '');
    const dev = path.join(SHARED_CEVAL, 'dev', `${subject}_dev.csv`);
    return fs.existsSync(dev) ? [[fs.readFileSync(dev, 'utf8'), fs.readFileSync(path.join(SHARED_CEVAL, 'val', f), 'utf8')] as [string, string]] : [];
  });
})();

function csvCase(r: Rand): Outcome {
  // One folder per benchmark, its files rewritten each case: creating and removing folders would
  // cost more than the reading.
  const dir = path.join(tmp, 'csv');
  fs.rmSync(path.join(dir, 'subject_mapping.json'), { force: true });
  const benchmark: BenchmarkName = r.chance(0.2) ? 'mmlu' : 'ceval';
  const split = benchmark === 'mmlu' ? 'test' : r.chance(0.2) ? 'test' : 'val';
  const subject = benchmark === 'mmlu' ? 'global_facts' : 'law';
  const [dev, scored] = benchmark === 'mmlu' ? [GENERATED_CSV.mmluDev, GENERATED_CSV.mmluTest]
    : split === 'test' ? [GENERATED_CSV.dev, GENERATED_CSV.test]
    : REAL_CEVAL.length && r.chance(0.5) ? r.pick(REAL_CEVAL) : [GENERATED_CSV.dev, GENERATED_CSV.val];
  const devFile = path.join(dir, 'dev', `${subject}_dev.csv`);
  const scoredFile = path.join(dir, split, `${subject}_${split}.csv`);
  const mapping = path.join(dir, 'subject_mapping.json');
  fs.mkdirSync(path.dirname(devFile), { recursive: true });
  fs.mkdirSync(path.dirname(scoredFile), { recursive: true });
  let mut: Mutated;
  const target = r.int(10);
  if (target === 0 && benchmark === 'ceval') {
    mut = noted(mutateJsonObject({ law: ['Law', '法学', 'Humanities'], art: ['Art', '艺术', 'Humanities'] }, ['law', 'art'], r));
    fs.writeFileSync(mapping, mut.bytes);
    fs.writeFileSync(devFile, dev);
    fs.writeFileSync(scoredFile, scored);
  } else {
    const onDev = target < 5;
    mut = noted(mutateCsv(onDev ? dev : scored, r));
    fs.writeFileSync(devFile, onDev ? mut.bytes : Buffer.from(dev));
    fs.writeFileSync(scoredFile, onDev ? Buffer.from(scored) : mut.bytes);
  }
  const files = [devFile, scoredFile, mapping];
  maxAlloc = 0;
  try {
    const [s] = loadSubjects({ benchmark, dir, split, only: [subject] });
    return {
      mut,
      outcome: refuseOr(mut, () => {
        for (const [q, withAnswer] of [...s.shots.map((q) => [q, true] as const), ...s.questions.map((q) => [q, split !== 'test'] as const)]) {
          if (typeof q.id !== 'string' || typeof q.question !== 'string' || q.options.length !== 4 || !q.options.every((o) => typeof o === 'string')) fail(`malformed question ${JSON.stringify(q).slice(0, 200)}`);
          if (withAnswer && !['A', 'B', 'C', 'D'].includes(q.answer ?? '')) fail(`answer ${q.answer}`);
          if ([q.question, ...q.options].some((t) => t.includes('\ufffd'))) fail('text with a replacement character: bytes that were not UTF-8 were read as text');
        }
      }),
    };
  } catch (err) {
    return { mut, outcome: checkError(err, files, [/^--subjects: "(law|global_facts)" is not one of/]) };
  }
}

// ---- main ------------------------------------------------------------------------------------------------------

interface Outcome {
  mut: Mutated;
  outcome: string;
}

function runCase(kind: Kind, r: Rand, i: number): Outcome {
  switch (kind) {
    case 'safetensors': return safetensorsCase(r, i);
    case 'torch-bin': return torchBinCase(r, i);
    case 'hf-config': return hfConfigCase(r, i);
    case 'shard-index': return shardIndexCase(r, i);
    case 'ceval-csv': return csvCase(r);
    default: // the watchdog's own check: a wrong exception, then a case that never ends
      if (i === 1) (JSON.parse('null') as { a: { b: number } }).a.b++;
      if (i === 2) for (;;);
      return { mut: { bytes: Buffer.alloc(0), what: 'nothing' }, outcome: 'ok' };
  }
}

function main(): void {
  const [kind, seedText, countText, flag, only] = process.argv.slice(2) as [Kind, string, string, string?, string?];
  if (!FILE_KINDS.includes(kind)) throw new Error(`kind must be one of ${FILE_KINDS.join(', ')}`);
  const seed = Number(seedText);
  const first = flag === '--case' ? Number(only) : 0;
  const last = flag === '--case' ? first + 1 : Number(countText);
  const counts: Record<string, number> = {};
  let failures = 0;
  const rssStart = process.memoryUsage().rss;
  let rssPeak = rssStart;
  let worstAlloc = { over: 0, case: -1, bytes: 0, input: 0 };
  for (let i = first; i < last; i++) {
    process.stdout.write(`> ${i}\n`);
    maxAlloc = 0;
    currentWhat = '';
    try {
      const { mut, outcome } = runCase(kind, caseRand(seed, i), i);
      if (maxAlloc > mut.bytes.length + ALLOC_SLACK) fail(`allocated ${maxAlloc} bytes at once for a ${mut.bytes.length}-byte input (${mut.what})`);
      if (maxAlloc - mut.bytes.length > worstAlloc.over) worstAlloc = { over: maxAlloc - mut.bytes.length, case: i, bytes: maxAlloc, input: mut.bytes.length };
      counts[outcome] = (counts[outcome] ?? 0) + 1;
      if (flag === '--case') process.stdout.write(`case ${i}: ${outcome} (${mut.what})\n`);
    } catch (err) {
      counts.UNEXPECTED = (counts.UNEXPECTED ?? 0) + 1;
      if (++failures <= 20) {
        const e = err as Error;
        process.stdout.write(`! ${JSON.stringify({ case: i, kind, what: currentWhat, type: e?.constructor?.name, message: String(e?.message).slice(0, 400), stack: err instanceof Unexpected ? undefined : e?.stack?.split('\n').slice(0, 8).join('\n') })}\n`);
      }
    }
    if (i % 10 === 0) rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  }
  rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  fs.rmSync(tmp, { recursive: true, force: true });
  process.stdout.write(`# ${JSON.stringify({ rssStartMB: Math.round(rssStart / 2 ** 20), rssPeakMB: Math.round(rssPeak / 2 ** 20), worstAlloc, realCeval: REAL_CEVAL.length })}\n`);
  process.stdout.write(`= ${JSON.stringify(counts)}\n`);
}

main();
