// Finds where each checkpoint tensor lives: a single model.safetensors or shards listed by
// model.safetensors.index.json. Only headers are read; the engine reads the bytes from the offsets.
import fs from 'node:fs';
import path from 'node:path';
import { SftError } from '../errors.js';
import type { TensorSource } from '../native/types.js';
import { readSafetensorsHeader, type SafetensorsHeader } from '../io/safetensors.js';

const SINGLE = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';

// One command covers single and sharded .bin checkpoints; clone() because tied weights share storage,
// which save_file refuses.
const CONVERT_BIN =
  `python -c "import glob, torch; from safetensors.torch import save_file; sd = {}; ` +
  `[sd.update(torch.load(f, map_location='cpu')) for f in sorted(glob.glob('pytorch_model*.bin'))]; ` +
  `save_file({k: v.clone().contiguous() for k, v in sd.items()}, 'model.safetensors', metadata={'format': 'pt'})"`;

export function listCheckpointTensors(modelDir: string): TensorSource[] {
  const single = path.join(modelDir, SINGLE);
  if (fs.existsSync(single)) return sourcesOf(single, readSafetensorsHeader(single));
  const index = path.join(modelDir, INDEX);
  if (fs.existsSync(index)) return shardedSources(modelDir, index);

  const names = fs.existsSync(modelDir) ? fs.readdirSync(modelDir) : [];
  if (names.some((n) => /^pytorch_model.*\.bin$/.test(n) || n === 'pytorch_model.bin.index.json')) {
    throw new SftError(
      `${modelDir} holds PyTorch .bin weights; loading .bin comes in a later version of sft. ` +
      `Convert them to safetensors first (needs torch and safetensors; run inside ${modelDir}):\n  ${CONVERT_BIN}`,
    );
  }
  if (!fs.existsSync(modelDir)) throw new SftError(`model folder ${modelDir} not found.`);
  throw new SftError(`${modelDir}: no weights found; expected ${SINGLE} or ${INDEX} (with its shards).`);
}

function shardedSources(modelDir: string, indexFile: string): TensorSource[] {
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

  const out: TensorSource[] = [];
  for (const [shard, names] of byShard) {
    const file = path.join(modelDir, shard);
    const header = readSafetensorsHeader(file);
    const absent = names.filter((n) => !header.tensors.has(n));
    if (absent.length) {
      throw new SftError(`${indexFile} maps ${absent.slice(0, 5).join(', ')}${absent.length > 5 ? ` and ${absent.length - 5} more` : ''} to ${shard}, which does not hold them; the index and shards do not match.`);
    }
    const wanted = new Set(names);
    out.push(...sourcesOf(file, header).filter((s) => wanted.has(s.name)));
  }
  return out;
}

function sourcesOf(file: string, header: SafetensorsHeader): TensorSource[] {
  const out: TensorSource[] = [];
  for (const [name, t] of header.tensors) {
    // Integer buffers some checkpoints carry (e.g. position_ids) are not weights the engine loads.
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') continue;
    out.push({ name, file, offset: header.dataStart + t.begin, dtype: t.dtype, shape: t.shape });
  }
  return out;
}
