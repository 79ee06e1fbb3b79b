// Checkpoints: everything a run needs to continue bit for bit, written atomically and provable.
//
//   checkpoint-N/
//     adapter_config.json, adapter_model.safetensors   the LoRA adapter (PEFT format)
//     optimizer.safetensors                             AdamW moments: <name>.exp_avg, <name>.exp_avg_sq
//     trainer_state.json                                step, data position, loss history, log accumulators,
//                                                       fp16's loss scale
//     sft_config.json, tokenizer files                  the run's resolved config; the tokenizer
//     sft_manifest.json                                 size + SHA-256 of each file above (written last)
//
// A checkpoint is written into checkpoint-N.tmp-<pid>, every file fsynced, then renamed into place, so a
// kill -9 at any moment leaves either the previous checkpoint or the complete new one. Leftover .tmp
// folders of dead runs are removed at the next start. The final outputs go through a staging folder
// the same way (src/io/atomic.ts). Reading a checkpoint back, with every check, is src/train/resume.ts.
import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { NativeModel, OptimizerState } from '../native/types.js';
import type { TrainConfig } from '../config/schema.js';
import { writeLoraAdapter, writePromptTuningAdapter, PROMPT_EMBEDDINGS } from '../io/peft.js';
import { writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { fsyncPath, removeStagingLeftovers, writeError, writeFileNamed, writeFolderFiles } from '../io/atomic.js';
import { RUN_CONFIG_FILE } from '../model/load.js';
import { WEIGHT_FILE, hfModelBytes, writeHfModel } from '../model/save.js';
import { writeManifest } from './manifest.js';
import { SftError } from '../errors.js';
import type { LossScalerState } from './loss-scaler.js';

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
  /** HF's best-model tracking: the best eval metric so far and the step that reached it ... */
  best_metric: number | null;
  best_global_step: number | null;
  /** ... and the checkpoint that holds it: the best step's, once saved (else the previous best's). */
  best_model_checkpoint: string | null;
  /** The last step evaluated (0: none): a run stopped during an evaluation redoes it on resume. */
  last_eval_step: number;
  /** fp16's dynamic loss scale (null: the run does not scale), as accelerate saves GradScaler's state. */
  grad_scaler: LossScalerState | null;
  /** Data-parallel ranks the run trains on (1 in checkpoints of an sft before issue 16): every step's
   *  global batch is per_device_train_batch_size x gradient_accumulation_steps x world_size. */
  world_size: number;
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
 *  train_mode "full" a whole HF model folder; plus tokenizer files and the resolved config. Written
 *  into `dir` directly (a staging or temporary folder). Non-finite weights are never written. */
export function writeTrainedFiles(dir: string, model: NativeModel, cfg: TrainConfig, adapter: AdapterConfigInfo): void {
  if (cfg.train_mode === 'full') {
    writeHfModel(dir, model, { sourceDir: cfg.model_name_or_path, dtype: 'F32', check: requireFinite });
  } else if (cfg.train_mode === 'prompt_tuning') {
    const embeddings = requireFinite(PROMPT_EMBEDDINGS, model.getTensor(PROMPT_EMBEDDINGS));
    writePromptTuningAdapter(dir, {
      embeddings,
      config: {
        baseModel: adapter.baseModel, numVirtualTokens: cfg.num_virtual_tokens, tokenDim: embeddings.length / cfg.num_virtual_tokens,
        numAttentionHeads: adapter.numAttentionHeads, numLayers: adapter.numLayers, init: cfg.prompt_tuning_init, initText: cfg.prompt_tuning_init_text,
      },
    });
    copyTokenizerFiles(cfg.model_name_or_path, dir);
  } else {
    const tensors = model.trainableParams().map((p) => ({ name: p.name, shape: p.shape, data: requireFinite(p.name, model.getTensor(p.name)) }));
    writeLoraAdapter(dir, { tensors, config: adapter });
    copyTokenizerFiles(cfg.model_name_or_path, dir);
  }
  writeFileNamed(join(dir, RUN_CONFIG_FILE), JSON.stringify(cfg, null, 2) + '\n');
}

/** The saved result is checked, not only each update: a NaN or infinity never reaches a file. */
function requireFinite(name: string, data: Float32Array): Float32Array {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      throw new SftError(`the trained tensor ${name} holds ${data[i]} at element ${i}: training diverged, and the result was not saved. Lower learning_rate (or raise adam_epsilon) and train again; checkpoints written before are as they were.`);
    }
  }
  return data;
}

/** Bytes the trained files take (for the message when the disk is full). */
function trainedBytes(model: NativeModel, cfg: TrainConfig): number {
  if (cfg.train_mode === 'full') return hfModelBytes(model, 'F32');
  return model.trainableParams().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0) * 4 + (1 << 20);
}

/** The final output: the trained files written into output_dir as one unit (staged, then renamed
 *  into place), with their manifest; an earlier output's weight files that this one does not write
 *  again are removed, so the loader cannot pick them up. */
export function saveFinalOutput(outputDir: string, model: NativeModel, cfg: TrainConfig, adapter: AdapterConfigInfo): void {
  writeFolderFiles(
    outputDir,
    (staging) => {
      writeTrainedFiles(staging, model, cfg, adapter);
      writeManifest(staging);
    },
    { bytesNeeded: trainedBytes(model, cfg), replaces: (name) => WEIGHT_FILE.test(name) },
  );
}

function copyTokenizerFiles(from: string, to: string): void {
  for (const f of TOKENIZER_FILES) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(to, f));
}

/** Write checkpoint-<step> atomically; returns its path. */
export function saveCheckpoint(outputDir: string, model: NativeModel, cfg: TrainConfig, adapter: AdapterConfigInfo, state: TrainerState, optimizer?: OptimizerState): string {
  const dir = join(outputDir, `checkpoint-${state.global_step}`);
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    writeCheckpointFiles(tmp, model, cfg, adapter, state, optimizer);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    const path = (err as { path?: unknown }).path;
    const file = typeof path === 'string' && path.startsWith(tmp) ? join(dir, path.slice(tmp.length + 1)) : dir;
    const why = writeError(file, err, trainedBytes(model, cfg) * 3).message;
    const prev = listCheckpoints(outputDir);
    throw new SftError(`${why} The checkpoint ${dir} was not written. ${prev.length ? `The previous checkpoint (${prev[prev.length - 1].dir}) is intact; free space and resume with --resume latest.` : 'No checkpoint was written yet.'}`);
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

/** `optimizer`: the state already gathered (ZeRO-1, where gathering is a collective of every rank). */
function writeCheckpointFiles(tmp: string, model: NativeModel, cfg: TrainConfig, adapter: AdapterConfigInfo, state: TrainerState, optimizer?: OptimizerState): void {
  mkdirSync(tmp, { recursive: true });
  writeTrainedFiles(tmp, model, cfg, adapter);
  const opt = optimizer ?? model.getOptimizerState();
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
  writeFileNamed(join(tmp, TRAINER_STATE), JSON.stringify(state) + '\n');
  writeManifest(tmp);
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

/** Keep at most `limit` checkpoints, oldest removed first, never the newest (the one just written)
 *  nor the best one: HF's rotate_checkpoints (with a best checkpoint and limit 1, two remain). */
export function rotateCheckpoints(outputDir: string, limit: number | null, best: string | null = null): void {
  if (!limit || limit <= 0) return;
  const cps = listCheckpoints(outputDir);
  if (cps.length <= limit) return;
  const isBest = (dir: string) => best !== null && resolve(dir) === resolve(best);
  const keep = Math.max(limit, cps.some((c) => isBest(c.dir)) && !isBest(cps[cps.length - 1].dir) ? 2 : 1);
  let remaining = cps.length;
  for (const c of cps.slice(0, -1)) {
    if (remaining <= keep) break;
    if (isBest(c.dir)) continue;
    rmSync(c.dir, { recursive: true, force: true });
    remaining--;
  }
}

/** Remove half-written checkpoints left by a killed run. */
export function removeStaleTemporaries(outputDir: string): void {
  if (!existsSync(outputDir)) return;
  for (const d of readdirSync(outputDir)) if (/^checkpoint-\d+\.(tmp|old)-\d+$/.test(d)) rmSync(join(outputDir, d), { recursive: true, force: true });
  removeStagingLeftovers(outputDir);
}

/** `latest`, `checkpoint-N` (in output_dir) or a folder path -> the checkpoint folder. */
export function resolveCheckpoint(outputDir: string, which: string): string {
  if (which === 'latest' || which === '') {
    // The newest checkpoint-N folder, complete or not: a damaged newest checkpoint is reported (and
    // the previous good one offered) rather than silently passed over for an older one.
    const cps = existsSync(outputDir)
      ? readdirSync(outputDir).map((d) => /^checkpoint-(\d+)$/.exec(d)).filter((m): m is RegExpExecArray => m !== null).map((m) => ({ dir: join(outputDir, m[0]), step: Number(m[1]) })).sort((a, b) => a.step - b.step)
      : [];
    if (!cps.length) throw new SftError(`--resume latest: ${outputDir} holds no checkpoint-N folder to resume from`);
    return cps[cps.length - 1].dir;
  }
  const dir = existsSync(which) ? which : join(outputDir, which);
  if (!existsSync(dir)) {
    const have = listCheckpoints(outputDir).map((c) => `checkpoint-${c.step}`);
    throw new SftError(`--resume ${which}: no checkpoint ${dir}${have.length ? `; available: ${have.join(', ')}` : ''}`);
  }
  return dir;  // what it holds is checked next (src/train/resume.ts)
}

