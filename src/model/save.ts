// Writes the engine's base weights as a Hugging Face model folder that transformers loads:
// config.json (from the source model, torch_dtype updated), model.safetensors or shards with
// model.safetensors.index.json, and the tokenizer/generation files. Used by `sft merge` and by
// full fine-tuning's outputs.
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NativeModel } from '../native/types.js';
import { writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { f32ArrayToBf16, f32ArrayToF16 } from '../io/float16.js';
import { writeFileNamed } from '../io/atomic.js';
import { SftError } from '../errors.js';

export type SaveDtype = 'F32' | 'F16' | 'BF16';

const SIDE_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model', 'generation_config.json', 'chat_template.jinja'];
const TORCH_DTYPE: Record<SaveDtype, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

export interface SaveOptions {
  /** The folder the model was loaded from: its config.json and tokenizer files are carried over. */
  sourceDir: string;
  dtype: SaveDtype;
  /** Largest shard in bytes (transformers' default max_shard_size is 5 GB). */
  maxShardBytes?: number;
  /** Sees each tensor before it is written (full fine-tuning refuses non-finite weights). */
  check?: (name: string, data: Float32Array) => Float32Array;
  /** Jinja chat_template for the written folder (tokenizer_config.json "chat_template", and
   *  chat_template.jinja when the source has one, which transformers reads first); default: the source's. */
  chatTemplate?: string;
}

/** Weight files of a model or adapter folder: what a new write into the folder replaces, so that
 *  no shard of an earlier model is left for the loader to read. */
export const WEIGHT_FILE = /^(?:(?:model|pytorch_model)(?:-\d+-of-\d+)?\.(?:safetensors|bin)|(?:model\.safetensors|pytorch_model\.bin)\.index\.json|adapter_model\.(?:safetensors|bin)|adapter_config\.json)$/;

/** Bytes the weights of `model` take on disk in `dtype` (for the message when the disk is full). */
export function hfModelBytes(model: NativeModel, dtype: SaveDtype): number {
  return model.baseParams().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0) * (dtype === 'F32' ? 4 : 2);
}

/** Writes the folder's files into `dir` directly: callers write into a staging folder
 *  (src/io/atomic.ts) so that a failed write changes nothing. */
/** tokenizer_config.json with `template` as its chat_template (the source's keys kept; a new file
 *  when the source has none), and chat_template.jinja replaced when the source carries one. */
function writeChatTemplate(dir: string, sourceDir: string, template: string): void {
  const file = join(sourceDir, 'tokenizer_config.json');
  let config: Record<string, unknown> = {};
  if (existsSync(file)) {
    try {
      config = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new SftError(`${file}: not valid JSON (${(err as Error).message}); cannot write the chat_template into it`);
    }
  }
  config.chat_template = template;
  writeFileNamed(join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2) + '\n');
  if (existsSync(join(sourceDir, 'chat_template.jinja'))) writeFileNamed(join(dir, 'chat_template.jinja'), template);
}

export function writeHfModel(dir: string, model: NativeModel, opts: SaveOptions): { files: string[]; bytes: number } {
  mkdirSync(dir, { recursive: true });
  const cfgFile = join(opts.sourceDir, 'config.json');
  if (!existsSync(cfgFile)) throw new SftError(`${cfgFile} not found: cannot write a model folder without the source config`);
  const config = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
  config.torch_dtype = TORCH_DTYPE[opts.dtype];
  writeFileNamed(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  for (const f of SIDE_FILES) if (existsSync(join(opts.sourceDir, f))) copyFileSync(join(opts.sourceDir, f), join(dir, f));
  if (opts.chatTemplate !== undefined) writeChatTemplate(dir, opts.sourceDir, opts.chatTemplate);

  const elem = opts.dtype === 'F32' ? 4 : 2;
  const maxShard = opts.maxShardBytes ?? 5e9;
  const params = model.baseParams();
  // Group tensors into shards in checkpoint order, each under maxShard bytes (one tensor may exceed it).
  const shards: { name: string; shape: number[] }[][] = [[]];
  let size = 0, total = 0;
  for (const p of params) {
    const bytes = p.shape.reduce((a, b) => a * b, 1) * elem;
    if (size > 0 && size + bytes > maxShard) shards.push([]), (size = 0);
    shards[shards.length - 1].push(p);
    size += bytes;
    total += bytes;
  }
  const files = shards.length === 1 ? ['model.safetensors'] : shards.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`);
  const weightMap: Record<string, string> = {};
  shards.forEach((group, i) => {
    const tensors: TensorToWrite[] = group.map((p) => {
      const data = opts.check ? opts.check(p.name, model.getTensor(p.name)) : model.getTensor(p.name);
      return { name: p.name, shape: p.shape, dtype: opts.dtype, data: opts.dtype === 'F32' ? data : opts.dtype === 'F16' ? f32ArrayToF16(data) : f32ArrayToBf16(data) };
    });
    writeSafetensors(join(dir, files[i]), tensors, { format: 'pt' });
    for (const p of group) weightMap[p.name] = files[i];
  });
  if (files.length > 1) {
    writeFileNamed(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n');
  }
  return { files, bytes: total };
}
