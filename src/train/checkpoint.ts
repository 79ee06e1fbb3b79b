// Checkpoints: everything a run needs to continue bit for bit, written atomically.
//
//   checkpoint-N/
//     adapter_config.json, adapter_model.safetensors   the LoRA adapter (PEFT format)
//     optimizer.safetensors                             AdamW moments: <name>.exp_avg, <name>.exp_avg_sq
//     trainer_state.json                                step, data position, loss history, log accumulators
//     sft_config.json, tokenizer files                  the run's resolved config; the tokenizer
//
// A checkpoint is written into checkpoint-N.tmp-<pid>, every file fsynced, then renamed into place, so a
// kill -9 at any moment leaves either the previous checkpoint or the complete new one. Leftover .tmp
// folders of dead runs are removed at the next start.
import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NativeModel, OptimizerState } from '../native/types.js';
import type { TrainConfig } from '../config/schema.js';
import { writeLoraAdapter, readLoraAdapter, writePromptTuningAdapter, readPromptTuningAdapter, PROMPT_EMBEDDINGS } from '../io/peft.js';
import { readSafetensorsHeader, readTensorBytes, readTensorF32, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { RUN_CONFIG_FILE } from '../model/load.js';
import { writeHfModel } from '../model/save.js';
import { listCheckpointTensors } from '../model/weights.js';
import { SftError } from '../errors.js';

export const TRAINER_STATE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'tokenizer.model', 'generation_config.json'];

export interface TrainerState {
  /** Optimizer steps done. */
  global_step: number;
  /** Micro-batches consumed since the start (the data position). */
  micro_batches: number;
  /** Mean loss of every step so far (train_loss and the summary need them). */
  losses: number[];
  /** Loss sum / step count since the last logged line, so logging resumes seamlessly. */
  log_loss_sum: number;
  log_steps: number;
  tokens_seen: number;
  total_steps: number;
}

export interface AdapterConfigInfo {
  baseModel: string;
  r: number;
  loraAlpha: number;
  loraDropout: number;
  targetModules: string[];
  /** Model facts a prompt-tuning adapter_config.json records. */
  numAttentionHeads: number;
  numLayers: number;
}

/** What a run produces (the final output_dir and every checkpoint hold it): the LoRA adapter, or with
 *  train_mode "full" a whole HF model folder; plus tokenizer files and the resolved config. */
export function writeTrainedFiles(dir: string, model: NativeModel, cfg: TrainConfig, adapter: AdapterConfigInfo): void {
  if (cfg.train_mode === 'full') {
    writeHfModel(dir, model, { sourceDir: cfg.model_name_or_path, dtype: 'F32' });
  } else if (cfg.train_mode === 'prompt_tuning') {
    const embeddings = model.getTensor(PROMPT_EMBEDDINGS);
    writePromptTuningAdapter(dir, {
      embeddings,
      config: {
        baseModel: adapter.baseModel, numVirtualTokens: cfg.num_virtual_tokens, tokenDim: embeddings.length / cfg.num_virtual_tokens,
        numAttentionHeads: adapter.numAttentionHeads, numLayers: adapter.numLayers, init: cfg.prompt_tuning_init, initText: cfg.prompt_tuning_init_text,
      },
    });
    copyTokenizerFiles(cfg.model_name_or_path, dir);
  } else {
    const tensors = model.trainableParams().map((p) => ({ name: p.name, shape: p.shape, data: model.getTensor(p.name) }));
    writeLoraAdapter(dir, { tensors, config: adapter });
    copyTokenizerFiles(cfg.model_name_or_path, dir);
  }
  writeFileSync(join(dir, RUN_CONFIG_FILE), JSON.stringify(cfg, null, 2) + '\n');
}

function copyTokenizerFiles(from: string, to: string): void {
  for (const f of TOKENIZER_FILES) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(to, f));
}

/** Write checkpoint-<step> atomically; returns its path. */
export function saveCheckpoint(outputDir: string, model: NativeModel, cfg: TrainConfig, adapter: AdapterConfigInfo, state: TrainerState): string {
  const dir = join(outputDir, `checkpoint-${state.global_step}`);
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    writeCheckpointFiles(tmp, model, cfg, adapter, state);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOSPC' ? 'no space left on the device' : code === 'EDQUOT' ? 'disk quota exceeded' : (err as Error).message;
    const prev = listCheckpoints(outputDir);
    throw new SftError(`could not write ${dir}: ${why}. ${prev.length ? `The previous checkpoint (${prev[prev.length - 1].dir}) is intact; free space and resume with --resume latest.` : 'No checkpoint was written yet.'}`);
  }
  if (existsSync(dir)) {
    // Replacing a checkpoint of the same step (a resumed run saving again): keep the old one until
    // the new one is in place.
    const old = `${dir}.old-${process.pid}`;
    renameSync(dir, old);
    renameSync(tmp, dir);
    rmSync(old, { recursive: true, force: true });
  } else {
    renameSync(tmp, dir);
  }
  fsyncPath(outputDir);
  return dir;
}

function writeCheckpointFiles(tmp: string, model: NativeModel, cfg: TrainConfig, adapter: AdapterConfigInfo, state: TrainerState): void {
  mkdirSync(tmp, { recursive: true });
  writeTrainedFiles(tmp, model, cfg, adapter);
  const opt = model.getOptimizerState();
  const tensors: TensorToWrite[] = opt.tensors.flatMap((t): TensorToWrite[] => {
    if (t.m8 && t.v8 && t.mAbsmax && t.vAbsmax) {  // 8-bit states are saved as they are: resume is exact
      return [
        { name: `${t.name}.exp_avg.q8`, dtype: 'U8', shape: [t.m8.length], data: t.m8 },
        { name: `${t.name}.exp_avg_sq.q8`, dtype: 'U8', shape: [t.v8.length], data: t.v8 },
        { name: `${t.name}.exp_avg.absmax`, dtype: 'F32', shape: [t.mAbsmax.length], data: t.mAbsmax },
        { name: `${t.name}.exp_avg_sq.absmax`, dtype: 'F32', shape: [t.vAbsmax.length], data: t.vAbsmax },
      ];
    }
    return [
      { name: `${t.name}.exp_avg`, dtype: 'F32', shape: [t.m.length], data: t.m },
      { name: `${t.name}.exp_avg_sq`, dtype: 'F32', shape: [t.v.length], data: t.v },
    ];
  });
  writeSafetensors(join(tmp, OPTIMIZER_FILE), tensors, { format: 'pt', step: String(opt.step) });
  writeFileSync(join(tmp, TRAINER_STATE), JSON.stringify(state) + '\n');
  for (const f of readdirSync(tmp)) fsyncPath(join(tmp, f));
  fsyncPath(tmp);
}

/** checkpoint-N folders in output_dir, oldest first (complete ones only: .tmp folders are ignored). */
export function listCheckpoints(outputDir: string): { dir: string; step: number }[] {
  if (!existsSync(outputDir)) return [];
  return readdirSync(outputDir)
    .map((d) => /^checkpoint-(\d+)$/.exec(d))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ dir: join(outputDir, m[0]), step: Number(m[1]) }))
    .filter((c) => existsSync(join(c.dir, TRAINER_STATE)))
    .sort((a, b) => a.step - b.step);
}

/** Keep the newest `limit` checkpoints (the one just written is always the newest). */
export function rotateCheckpoints(outputDir: string, limit: number | null): void {
  if (!limit || limit <= 0) return;
  const cps = listCheckpoints(outputDir);
  for (const c of cps.slice(0, Math.max(0, cps.length - limit))) rmSync(c.dir, { recursive: true, force: true });
}

/** Remove half-written checkpoints left by a killed run. */
export function removeStaleTemporaries(outputDir: string): void {
  if (!existsSync(outputDir)) return;
  for (const d of readdirSync(outputDir)) if (/^checkpoint-\d+\.(tmp|old)-\d+$/.test(d)) rmSync(join(outputDir, d), { recursive: true, force: true });
}

/** `latest`, `checkpoint-N` (in output_dir) or a folder path -> the checkpoint folder. */
export function resolveCheckpoint(outputDir: string, which: string): string {
  if (which === 'latest' || which === '') {
    const cps = listCheckpoints(outputDir);
    if (!cps.length) throw new SftError(`--resume latest: ${outputDir} holds no complete checkpoint-N folder to resume from`);
    return cps[cps.length - 1].dir;
  }
  const dir = existsSync(which) ? which : join(outputDir, which);
  if (!existsSync(join(dir, TRAINER_STATE))) {
    const have = listCheckpoints(outputDir).map((c) => `checkpoint-${c.step}`);
    throw new SftError(`--resume ${which}: ${dir} is not a complete checkpoint (no ${TRAINER_STATE})${have.length ? `; available: ${have.join(', ')}` : ''}`);
  }
  return dir;
}

/** Keys whose change would make a resumed run a different run. */
const MUST_MATCH: (keyof TrainConfig)[] = [
  'model_name_or_path', 'train_file', 'template_name', 'max_seq_length', 'per_device_train_batch_size', 'gradient_accumulation_steps',
  'seed', 'train_mode', 'bits', 'lora_rank', 'lora_alpha', 'lora_dropout', 'lora_target_modules', 'num_virtual_tokens',
];

export interface ResumePoint {
  state: TrainerState;
  dir: string;
}

/** Load a checkpoint into a model set up for training (fresh adapters attached, or base trainable). */
export async function loadCheckpoint(dir: string, model: NativeModel, cfg: TrainConfig): Promise<ResumePoint> {
  const savedCfg = JSON.parse(readFileSync(join(dir, RUN_CONFIG_FILE), 'utf8')) as Record<string, unknown>;
  const changed = MUST_MATCH.filter((k) => JSON.stringify(savedCfg[k]) !== JSON.stringify(cfg[k]));
  if (changed.length) {
    throw new SftError(`--resume ${dir}: the checkpoint was trained with different ${changed.map((k) => `${k} (${JSON.stringify(savedCfg[k])} -> ${JSON.stringify(cfg[k])})`).join(', ')}; resume with the same settings or start a new output_dir`);
  }
  if (cfg.train_mode === 'full') {
    await model.loadWeights(listCheckpointTensors(dir));
  } else if (cfg.train_mode === 'prompt_tuning') {
    model.setTensor(PROMPT_EMBEDDINGS, readPromptTuningAdapter(dir).embeddings);
  } else {
    const { tensors } = readLoraAdapter(dir);
    const want = new Set(model.trainableParams().map((p) => p.name));
    for (const t of tensors) {
      if (!want.delete(t.name)) throw new SftError(`${dir}: adapter tensor "${t.name}" is not part of this run's adapters`);
      model.setTensor(t.name, t.data);
    }
    if (want.size) throw new SftError(`${dir}: the checkpoint lacks ${want.size} adapter tensor(s), e.g. ${[...want][0]}`);
  }
  const file = join(dir, OPTIMIZER_FILE);
  const h = readSafetensorsHeader(file);
  const step = Number(h.metadata?.step ?? NaN);
  if (!Number.isInteger(step)) throw new SftError(`${file}: no optimizer step in its metadata`);
  const opt: OptimizerState = {
    step,
    tensors: model.trainableParams().map((p) => {
      const has = (suffix: string) => h.tensors.has(`${p.name}.${suffix}`);
      const get = (suffix: string) => (has(suffix) ? readTensorF32(file, h, `${p.name}.${suffix}`) : new Float32Array(0));
      if (has('exp_avg.q8')) {
        return {
          name: p.name, m: new Float32Array(0), v: new Float32Array(0),
          m8: readTensorBytes(file, h, `${p.name}.exp_avg.q8`), v8: readTensorBytes(file, h, `${p.name}.exp_avg_sq.q8`),
          mAbsmax: get('exp_avg.absmax'), vAbsmax: get('exp_avg_sq.absmax'),
        };
      }
      return { name: p.name, m: get('exp_avg'), v: get('exp_avg_sq') };
    }),
  };
  model.setOptimizerState(opt);
  const state = JSON.parse(readFileSync(join(dir, TRAINER_STATE), 'utf8')) as TrainerState;
  return { state, dir };
}

function fsyncPath(p: string): void {
  const fd = openSync(p, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
