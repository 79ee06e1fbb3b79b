// Finds where each checkpoint tensor lives, in the first of these a model folder holds:
// model.safetensors, model.safetensors.index.json (+ shards), pytorch_model.bin, or
// pytorch_model.bin.index.json (+ shards). Only headers (and, for .bin, the pickled tensor list)
// are read; the engine reads the bytes from the returned offsets.
import fs from 'node:fs';
import path from 'node:path';
import { SftError } from '../errors.js';
import type { TensorSource } from '../native/types.js';
import { readSafetensorsHeader, type SafetensorsDtype } from '../io/safetensors.js';
import { readTorchBin } from '../io/torch-bin.js';

/** A tensor as a checkpoint file lists it, before choosing what the engine loads. */
interface Found {
  name: string;
  file: string;
  offset: number;
  dtype: SafetensorsDtype;
  shape: number[];
}

type FileReader = (file: string) => Found[];

const readSafetensors: FileReader = (file) => {
  const header = readSafetensorsHeader(file);
  return [...header.tensors].map(([name, t]) => ({ name, file, offset: header.dataStart + t.begin, dtype: t.dtype, shape: t.shape }));
};

const readBin: FileReader = (file) => readTorchBin(file).map((t) => ({ ...t, file }));

// In order of preference: safetensors never runs a pickle, so it wins when a folder holds both.
const LAYOUTS: { single: string; index: string; read: FileReader }[] = [
  { single: 'model.safetensors', index: 'model.safetensors.index.json', read: readSafetensors },
  { single: 'pytorch_model.bin', index: 'pytorch_model.bin.index.json', read: readBin },
];

export function listCheckpointTensors(modelDir: string): TensorSource[] {
  if (!fs.existsSync(modelDir)) throw new SftError(`model folder ${modelDir} not found.`);
  for (const { single, index, read } of LAYOUTS) {
    const file = path.join(modelDir, single);
    if (fs.existsSync(file)) return weightsOnly(read(file));
    const indexFile = path.join(modelDir, index);
    if (fs.existsSync(indexFile)) return weightsOnly(shardedTensors(modelDir, indexFile, read));
  }
  const shard = fs.readdirSync(modelDir).find((n) => /^(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)$/.test(n));
  if (shard) {
    const index = shard.endsWith('.bin') ? 'pytorch_model.bin.index.json' : 'model.safetensors.index.json';
    throw new SftError(`${modelDir} holds shard ${shard} but not ${index}, which says which tensor is in which shard; download it too.`);
  }
  throw new SftError(`${modelDir}: no weights found; expected ${LAYOUTS.flatMap((l) => [l.single, l.index]).join(', ')} (an index with its shards).`);
}

function shardedTensors(modelDir: string, indexFile: string, read: FileReader): Found[] {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
  } catch (err) {
    throw new SftError(`${indexFile}: not valid JSON (${(err as Error).message}).`);
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
    throw new SftError(`${indexFile}: missing the "weight_map" object ({tensor name: shard file}).`);
  }
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string') throw new SftError(`${indexFile}: weight_map["${name}"] must be a file name.`);
    byShard.set(shard, [...(byShard.get(shard) ?? []), name]);
  }
  const missing = [...byShard.keys()].filter((s) => !fs.existsSync(path.join(modelDir, s)));
  if (missing.length) throw new SftError(`${indexFile} lists shards that are not in ${modelDir}: ${missing.join(', ')}. Download them too.`);

  const out: Found[] = [];
  for (const [shard, names] of byShard) {
    const found = read(path.join(modelDir, shard));
    const held = new Set(found.map((t) => t.name));
    const absent = names.filter((n) => !held.has(n));
    if (absent.length) {
      throw new SftError(`${indexFile} maps ${absent.slice(0, 5).join(', ')}${absent.length > 5 ? ` and ${absent.length - 5} more` : ''} to ${shard}, which does not hold them; the index and shards do not match.`);
    }
    const wanted = new Set(names);
    out.push(...found.filter((t) => wanted.has(t.name)));
  }
  return out;
}

// Integer and bool tensors are buffers (position ids, masks), not weights: skipped. I8 is the
// exception: int8 weights mean a quantized checkpoint, which skipping would only turn into a
// confusing "missing tensor" error later.
const BUFFER_DTYPES = new Set<SafetensorsDtype>(['BOOL', 'U8', 'I16', 'U16', 'I32', 'U32', 'I64', 'U64']);

function weightsOnly(found: Found[]): TensorSource[] {
  const out: TensorSource[] = [];
  for (const { name, file, offset, dtype, shape } of found) {
    if (dtype === 'F32' || dtype === 'F16' || dtype === 'BF16') out.push({ name, file, offset, dtype, shape });
    else if (!BUFFER_DTYPES.has(dtype)) {
      const hint = dtype === 'I8' || dtype.startsWith('F8') ? ' (a quantized checkpoint? use the unquantized weights)' : '';
      throw new SftError(`${file}: tensor "${name}" is ${dtype}; sft reads F32, F16 and BF16 weights${hint}. Convert the checkpoint, e.g. to float16.`);
    }
  }
  return out;
}
