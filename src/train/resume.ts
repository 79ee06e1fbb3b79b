// Reading a checkpoint back (--resume) and proving one (`sft verify`). Nothing is trusted: the
// manifest's checksums first, then every file against its schema, the run's config and the other
// files — trainer_state.json, sft_config.json, the adapter (or model), optimizer.safetensors — all
// read into memory before anything changes. Only a checkpoint that passed is applied to the model,
// so a resume is never half-applied; one that fails is named with the file and the reason, and the
// newest earlier checkpoint that passes is offered.
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { NativeModel, OptimizerState } from '../native/types.js';
import { isEightBitOptim, type TrainConfig } from '../config/schema.js';
import { configFromObject } from '../config/loader.js';
import { JsonSyntaxError, clip, parseJsonObject, showJson } from '../config/json.js';
import { ADAPTER_CONFIG, PROMPT_EMBEDDINGS, adapterType, readLoraAdapter, readPromptTuningAdapter } from '../io/peft.js';
import { numel, readSafetensorsHeader, readTensorBytes, readTensorF32 } from '../io/safetensors.js';
import { RUN_CONFIG_FILE } from '../model/load.js';
import { listCheckpointTensors } from '../model/weights.js';
import { OPTIMIZER_FILE, TRAINER_STATE, listCheckpoints, type TrainerState } from './checkpoint.js';
import type { LossScalerState } from './loss-scaler.js';
import { MANIFEST, verifyManifest } from './manifest.js';
import { SftError } from '../errors.js';

/** Keys whose change would make a resumed run a different run. */
const MUST_MATCH: (keyof TrainConfig)[] = [
  'model_name_or_path', 'train_file', 'template_name', 'max_seq_length', 'per_device_train_batch_size', 'gradient_accumulation_steps',
  'seed', 'train_mode', 'bits', 'lora_rank', 'lora_alpha', 'lora_dropout', 'lora_target_modules', 'num_virtual_tokens',
];

/** What the run resuming needs the checkpoint to hold. */
export interface RunShape {
  /** The run's trainable tensors: the checkpoint holds each, and its optimizer moments. */
  trainable: { name: string; shape: number[] }[];
  /** The model's base tensors (HF names): what a full fine-tuning checkpoint's model folder holds. */
  base: { name: string; shape: number[] }[];
  /** The run's total steps: a checkpoint beyond them cannot continue it. */
  totalSteps: number;
}

export interface CheckedCheckpoint {
  dir: string;
  state: TrainerState;
  /** Files whose checksums were verified, or 'missing' (a checkpoint of an sft before manifests). */
  verified: number | 'missing' | 'skipped';
  /** The trained tensors, read (LoRA, prompt tuning); full fine-tuning reads its model folder on apply. */
  tensors: { name: string; data: Float32Array }[] | 'model-folder';
  optimizer: OptimizerState;
}

/** Values per absmax in bitsandbytes' blockwise 8-bit states (the engine's block). */
const Q8_BLOCK = 256;

/**
 * Checks checkpoint `dir` completely and reads it. `cfg`: the run resuming (its keys must match
 * the checkpoint's); without it (`sft verify`), the checkpoint's own config. `run`: the resuming
 * model's trainable tensors and steps; without it, what the checkpoint's files say of each other.
 */
export function checkCheckpoint(dir: string, cfg?: TrainConfig, run?: RunShape, opts: { hashes?: boolean; moments?: boolean } = {}): CheckedCheckpoint {
  if (!existsSync(dir)) throw new SftError(`${dir}: no such checkpoint folder`);
  const verified = opts.hashes === false ? 'skipped' : verifyManifest(dir);
  const saved = readSavedConfig(join(dir, RUN_CONFIG_FILE));
  const runCfg = cfg ?? saved;
  if (cfg) {
    const changed = MUST_MATCH.filter((k) => JSON.stringify(saved[k]) !== JSON.stringify(cfg[k]));
    if (changed.length) {
      throw new SftError(`--resume ${dir}: the checkpoint was trained with different ${changed.map((k) => `${k} (${clip(JSON.stringify(saved[k]) ?? 'unset')} -> ${clip(JSON.stringify(cfg[k]))})`).join(', ')}; resume with the same settings or start a new output_dir`);
    }
  }
  const stepOfDir = /^checkpoint-(\d+)$/.exec(basename(dir));
  const state = checkTrainerState(join(dir, TRAINER_STATE), readJson(join(dir, TRAINER_STATE)), {
    step: stepOfDir ? Number(stepOfDir[1]) : undefined,
    accum: runCfg.gradient_accumulation_steps,
    totalSteps: run?.totalSteps,
  });
  const { tensors, trainable } = readTrained(dir, runCfg, run);
  // fp16's skipped steps made no AdamW step: the optimizer is that many steps behind global_step.
  const skipped = state.grad_scaler?.skipped_steps ?? 0;
  const optimizer = readOptimizer(join(dir, OPTIMIZER_FILE), trainable, state.global_step - skipped, skipped, isEightBitOptim(runCfg.optim), runCfg.optim, opts.moments !== false);
  return { dir, state, verified, tensors, optimizer };
}

/** Puts a checked checkpoint into a model set up for training (fresh adapters, or base trainable). */
export async function applyCheckpoint(c: CheckedCheckpoint, model: NativeModel): Promise<TrainerState> {
  await applyTrained(c, model);
  model.setOptimizerState(c.optimizer);
  return c.state;
}

/** Only the trained weights of a checked checkpoint (load_best_model_at_end). */
export async function applyTrained(c: CheckedCheckpoint, model: NativeModel): Promise<void> {
  if (c.tensors === 'model-folder') await model.loadWeights(listCheckpointTensors(c.dir));
  else for (const t of c.tensors) model.setTensor(t.name, t.data);
}

/** The error for a checkpoint that failed its checks: the reason, and the newest earlier
 *  checkpoint in the same output_dir that passes (checked the same way), or that there is none. */
export function resumeFailure(dir: string, err: unknown, cfg?: TrainConfig, run?: RunShape): Error {
  if (!(err instanceof SftError)) return err as Error;
  const m = /^checkpoint-(\d+)$/.exec(basename(dir));
  const older = listCheckpoints(dirname(dir)).filter((c) => !m || c.step < Number(m[1])).reverse();
  let offer = 'No earlier checkpoint in that folder passes these checks.';
  for (const c of older) {
    try {
      checkCheckpoint(c.dir, cfg, run);
      offer = `The newest earlier checkpoint that passes every check is ${c.dir}: resume from it with --resume ${basename(c.dir)}.`;
      break;
    } catch {
      // Damaged as well: try the one before.
    }
  }
  return new SftError(`cannot resume from ${dir}: ${err.message}. Nothing was changed. ${offer}`);
}

// ---- each file ---------------------------------------------------------------------------------

function readJson(file: string): Record<string, unknown> {
  if (!existsSync(file)) throw new SftError(`${file} is missing: the checkpoint is incomplete`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new SftError(`${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  try {
    return parseJsonObject(text).value;
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new SftError(`${file}:${err.pos.line}:${err.pos.col}: ${err.invalidJson ? 'not valid JSON: ' : ''}${err.message} (the file is damaged or truncated)`);
    throw err;
  }
}

/** sft_config.json is a whole resolved config: it must pass the same checks as the user's. */
function readSavedConfig(file: string): TrainConfig {
  const obj = readJson(file);
  try {
    return configFromObject(obj, [], file).config;
  } catch (err) {
    if (err instanceof SftError) throw new SftError(`${err.message} (in the checkpoint's saved config)`);
    throw err;
  }
}

/** trainer_state.json against its schema and against the checkpoint: the step in the folder's name,
 *  one accumulation group of micro-batches per step, one loss per step, and the run's length. */
export function checkTrainerState(file: string, v: Record<string, unknown>, expect: { step?: number; accum: number; totalSteps?: number }): TrainerState {
  const bad = (key: string, want: string) => new SftError(`${file}: "${key}" is ${key in v ? showJson(v[key]) : 'missing'}; expected ${want} (the checkpoint is damaged or was edited)`);
  const int = (key: string, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const x = v[key];
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < min || x > max) throw bad(key, max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`);
    return x;
  };
  const KNOWN = ['global_step', 'micro_batches', 'losses', 'log_loss_sum', 'log_steps', 'tokens_seen', 'total_steps', 'best_metric', 'best_global_step', 'best_model_checkpoint', 'last_eval_step', 'grad_scaler', 'world_size'];
  const unknown = Object.keys(v).filter((k) => !KNOWN.includes(k));
  if (unknown.length) throw new SftError(`${file}: unknown key ${clip(JSON.stringify(unknown[0]))}: not a trainer state this sft wrote`);
  const step = int('global_step', 0);  // 0: stopped inside the first step (nothing trained yet)
  if (expect.step !== undefined && step !== expect.step) throw bad('global_step', `${expect.step}, the step in the folder's name`);
  if (expect.totalSteps !== undefined && step > expect.totalSteps) {
    throw new SftError(`${file}: the checkpoint is at step ${step}, but this run has ${expect.totalSteps} steps in all (max_steps / num_train_epochs): raise them to continue it, or resume an earlier checkpoint`);
  }
  const micro = int('micro_batches', 0);
  if (micro !== step * expect.accum) throw bad('micro_batches', `${step * expect.accum} (global_step ${step} x gradient_accumulation_steps ${expect.accum})`);
  const losses = v.losses;
  if (!Array.isArray(losses) || losses.length !== step || !losses.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw bad('losses', `a list of ${step} finite numbers, one per step`);
  }
  const logSteps = int('log_steps', 0, step);
  const logSum = v.log_loss_sum;
  if (typeof logSum !== 'number' || !Number.isFinite(logSum)) throw bad('log_loss_sum', 'a finite number');
  // The evaluation state (absent in checkpoints of an sft before evaluation: none yet).
  const nullable = <T>(key: string, read: () => T): T | null => (v[key] === undefined || v[key] === null ? null : read());
  const bestStep = nullable('best_global_step', () => int('best_global_step', 1, step));
  const bestMetric = nullable('best_metric', () => {
    const x = v.best_metric;
    if (typeof x !== 'number' || !Number.isFinite(x)) throw bad('best_metric', 'a finite number or null');
    return x;
  });
  if ((bestStep === null) !== (bestMetric === null)) throw bad('best_metric', `${bestStep === null ? 'null, as best_global_step is' : 'a number, as best_global_step is set'}`);
  const bestDir = nullable('best_model_checkpoint', () => {
    const x = v.best_model_checkpoint;
    if (typeof x !== 'string' || !/checkpoint-\d+$/.test(x)) throw bad('best_model_checkpoint', 'the path of a checkpoint-N folder, or null');
    return x;
  });
  const lastEval = v.last_eval_step === undefined ? 0 : int('last_eval_step', 0, step);
  const scaler = nullable('grad_scaler', () => checkScalerState(v.grad_scaler, step, (want) => bad('grad_scaler', want)));
  return {
    global_step: step, micro_batches: micro, losses: losses as number[], log_loss_sum: logSum, log_steps: logSteps, tokens_seen: int('tokens_seen', 0), total_steps: int('total_steps', 1),
    best_metric: bestMetric, best_global_step: bestStep, best_model_checkpoint: bestDir, last_eval_step: lastEval,
    grad_scaler: scaler, world_size: v.world_size === undefined ? 1 : int('world_size', 1),
  };
}

/** fp16's loss scale: a positive finite fp32 value, and counters no larger than the steps taken. */
function checkScalerState(x: unknown, step: number, bad: (want: string) => SftError): LossScalerState {
  const want = `{ "scale": a positive finite number, "growth_tracker": an integer from 0 to ${step}, "skipped_steps": an integer from 0 to ${step} }`;
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw bad(want);
  const o = x as Record<string, unknown>;
  const count = (k: string) => typeof o[k] === 'number' && Number.isSafeInteger(o[k]) && (o[k] as number) >= 0 && (o[k] as number) <= step;
  const keys = Object.keys(o).sort().join(',');
  if (keys !== 'growth_tracker,scale,skipped_steps' || typeof o.scale !== 'number' || !Number.isFinite(o.scale) || o.scale <= 0 ||
      Math.fround(o.scale) !== o.scale || !count('growth_tracker') || !count('skipped_steps')) throw bad(want);
  return { scale: o.scale, growth_tracker: o.growth_tracker as number, skipped_steps: o.skipped_steps as number };
}

/** The trained tensors, checked against the run's (or, without a run, taken as the checkpoint says). */
function readTrained(dir: string, cfg: TrainConfig, run?: RunShape): { tensors: CheckedCheckpoint['tensors']; trainable: RunShape['trainable'] } {
  if (cfg.train_mode === 'full') {
    const listed = listCheckpointTensors(dir).map((t) => ({ name: t.name, shape: t.shape }));
    if (run) matchTensors(dir, listed, run.base, 'model weights');
    // The engine's trainable tensors are not the folder's (q/k/v are one fused tensor there), so
    // without the model the optimizer's own names stand for them.
    return { tensors: 'model-folder', trainable: run?.trainable ?? optimizerTensors(join(dir, OPTIMIZER_FILE)) };
  }
  const type = adapterType(dir);
  const want = cfg.train_mode === 'prompt_tuning' ? 'PROMPT_TUNING' : 'LORA';
  if (type !== want) throw new SftError(`${join(dir, ADAPTER_CONFIG)}: peft_type is ${clip(type)}, but train_mode "${cfg.train_mode}" saves ${want}`);
  let tensors: { name: string; shape: number[]; data: Float32Array }[];
  if (want === 'PROMPT_TUNING') {
    const { config, embeddings } = readPromptTuningAdapter(dir);
    tensors = [{ name: PROMPT_EMBEDDINGS, shape: [config.numVirtualTokens, config.tokenDim], data: embeddings }];
  } else {
    tensors = readLoraAdapter(dir).tensors;
  }
  const file = join(dir, 'adapter_model.safetensors');
  for (const t of tensors) requireFinite(file, t.name, t.data);
  if (run) matchTensors(file, tensors, run.trainable, 'adapter tensors');
  return { tensors: tensors.map((t) => ({ name: t.name, data: t.data })), trainable: run?.trainable ?? tensors };
}

/** The same names with the same shapes, each way. */
function matchTensors(file: string, have: { name: string; shape: number[] }[], want: { name: string; shape: number[] }[], what: string): void {
  const wanted = new Map(want.map((t) => [t.name, t.shape]));
  for (const t of have) {
    const shape = wanted.get(t.name);
    if (!shape) throw new SftError(`${file}: tensor ${clip(JSON.stringify(t.name))} is not one of this run's ${what}`);
    if (shape.join(',') !== t.shape.join(',')) throw new SftError(`${file}: tensor ${t.name} has shape [${clip(t.shape.join(', '))}], this run's is [${shape.join(', ')}]`);
    wanted.delete(t.name);
  }
  if (wanted.size) throw new SftError(`${file}: the checkpoint lacks ${wanted.size} of this run's ${what}, e.g. ${[...wanted.keys()][0]}`);
}

/** optimizer.safetensors: the step bias correction continues from, and the moments of every
 *  trainable tensor (none missing, none extra, the run's kind, finite; second moments >= 0). */
function readOptimizer(file: string, trainable: RunShape['trainable'], step: number, skipped: number, eightBit: boolean, optim: string, readMoments: boolean): OptimizerState {
  if (!existsSync(file)) throw new SftError(`${file} is missing: the checkpoint is incomplete`);
  const h = readSafetensorsHeader(file);
  const saved = h.metadata?.step;
  if (saved !== String(step)) {
    const at = skipped ? `${step} (step ${step + skipped} less ${skipped} fp16 steps skipped)` : `${step}`;
    throw new SftError(`${file}: the optimizer step in its metadata is ${saved === undefined ? 'missing' : clip(JSON.stringify(saved))}, but trainer_state.json is at step ${at}: AdamW's bias correction would restart wrongly`);
  }
  const used = new Set<string>();
  const get = (name: string, dtype: 'F32' | 'U8', n: number): { t: Float32Array | Uint8Array } => {
    const info = h.tensors.get(name);
    if (!info) throw new SftError(`${file}: no tensor ${name}: the moments of ${name.replace(/\.exp_avg.*$/, '')} are missing (they would restart from zero)`);
    if (info.dtype !== dtype || numel(info.shape) !== n) throw new SftError(`${file}: ${name} is ${info.dtype}[${clip(info.shape.join(', '))}], expected ${dtype}[${n}]`);
    used.add(name);
    // Without readMoments only the header is checked (names, kinds, sizes): the early pass of a
    // resume, which must not read a full fine-tuning run's moments twice.
    if (!readMoments) return { t: dtype === 'U8' ? new Uint8Array(0) : new Float32Array(0) };
    return { t: dtype === 'U8' ? readTensorBytes(file, h, name) : readTensorF32(file, h, name) };
  };
  const tensors = trainable.map((p) => {
    // Before the first update the engine has no moments yet: each is saved empty.
    if (step === 0) return { name: p.name, m: get(`${p.name}.exp_avg`, 'F32', 0).t as Float32Array, v: get(`${p.name}.exp_avg_sq`, 'F32', 0).t as Float32Array };
    const n = numel(p.shape);
    // 8-bit AdamW keeps small tensors (norms, biases) in 32-bit states, as bitsandbytes does: the
    // kind is per tensor, and 8-bit codes are only valid when the run's optim is an 8-bit one.
    if (h.tensors.has(`${p.name}.exp_avg.q8`) && !eightBit) {
      throw new SftError(`${file}: ${p.name} has 8-bit AdamW states, but this run's optim "${optim}" keeps 32-bit ones; resume with the optim the checkpoint was trained with (adamw_8bit)`);
    }
    if (eightBit && !h.tensors.has(`${p.name}.exp_avg`)) {
      const blocks = Math.ceil(n / Q8_BLOCK);
      const m8 = get(`${p.name}.exp_avg.q8`, 'U8', n).t as Uint8Array;
      const v8 = get(`${p.name}.exp_avg_sq.q8`, 'U8', n).t as Uint8Array;
      const mAbsmax = requireFinite(file, `${p.name}.exp_avg.absmax`, get(`${p.name}.exp_avg.absmax`, 'F32', blocks).t as Float32Array, true);
      const vAbsmax = requireFinite(file, `${p.name}.exp_avg_sq.absmax`, get(`${p.name}.exp_avg_sq.absmax`, 'F32', blocks).t as Float32Array, true);
      return { name: p.name, m: new Float32Array(0), v: new Float32Array(0), m8, v8, mAbsmax, vAbsmax };
    }
    const m = requireFinite(file, `${p.name}.exp_avg`, get(`${p.name}.exp_avg`, 'F32', n).t as Float32Array);
    const v = requireFinite(file, `${p.name}.exp_avg_sq`, get(`${p.name}.exp_avg_sq`, 'F32', n).t as Float32Array, true);
    return { name: p.name, m, v };
  });
  const extra = [...h.tensors.keys()].find((k) => !used.has(k));
  if (extra !== undefined) throw new SftError(`${file}: tensor ${clip(JSON.stringify(extra))} belongs to no trainable tensor of this run (optim "${optim}")`);
  return { step, tensors };
}

/** The tensors optimizer.safetensors holds moments of, as the file says (sizes from exp_avg or .q8). */
function optimizerTensors(file: string): { name: string; shape: number[] }[] {
  if (!existsSync(file)) throw new SftError(`${file} is missing: the checkpoint is incomplete`);
  const out: { name: string; shape: number[] }[] = [];
  for (const [key, info] of readSafetensorsHeader(file).tensors) {
    const m = /^(.*)\.exp_avg(\.q8)?$/.exec(key);
    if (m) out.push({ name: m[1], shape: [numel(info.shape)] });
  }
  return out;
}

function requireFinite(file: string, name: string, data: Float32Array, nonNegative = false): Float32Array {
  for (let i = 0; i < data.length; i++) {
    const x = data[i];
    if (!Number.isFinite(x) || (nonNegative && x < 0)) throw new SftError(`${file}: ${name} holds ${x} at element ${i}${nonNegative ? ' (it must be finite and >= 0)' : ''}: the checkpoint is damaged`);
  }
  return data;
}

/** What `sft verify` says of a checkpoint that passed. */
export function describeChecked(c: CheckedCheckpoint): string {
  const sums = c.verified === 'missing' ? `no ${MANIFEST} (written by an earlier sft): structure checked, checksums not` : typeof c.verified === 'number' ? `${c.verified} files match their SHA-256` : 'checksums not checked';
  return `step ${c.state.global_step}, ${sums}`;
}
