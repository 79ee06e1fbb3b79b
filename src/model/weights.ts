// Finds where each checkpoint tensor lives, in the first of these a model folder holds:
// model.safetensors, model.safetensors.index.json (+ shards), pytorch_model.bin, or
// pytorch_model.bin.index.json (+ shards). Only headers (and, for .bin, the pickled tensor list)
// are read; the engine reads the bytes from the returned offsets. An index is data from the download,
// so the shards it names must be files in the model folder: never a path out of it.
import fs from 'node:fs';
import path from 'node:path';
import { SftError } from '../errors.js';
import { JsonSyntaxError, clip, parseJsonObject, showJson } from '../config/json.js';
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
  if (!fs.statSync(modelDir).isDirectory()) throw new SftError(`model folder ${modelDir} is a file, not a folder; give the folder that holds config.json and the weights.`);
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
  const weightMap = readWeightMap(indexFile);
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string') throw new SftError(`${indexFile}: weight_map[${showJson(name)}] must be a file name (got ${showJson(shard)}).`);
    const names = byShard.get(shard);
    if (names) names.push(name); // not a copy per entry: indexes of 100,000 tensors exist
    else byShard.set(shard, [name]);
  }
  const roots = allowedRoots(modelDir);
  for (const [shard, names] of byShard) checkShard(indexFile, modelDir, shard, names, roots);
  const missing = [...byShard.keys()].filter((s) => !fs.existsSync(path.join(modelDir, s)));
  if (missing.length) throw new SftError(`${indexFile} lists shards that are not in ${modelDir}: ${listSome(missing)}. Download them too.`);

  const out: Found[] = [];
  for (const [shard, names] of byShard) {
    const found = read(path.join(modelDir, shard));
    const held = new Set(found.map((t) => t.name));
    const absent = names.filter((n) => !held.has(n));
    if (absent.length) {
      throw new SftError(`${indexFile} maps ${listSome(absent)} to ${clip(shard)}, which does not hold them; the index and shards do not match.`);
    }
    const wanted = new Set(names);
    for (const t of found) if (wanted.has(t.name)) out.push(t);
  }
  return out;
}

function readWeightMap(indexFile: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(indexFile, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SftError(`${indexFile}: cannot read the index (${code === 'EISDIR' ? 'it is a folder' : code ?? (err as Error).message}).`);
  }
  let index: Record<string, unknown>;
  try {
    index = parseJsonObject(text).value;
  } catch (err) {
    if (!(err instanceof JsonSyntaxError)) throw err;
    throw new SftError(`${indexFile}:${err.pos.line}:${err.pos.col}: ${err.invalidJson ? 'not valid JSON: ' : ''}${err.message}`);
  }
  const weightMap = index.weight_map;
  if (weightMap === null || typeof weightMap !== 'object' || Array.isArray(weightMap)) {
    throw new SftError(`${indexFile}: missing the "weight_map" object ({tensor name: shard file}).`);
  }
  return weightMap as Record<string, unknown>;
}

/** Where shards may lie: the model folder, and for a Hugging Face cache snapshot
 *  (<cache>/models--org--name/snapshots/<rev>/, whose files are symlinks to ../../blobs/<hash>)
 *  that repository's blobs/ folder. */
function allowedRoots(modelDir: string): string[] {
  const real = fs.realpathSync(modelDir);
  const snapshots = path.dirname(real);
  const repo = path.dirname(snapshots);
  const roots = [real];
  if (path.basename(snapshots) === 'snapshots' && /^(models|datasets|spaces)--/.test(path.basename(repo))) roots.push(path.join(repo, 'blobs'));
  return roots;
}

const inside = (file: string, root: string) => file === root || file.startsWith(root.endsWith(path.sep) ? root : root + path.sep);

/** A shard an index names must be a plain file name, of a file (or a symlink to one) within `roots`. */
function checkShard(indexFile: string, modelDir: string, shard: string, names: string[], roots: string[]): void {
  const entry = `weight_map[${showJson(names[0], 100)}]${names.length > 1 ? ` (and ${names.length - 1} more)` : ''} is ${showJson(shard, 100)}`;
  const refuse = (why: string): never => {
    throw new SftError(`${indexFile}: ${entry}, ${why}; an index may name only shard files in the model folder ${modelDir}.`);
  };
  if (shard === '' || shard === '.' || shard === '..' || shard.includes('\0')) refuse('which is not a file name in the model folder');
  if (path.isAbsolute(shard) || path.win32.isAbsolute(shard)) refuse('which is not a file name in the model folder (it is an absolute path)');
  if (shard.includes('/') || shard.includes('\\')) refuse('which is not a file name in the model folder (it has a directory part)');
  const file = path.join(modelDir, shard);
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch {
    return; // not there (or a dangling link): reported with the other missing shards
  }
  if (!roots.some((root) => inside(real, root))) refuse(`a symlink to ${clip(real, 200)}, outside the model folder`);
  const stat = fs.statSync(real);
  if (!stat.isFile()) refuse(stat.isDirectory() ? 'which is a folder, not a file' : 'which is not a regular file');
}

/** The first few of `names`, each cut short, and how many more. */
function listSome(names: string[], n = 5): string {
  return names.slice(0, n).map((x) => clip(x)).join(', ') + (names.length > n ? ` and ${names.length - n} more` : '');
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
