// The LoRA fine-tuning recipe, read top to bottom: setup (model, tokenizer, data, adapters,
// schedule), the step loop, checkpoints, and the final save. Config keys that drive it:
//
//   model_name_or_path, template_name, train_file, max_seq_length        setup
//   lora_rank, lora_alpha, lora_dropout, lora_target_modules             adapters (base frozen)
//   per_device_train_batch_size, gradient_accumulation_steps             micro-batches per step
//   num_train_epochs | max_steps, seed                                   length, data order, init
//   learning_rate, lr_scheduler_type, warmup_steps | warmup_ratio        learning-rate schedule
//   weight_decay, adam_beta1, adam_beta2, adam_epsilon, max_grad_norm    AdamW + clipping
//   logging_steps, save_strategy, save_steps, save_total_limit, output_dir  what is written, when
//   eval_file, eval_strategy | evaluation_strategy, eval_steps, do_eval,  evaluation (eval_loss) and the
//   per_device_eval_batch_size, metric_for_best_model, greater_is_better, best checkpoint
//   load_best_model_at_end
//   device, bf16 / fp16, gradient_checkpointing                          where and how it computes
//
// Memory is planned once (Model.plan) before the first step: a run that starts does not run out of
// memory later, and `--dry-run` prints that plan without loading a weight.
//
// Loss normalisation: every optimizer step averages the token losses over ALL target tokens of
// its micro-batches (counted before the first forward), so accumulation gives the same update as
// one big batch, whatever the padding.
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { evaluates, isEightBitOptim, isPagedOptim, type TrainConfig } from '../config/schema.js';
import type { Device, NativeModel, NativeModelConfig } from '../native/types.js';
import type { Tok } from '../tokenizer/types.js';
import { checkConfigAgainstCheckpoint, loadBase } from '../model/load.js';
import { readHfConfig } from '../model/hfconfig.js';
import { listCheckpointTensors } from '../model/weights.js';
import { loraModulesOf } from '../model/modules.js';
import { native as addon } from '../native/binding.js';
import { cudaUnavailable, resolveDevice } from '../native/device.js';
import { planSummary, planTable } from './memory.js';
import { runLine } from './run-line.js';
import { loadTokenizer } from '../tokenizer/tokenizer.js';
import { CHAT_TEMPLATE, getTemplate, type ChatTemplate } from '../data/templates.js';
import { resolveTemplate } from '../data/chat-template.js';
import { defaultTemplateName } from '../data/default-template.js';
import { prepareDataset, batches, batchesPerEpoch, type PreparedDataset, type Batch } from '../data/dataset.js';
import { detectLayout, LAYOUT_NAMES } from '../data/records.js';
import { renderMarkedSample, IGNORE } from '../data/encode.js';
import { lrAt, resolveWarmup, resolveInterval, totalTrainSteps } from './schedule.js';
import {
  saveCheckpoint, saveFinalOutput, rotateCheckpoints, removeStaleTemporaries, resolveCheckpoint, listCheckpoints,
  type TrainerState, type AdapterConfigInfo,
} from './checkpoint.js';
import { applyCheckpoint, applyTrained, checkCheckpoint, resumeFailure, type RunShape } from './resume.js';
import { prepareOutputDir } from './output-dir.js';
import { writeFileAtomic } from '../io/atomic.js';
import { Reporters } from '../log/reporters.js';
import { Progress } from '../log/progress.js';
import { trainSummary, flosFor, printMetrics, type TrainMetrics } from '../log/summary.js';
import { SftError } from '../errors.js';
import { mulberry32 } from '../util/random.js';
import { poller } from '../util/interrupt.js';
import { nonFiniteUpdate } from './diverged.js';
import { epochEndsAt, evalLoss, evalPlan, isNewBest } from './evaluation.js';
import { LossScaler, type LossScalerOptions } from './loss-scaler.js';
import { joinWorld, shardRows, type World } from './world.js';

export interface TrainRunOptions {
  /** Print the memory plan and samples with their trained spans marked; load no weight, train nothing. */
  dryRun?: boolean;
  /** Where human-readable lines go (default: stdout). */
  print?: (line: string) => void;
  /** Where the progress bar/lines and the final metrics block go (default: stdout). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** Set by the CLI's signal handler: finish the current step, save a checkpoint, stop. */
  shouldStop?: () => boolean;
  /** Continue from a checkpoint: "latest", "checkpoint-N" or a folder. */
  resume?: string;
  /** Skip malformed / non-UTF-8 / unusable data lines (counted and reported) instead of stopping. */
  skipBadLines?: boolean;
  /** fp16's loss scaler settings (default GradScaler's); tests force overflows and growth with it. */
  lossScaler?: LossScalerOptions;
  /** The dry run's plan is one rank's of this many (`--nproc-per-node N --dry-run`: ZeRO's slice). */
  dryRunRanks?: number;
}

export interface TrainResult {
  /** The trained model, still loaded (tests compare it with the saved adapter). */
  model?: NativeModel;
  metrics: TrainMetrics;
  steps: number;
  losses: number[];
  interrupted: boolean;
  outputDir: string;
  /** The checkpoint written when the run was interrupted. */
  checkpoint?: string;
  /** The best evaluation (metric_for_best_model, default eval_loss), and where its weights are:
   *  a checkpoint, output_dir (the last step was the best), or undefined (that step was not saved). */
  best?: { metric: number; step: number; checkpoint?: string };
  /** The engine's allocations per memory kind right after the plan and after the last step: equal
   *  when nothing was allocated inside the step loop. */
  allocations?: { afterPlan: Record<string, number>; afterTraining: Record<string, number> };
}

interface Setup {
  cfg: TrainConfig;
  model: NativeModel;
  native: NativeModelConfig;
  tok: Tok;
  data: PreparedDataset;
  /** eval_file, prepared as train_file is; absent when the run does not evaluate. */
  evalData?: PreparedDataset;
  targets: string[];
  padId: number;
  allocationsAfterPlan: Record<string, number>;
  world: World;
  /** ZeRO-1: the AdamW state is sharded over the ranks (gathered to rank 0 for checkpoints). */
  sharded: boolean;
}

export async function train(cfg: TrainConfig, opts: TrainRunOptions = {}): Promise<TrainResult> {
  // Data parallel (mpirun/srun): rank 0 alone prints and writes; the others follow it silently.
  // NCCL where the run will compute on a GPU (a cuda run without one is refused by setup, saying why).
  const world = opts.dryRun ? undefined : joinWorld(cfg.device !== 'cpu' && !cudaUnavailable() ? 'cuda' : 'cpu');
  if (world && world.size > 1) {
    try {
      return await trainRank(cfg, opts, world);
    } catch (err) {
      world.abort(err instanceof Error ? err.message : String(err));
    }
  }
  return trainRank(cfg, opts, world);
}

async function trainRank(cfg: TrainConfig, opts: TrainRunOptions, world: World | undefined): Promise<TrainResult> {
  const quiet = world !== undefined && !world.main;
  const print = quiet ? () => {} : opts.print ?? ((l: string) => process.stdout.write(l + '\n'));
  // Before anything reads it (the resume check, the saved sft_config.json): the name the run trains with.
  cfg = withTemplateName(cfg, print);
  if (!opts.dryRun && !quiet) {
    prepareOutputDir(cfg, opts.resume !== undefined, print);
    removeStaleTemporaries(cfg.output_dir);
  }
  world?.barrier();  // the other ranks read output_dir once rank 0 prepared it
  const resumeDir = opts.resume !== undefined && !opts.dryRun ? resolveCheckpoint(cfg.output_dir, opts.resume) : undefined;
  if (resumeDir) {
    // Everything that can be checked without the model, before minutes go into loading it.
    try {
      const c = checkCheckpoint(resumeDir, cfg, undefined, { moments: false });
      if (c.verified === 'missing') print(`  ${resumeDir} has no checksums (written by an earlier sft): its files were checked against each other and the config only`);
    } catch (err) {
      throw resumeFailure(resumeDir, err, cfg);
    }
  }
  if (opts.dryRun) {
    await dryRun(cfg, print, opts.skipBadLines ?? false, opts.dryRunRanks ?? 1);
    return { metrics: {}, steps: 0, losses: [], interrupted: false, outputDir: cfg.output_dir };
  }
  const s = await setup(cfg, print, opts.skipBadLines ?? false, world!);
  // The tokenized data stays on disk while the run may still be resumed (interrupted, failed).
  let done = false;
  try {
    const stream = quiet ? nowhere() : opts.stream ?? process.stdout;
    const r = await loop(s, print, stream, opts.shouldStop ?? (() => false), resumeDir, opts.lossScaler);
    done = !r.interrupted;
    s.world.barrier();  // every rank is done with the tokenized data before rank 0 removes it
    return r;
  } finally {
    for (const d of [s.data, s.evalData]) {
      if (done && !quiet) d?.remove();
      else d?.close();
    }
  }
}

// ---- setup ---------------------------------------------------------------------------------

/** A config without template_name gets the model's chat_template or Firefly's old format, said once. */
function withTemplateName(cfg: TrainConfig, print: (l: string) => void): TrainConfig {
  // A misspelt name fails now, not after minutes of loading ("chat_template" is checked with the tokenizer).
  if (cfg.template_name !== '' && cfg.template_name !== CHAT_TEMPLATE) getTemplate(cfg.template_name);
  if (cfg.template_name !== '') return cfg;
  if (!existsSync(cfg.model_name_or_path)) throw new SftError(`model folder ${cfg.model_name_or_path} does not exist`);
  const { name, notice } = defaultTemplateName(cfg.model_name_or_path, readHfConfig(cfg.model_name_or_path).native.arch);
  print(`  ${notice}`);
  return { ...cfg, template_name: name };
}

/** What ranks other than 0 log to: nothing (rank 0 alone writes metrics). */
function silentReporters(): Pick<Reporters, 'log' | 'summary' | 'close'> {
  return { log: () => {}, summary: () => {}, close: async () => {} };
}

/** A stream that drops what is written (the progress of ranks other than 0). */
function nowhere(): NodeJS.WritableStream & { isTTY?: boolean } {
  return new Writable({ write: (_c, _e, cb) => cb() });
}

async function setup(cfg: TrainConfig, print: (l: string) => void, skipBadLines: boolean, world: World): Promise<Setup> {
  const device = resolveDevice(cfg.device, print, cfg.threads || undefined);
  const dtype = precision(cfg, device, print);
  print(runLine(cfg, cfg.template_name, device, dtype));
  print(`Loading ${cfg.model_name_or_path} …`);
  const { model, native, quantized } = await loadBase(cfg.model_name_or_path, { threads: cfg.threads || undefined, device, dtype, bits: cfg.bits === 4 ? 4 : undefined });
  const tok = await loadTokenizer(cfg.model_name_or_path);
  const template = resolveTemplate(cfg.template_name, tok);
  // Padding is masked through labels, so any id works; prefer pad, then unk-free eos, then 0.
  const padId = tok.padId ?? tok.eosId ?? 0;
  // Rank 0 tokenizes into output_dir's cache first; the other ranks then reuse it (no write race).
  if (!world.main) world.barrier();
  const data = await readData(cfg, tok, template, native.vocabSize, skipBadLines, print);
  const evalData = evaluates(cfg) ? await readData(cfg, tok, template, native.vocabSize, skipBadLines, print, 'eval') : undefined;
  if (world.main) world.barrier();
  const targets = prepareModel(cfg, model, native, tok, print, quantized);
  const sharded = shardForZero(cfg, model, world, print);
  // The whole run's memory, once: activations for the largest batch, the optimizer's state.
  // Evaluation's forward passes fit in it (evalLoss takes at most that many rows per pass).
  model.plan(planRequest(cfg));
  print(`  ${planSummary(model.memoryPlan())}`);
  return { cfg, model, native, tok, data, evalData, targets, padId, allocationsAfterPlan: model.memoryStats().allocations, world, sharded };
}

/** ZeRO (zero_stage >= 1, or a deepspeed config's zero_optimization.stage; docs/SCALING.md): each
 *  of the world's N ranks keeps the AdamW state of its 1/N slice of the trainable weights, updates
 *  that slice and all-gathers the new weights. One rank has nothing to shard. Before the plan, whose
 *  optimizer kind is then this rank's slice. true: sharded. */
function shardForZero(cfg: TrainConfig, model: NativeModel, ranks: { rank: number; size: number }, print: (l: string) => void, planned = false): boolean {
  if (cfg.zero_stage < 1) return false;
  if (ranks.size === 1) {
    print(`  ZeRO stage ${cfg.zero_stage}: one rank, nothing to shard (ZeRO shards the AdamW state over data-parallel ranks: mpirun -np N or --nproc-per-node N)`);
    return false;
  }
  model.shardOptimizer({ rank: ranks.rank, size: ranks.size });
  const what = planned ? `the optimizer line below is rank ${ranks.rank}'s slice` : 'each keeps about 1/' + ranks.size;
  print(`  ZeRO-1: the AdamW state is sharded over ${ranks.size} ranks (${what}); the updated weights are all-gathered after each step`);
  return true;
}

/** What the run's plan holds: per_device_train_batch_size x max_seq_length, training, AdamW. */
function planRequest(cfg: TrainConfig) {
  return { batch: cfg.per_device_train_batch_size, seqLen: cfg.max_seq_length, train: true, optimizer: true, eightBit: eightBitOptim(cfg), paged: isPagedOptim(cfg.optim) };
}

function eightBitOptim(cfg: TrainConfig): boolean {
  return isEightBitOptim(cfg.optim);
}

/** The compute precision on this device: bf16 means bf16 on both backends (bf16 frozen weights and
 *  activations; fp32 masters, gradients and optimizer state); fp16 means bf16 on a GPU and fp32 on
 *  the CPU. fp16 runs its dynamic loss scaling (GradScaler's rules, the scale in checkpoints,
 *  overflow steps skipped) wherever it computes: neither backend has fp16 kernels, and every card
 *  the cuda backend builds for (sm_80 and later) computes bf16, whose fp32 range needs no scaling;
 *  fp16's skipped steps and learning-rate schedule stay what the config asked for. */
function precision(cfg: TrainConfig, device: Device, print: (l: string) => void): 'f32' | 'bf16' {
  const scaling = 'dynamic loss scaling runs as with fp16 (scale 65536, halved on an inf/NaN gradient, which skips the step; doubled after 2000 clean steps)';
  if (device === 'cuda') {
    if (cfg.fp16) print(`  fp16=true: this GPU computes bf16 (same range as fp32, no fp16 underflow), so the run trains in bf16 (bf16=true says so without the scaler); ${scaling}`);
    return cfg.bf16 || cfg.fp16 ? 'bf16' : 'f32';
  }
  if (cfg.bf16) return 'bf16';
  if (cfg.fp16) print(`  fp16=true: the CPU backend has no fp16 kernels, so the run trains in fp32; ${scaling}; bf16=true trains in bf16 on the CPU, without scaling`);
  return 'f32';
}

/** train_file, or eval_file (`which` "eval"): encoded the same way, cached apart. */
async function readData(cfg: TrainConfig, tok: Tok, template: ChatTemplate, vocabSize: number, skipBadLines: boolean, print: (l: string) => void, which: 'train' | 'eval' = 'train'): Promise<PreparedDataset> {
  let badShown = 0;
  const file = which === 'eval' ? cfg.eval_file : cfg.train_file;
  const persistKey = (which === 'eval' ? 'eval-' : '') + dataFingerprint(cfg, file, template.name, vocabSize, skipBadLines);
  // The layout is told by the content (records.ts): say which, above all for a .json that is JSON Lines.
  const layout = detectLayout(file);
  const as = layout === 'jsonl' && /\.json$/i.test(file) ? 'JSON Lines: its first character is not "["' : LAYOUT_NAMES[layout];
  print(`Reading ${file} (${which === 'eval' ? 'evaluation data, ' : ''}${as}; template "${template.name}", max_seq_length ${cfg.max_seq_length}) …`);
  const data = await prepareDataset({
    file,
    tok,
    template,
    maxSeqLength: cfg.max_seq_length,
    vocabSize,
    cacheDir: join(cfg.output_dir, '.sft-cache'),
    skipBadLines,
    onBadLine: (m) => {
      if (badShown++ < 5) print(`  skipped: ${m}`);
    },
    persistKey,
    parseSpecialTokens: cfg.parse_special_tokens,
  });
  if (data.reused) print(`  reusing the tokenized data of an earlier pass (${data.cacheDir}); the file was not read again`);
  const st = data.stats;
  print(
    `  ${st.samples} samples, ${st.tokens} tokens, ${st.targetTokens} trained (assistant) tokens` +
      (st.truncated ? `; ${st.truncated} truncated to ${cfg.max_seq_length}` : '') +
      (st.skippedNoTarget ? `; ${st.skippedNoTarget} skipped: truncation left no assistant token (raise max_seq_length)` : '') +
      (st.badLines ? `; ${st.badLines} bad ${layout === 'jsonl' ? 'line' : 'record'}(s) skipped (--skip-bad-lines)` : ''),
  );
  return data;
}

/** QLoRA, checkpointing, and what trains (full / prompt tuning / LoRA). A meta model (the dry run)
 *  goes through the same steps, so its plan is the run's. Returns the LoRA target modules. */
function prepareModel(cfg: TrainConfig, model: NativeModel, native: NativeModelConfig, tok: Tok | undefined, print: (l: string) => void,
  quantized?: { bytesBefore: number; bytesAfter: number }): string[] {
  if (cfg.bits === 4) {
    // QLoRA: frozen linear weights become NF4 (+ double quantization); embeddings, norms and
    // lm_head stay in full precision, as in the QLoRA paper. A loaded model quantized as it loaded
    // (loadBase, bits 4); the dry run's meta model is quantized here.
    const q = quantized ?? model.quantize({ bits: 4, doubleQuant: true });
    print(`  QLoRA: linear weights quantized to NF4 with double quantization, ${(q.bytesBefore / 2 ** 20).toFixed(1)} MiB -> ${(q.bytesAfter / 2 ** 20).toFixed(1)} MiB`);
  }
  if (cfg.gradient_checkpointing) {
    model.setGradientCheckpointing(true);
    print('  Gradient checkpointing: each layer is recomputed in backward (less memory, ~1/3 more compute)');
  }
  const total = model.baseParams().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
  if (cfg.train_mode === 'full') {
    // Every weight trains (fp32 master weights, AdamW); the output is a whole HF model folder.
    model.setBaseTrainable(true);
    print(`  Full fine-tuning: all ${total.toLocaleString('en')} parameters train (AdamW state: ${((total * 8) / 2 ** 20).toFixed(1)} MiB)`);
    return [];
  }
  if (cfg.train_mode === 'prompt_tuning') {
    // Only num_virtual_tokens embeddings train; they are prepended to every sample.
    const init = tok ? promptInit(cfg, model, tok, native) : undefined;
    model.addPromptTuning({ numVirtualTokens: cfg.num_virtual_tokens, init, seed: cfg.seed });
    print(`  Prompt tuning: ${cfg.num_virtual_tokens} virtual tokens (${cfg.prompt_tuning_init} init), ${(cfg.num_virtual_tokens * native.hiddenSize).toLocaleString('en')} trainable parameters`);
    return [];
  }
  const targets = cfg.lora_target_modules === 'all' ? loraModulesOf(native.arch) : cfg.lora_target_modules;
  try {
    model.addLora({ targets, rank: cfg.lora_rank, alpha: cfg.lora_alpha, dropout: cfg.lora_dropout, seed: cfg.seed });
  } catch (err) {
    throw new SftError(`lora_target_modules: ${(err as Error).message}`);
  }
  const trainable = model.trainableParams().reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
  print(`  LoRA r=${cfg.lora_rank} alpha=${cfg.lora_alpha} on ${targets.join(', ')}: ${trainable.toLocaleString('en')} trainable of ${total.toLocaleString('en')} parameters (${((100 * trainable) / total).toFixed(2)}%)`);
  return targets;
}

/** PEFT's prompt-tuning initialisations: TEXT = the init text's token embeddings repeated to
 *  num_virtual_tokens then cut; SAMPLE_VOCAB = embeddings of random vocabulary ids; RANDOM = N(0, 1)
 *  (returned as undefined: the engine draws it from the seed). */
function promptInit(cfg: TrainConfig, model: NativeModel, tok: Tok, native: NativeModelConfig): Float32Array | undefined {
  const n = cfg.num_virtual_tokens, H = native.hiddenSize;
  let ids: number[];
  if (cfg.prompt_tuning_init === 'TEXT') {
    const text = tok.encode(cfg.prompt_tuning_init_text);
    if (!text.length) throw new SftError('prompt_tuning_init_text encodes to no tokens; give a non-empty text or use prompt_tuning_init "RANDOM"');
    ids = Array.from({ length: n }, (_, i) => text[i % text.length]);
  } else if (cfg.prompt_tuning_init === 'SAMPLE_VOCAB') {
    const rand = mulberry32(cfg.seed);
    ids = Array.from({ length: n }, () => Math.floor(rand() * native.vocabSize));
  } else {
    return undefined;
  }
  const embName = model.baseParams().find((p) => /(embed_tokens|word_embeddings)\.weight$/.test(p.name))!.name;
  const E = model.getTensor(embName);
  const init = new Float32Array(n * H);
  ids.forEach((id, i) => init.set(E.subarray(id * H, (id + 1) * H), i * H));
  return init;
}

/** What shapes the tokenized samples: the data file (path, size, mtime), the tokenizer files, the
 *  template and the limits. The persistent data cache is keyed by it. */
function dataFingerprint(cfg: TrainConfig, file: string, template: string, vocabSize: number, skipBadLines: boolean): string {
  const h = createHash('sha256');
  if (!existsSync(file)) throw new SftError(`${file === cfg.train_file ? 'train_file' : 'eval_file'} ${file}: no such file — check the data path`);
  const st = statSync(file);
  h.update(JSON.stringify({ file: resolve(file), size: st.size, mtime: st.mtimeMs, template, max: cfg.max_seq_length, vocabSize, skipBadLines, special: cfg.parse_special_tokens }));
  for (const f of ['tokenizer.json', 'tokenizer.model', 'tokenizer_config.json', 'chat_template.jinja']) {
    const p = join(cfg.model_name_or_path, f);
    if (existsSync(p)) h.update(f).update(readFileSync(p));
  }
  return h.digest('hex').slice(0, 16);
}

/** The dry run: the memory plan of this run on its device, from config.json alone (a meta model:
 *  no weight is read, no memory taken, no GPU needed), then the first samples with their trained
 *  spans marked (the tokenizer and the data only). */
async function dryRun(cfg: TrainConfig, print: (l: string) => void, skipBadLines: boolean, ranks: number): Promise<void> {
  const why = cudaUnavailable();
  let device: Device;
  if (cfg.device === 'cuda' && why) {
    device = 'cuda';
    print(`device: cuda — planned only: ${why}`);
  } else {
    device = resolveDevice(cfg.device, print, cfg.threads || undefined);
  }
  const dtype = precision(cfg, device, print);
  print(runLine(cfg, cfg.template_name, device, dtype));
  const { native } = readHfConfig(cfg.model_name_or_path);
  try {
    checkConfigAgainstCheckpoint(cfg.model_name_or_path, native, listCheckpointTensors(cfg.model_name_or_path));
  } catch (err) {
    if (err instanceof SftError && /do not match/.test(err.message)) throw err;
    print(`  (the checkpoint's headers could not be read, so config.json was not checked against them: ${(err as Error).message})`);
  }
  const model = new (addon().Model)({ ...native, device, dtype, meta: true });
  prepareModel(cfg, model, native, undefined, print);
  shardForZero(cfg, model, { rank: 0, size: ranks }, print, true);
  model.plan(planRequest(cfg));
  print('');
  for (const line of planTable(model.memoryPlan())) print(line);

  const tok = await loadTokenizer(cfg.model_name_or_path);
  const data = await readData(cfg, tok, resolveTemplate(cfg.template_name, tok), native.vocabSize, skipBadLines, print);
  try {
    const n = Math.min(3, data.size);
    print(`\nDry run: the first ${n} samples, trained spans between ⟦ and ⟧ (loss is computed on them only):`);
    for (let i = 0; i < n; i++) {
      const { inputIds, labels } = data.get(i);
      print(`\n--- sample ${i} (${inputIds.length} tokens) ---`);
      // A sample as long as max_seq_length may have been cut, perhaps inside a character.
      print(renderMarkedSample(inputIds, labels, tok, { truncated: inputIds.length === cfg.max_seq_length }));
    }
  } finally {
    data.remove();
  }
}

// ---- the loop ------------------------------------------------------------------------------

async function loop(
  s: Setup,
  print: (l: string) => void,
  stream: NodeJS.WritableStream & { isTTY?: boolean },
  shouldStop: () => boolean,
  resumeDir?: string,
  scalerOptions?: LossScalerOptions,
): Promise<TrainResult> {
  const { cfg, model, data, world } = s;
  const bs = cfg.per_device_train_batch_size;
  const accum = cfg.gradient_accumulation_steps;
  // As HF: a step's global batch is bs x accum x world size; micro-batches are global (bs x world
  // rows), each rank computing its bs rows of them, so the data order does not depend on the world.
  const globalBs = bs * world.size;
  const perEpoch = batchesPerEpoch(data.size, globalBs);
  const totalSteps = totalTrainSteps({ maxSteps: cfg.max_steps, numTrainEpochs: cfg.num_train_epochs, batchesPerEpoch: perEpoch, gradientAccumulationSteps: accum });
  const warmup = resolveWarmup(cfg.warmup_steps, cfg.warmup_ratio, totalSteps);
  const logEvery = Math.max(1, resolveInterval(cfg.logging_steps, totalSteps));
  const saveEvery = Math.max(1, resolveInterval(cfg.save_steps, totalSteps));
  const epochEnds = (done: number) => epochEndsAt(done, accum, perEpoch);
  const evals = evalPlan(cfg, totalSteps, epochEnds);
  const schedule = { type: cfg.lr_scheduler_type, baseLr: cfg.learning_rate, warmupSteps: warmup, totalSteps };
  // 8-bit AdamW states (bitsandbytes' blockwise 8-bit optimizers); paging only matters on the GPU.
  const eightBit = eightBitOptim(cfg);
  const adapter: AdapterConfigInfo = {
    baseModel: cfg.model_name_or_path, r: cfg.lora_rank, loraAlpha: cfg.lora_alpha, loraDropout: cfg.lora_dropout, targetModules: s.targets,
    numAttentionHeads: s.native.numHeads, numLayers: s.native.numLayers,
  };

  // Everything the loop carries from step to step lives in `st`, which is what a checkpoint saves.
  let st: TrainerState = {
    global_step: 0, micro_batches: 0, losses: [], log_loss_sum: 0, log_steps: 0, tokens_seen: 0, total_steps: totalSteps,
    best_metric: null, best_global_step: null, best_model_checkpoint: null, last_eval_step: 0, grad_scaler: null, world_size: world.size,
  };
  mkdirSync(cfg.output_dir, { recursive: true });
  const shapes = (ps: { name: string; shape: number[] }[]) => ps.map((p) => ({ name: p.name, shape: p.shape }));
  const run = { trainable: shapes(model.trainableParams()), base: shapes(model.baseParams()), totalSteps };
  if (resumeDir) {
    // Checked in full against this model first; only a checkpoint that passed is applied.
    let checked;
    try {
      checked = checkCheckpoint(resumeDir, cfg, run, { hashes: false });
    } catch (err) {
      throw resumeFailure(resumeDir, err, cfg, run);
    }
    if (checked.state.world_size !== world.size) {
      throw new SftError(`${resumeDir} was written by a run on ${checked.state.world_size} rank(s); this run has ${world.size}: resume with the same number of ranks (mpirun -np ${checked.state.world_size} / --nproc-per-node ${checked.state.world_size}), which continues it exactly — re-sharding to another world size is not supported yet`);
    }
    st = await applyCheckpoint(checked, model);
    st.total_steps = totalSteps;
    st.world_size = world.size;
    // As HF: a best checkpoint that is gone (rotated, deleted) is forgotten, its metric kept.
    if (st.best_model_checkpoint !== null && !existsSync(st.best_model_checkpoint)) {
      print(`  the best checkpoint recorded in ${resumeDir} (${st.best_model_checkpoint}) no longer exists; it is forgotten (best ${metricName(cfg)} so far: ${st.best_metric})`);
      st.best_model_checkpoint = null;
    }
    if (world.main) keepMetricsUpTo(cfg.output_dir, st.global_step);
    print(`Resuming from ${resumeDir}: step ${st.global_step} of ${totalSteps}, ${st.micro_batches} micro-batches consumed`);
  }
  // fp16: the loss scale carries on from the checkpoint (a run that did not scale starts afresh).
  const scaler = cfg.fp16 ? new LossScaler(scalerOptions, st.grad_scaler ?? undefined) : undefined;
  st.grad_scaler = scaler?.state() ?? null;
  // As HF's Trainer: a skipped step does not advance the learning-rate schedule (nor AdamW's step).
  const lrFor = (done: number) => lrAt(done - (scaler?.skippedSteps ?? 0), schedule);
  const ranks = world.size > 1 ? ` x ${world.size} ranks (${world.backend})` : '';
  print(`Training: ${totalSteps} steps of ${bs} x ${accum}${ranks} samples (${perEpoch} batches per epoch), warmup ${warmup}, ${cfg.lr_scheduler_type} schedule`);
  if (s.evalData) print(`Evaluation: ${cfg.eval_file} ${evals.describe} (${s.evalData.size} samples, ${s.evalData.stats.targetTokens} trained tokens)`);

  // metrics.jsonl always; TensorBoard / wandb per report_to; loss.svg when the run ends.
  const reporters = world.main ? await Reporters.open(cfg, cfg.output_dir, print, { append: resumeDir !== undefined }) : silentReporters();
  const progress = new Progress({ stream, bar: !cfg.disable_tqdm, logEvery });
  const mine = (b: Batch) => (world.size > 1 ? shardRows(b, world.rank, bs) : b);
  const micro = microBatches(data, globalBs, cfg.seed, s.padId, st.micro_batches);
  const ahead = microBatches(data, globalBs, cfg.seed, s.padId, st.micro_batches);  // the same ones, counted first
  let sinceLogTokens = 0, sinceLogMs = Date.now();
  const t0 = Date.now();
  const stepsAtStart = st.global_step;
  // Rates are this process's: what ran before a resume ran in another process's time.
  const tokensAtStart = st.tokens_seen;
  let interrupted = false;

  /** Evaluates after step `done`: logs eval_loss and keeps the best. false: a stop came first. */
  const evaluate = async (done: number): Promise<boolean> => {
    if (!s.evalData) return true;
    const t = Date.now();
    // Every rank evaluates the whole eval set (same weights, same result): a stop is taken at the
    // next step's collective, so no rank leaves an evaluation alone.
    const r = await evalLoss(model, s.evalData, {
      batchSize: cfg.per_device_eval_batch_size, maxRows: bs, padId: s.padId, shouldStop: world.size > 1 ? async () => false : poller(shouldStop, 250),
    });
    if (!r) return false;
    const secs = (Date.now() - t) / 1000;
    sinceLogMs += Date.now() - t;  // training's tokens/s leaves the evaluation's time out
    st.last_eval_step = done;
    reporters.log(done, {
      step: done, epoch: round((done * accum) / perEpoch, 4), eval_loss: r.loss, eval_runtime: round(secs, 4),
      eval_samples_per_second: round(r.samples / Math.max(secs, 1e-9), 3), eval_steps_per_second: round(r.batches / Math.max(secs, 1e-9), 3),
    });
    // HF's _determine_best_metric; without metric_for_best_model, sft still tracks eval_loss.
    let best = '';
    if (isNewBest(r.loss, st.best_metric, cfg.greater_is_better ?? false)) {
      st.best_metric = r.loss;
      st.best_global_step = done;
      best = ' (best so far)';
    }
    progress.record({ evalLoss: r.loss });
    progress.log(`step ${done}: eval_loss ${r.loss.toFixed(4)} over ${r.tokens} tokens of ${r.samples} samples${best}`);
    return true;
  };
  /** A checkpoint of step `done`, naming the best one as HF does (the best step's, when it was saved). */
  const checkpoint = (done: number): string => {
    if (st.best_global_step !== null) {
      const dir = join(cfg.output_dir, `checkpoint-${st.best_global_step}`);
      if (st.best_global_step === done || existsSync(dir)) st.best_model_checkpoint = dir;
    }
    // ZeRO-1: every rank takes part in gathering the optimizer state, which rank 0 alone writes.
    const optimizer = s.sharded ? model.getOptimizerState() : undefined;
    if (!world.main) return join(cfg.output_dir, `checkpoint-${done}`);
    const dir = saveCheckpoint(cfg.output_dir, model, cfg, adapter, st, optimizer);
    rotateCheckpoints(cfg.output_dir, cfg.save_total_limit, st.best_model_checkpoint);
    return dir;
  };
  /** save_strategy: steps, epoch, or best (the evaluation at this step set a new best). */
  const saveAfter = (done: number): boolean =>
    done < totalSteps && (cfg.save_strategy === 'steps' ? done % saveEvery === 0 : cfg.save_strategy === 'epoch' ? epochEnds(done) : cfg.save_strategy === 'best' && st.best_global_step === done && st.last_eval_step === done);

  progress.start(totalSteps, st.global_step);
  try {
    // A stop that came during the evaluation of the checkpoint's step: that evaluation runs first.
    if (st.global_step > 0 && evals.at(st.global_step) && st.last_eval_step < st.global_step) {
      interrupted = !(await evaluate(st.global_step));
      if (!interrupted && saveAfter(st.global_step)) checkpoint(st.global_step);
    }
    while (!interrupted && st.global_step < totalSteps) {
      const step = st.global_step;
      // One optimizer step: `accum` micro-batches, loss averaged over all their target tokens. Two
      // passes over the same micro-batches hold one at a time in memory, whatever `accum` is: the
      // first counts the step's target tokens (labels only), the second runs forward/backward with
      // the loss scaled by 1 / that count. Both poll for a stop (at most every 250 ms, so a short
      // step is asked only at its end); a stop mid-step drops the partial step, leaving `st` as
      // the last complete step left it, and that is what the checkpoint below saves.
      // Data parallel: the target count and the stop are summed over the ranks before the first
      // forward (every rank stops at the same step), the gradients and the loss after the last.
      const distributed = world.size > 1;
      const stopNow = distributed ? async () => false : poller(shouldStop, 250);
      let targetsInStep = 0;
      for (let i = 0; i < accum; i++) {
        if ((interrupted = await stopNow())) break;
        const b = mine(ahead.next());
        targetsInStep += countTargets(shiftLabels(b.labels, b.indices.length, b.seqLen));
      }
      if (distributed) {
        const [targets, stops] = world.sum([targetsInStep, shouldStop() ? 1 : 0]);
        targetsInStep = targets;
        interrupted = stops > 0;
      }
      if (interrupted) break;
      model.zeroGrad();
      let lossSum = 0, tokensInStep = 0;
      for (let i = 0; i < accum; i++) {
        if ((interrupted = await stopNow())) break;
        const b = mine(micro.next());
        if (!b.indices.length) continue;  // the epoch's last global batch has no rows for this rank
        model.setDropoutRowOffset(distributed ? world.rank * bs : 0);
        const r = await model.forwardBackward(b.ids, shiftLabels(b.labels, b.indices.length, b.seqLen), b.indices.length, b.seqLen, (scaler?.scale ?? 1) / Math.max(1, targetsInStep), step * accum + i);
        lossSum += r.lossSum;
        tokensInStep += b.ids.length;
      }
      if (interrupted) break;
      if (distributed) {
        await model.allReduceGrads();
        [lossSum, tokensInStep] = world.sum([lossSum, tokensInStep]);
      }
      st.tokens_seen += tokensInStep;
      sinceLogTokens += tokensInStep;
      const loss = lossSum / Math.max(1, targetsInStep);
      // A non-finite loss stops before the update; AdamW skips a non-finite gradient norm itself;
      // and what an update writes is checked after it (a finite gradient can still give NaN).
      const notUpdated = (what: string, v: number) =>
        new SftError(`step ${step + 1}: the ${what} became ${v} — the weights were not updated. Lower learning_rate (now ${cfg.learning_rate}) or check the data; checkpoints written so far are intact.`);
      if (!Number.isFinite(loss)) throw notUpdated('loss', loss);
      const lr = lrFor(step);
      const { gradNorm, weightsFinite } = await model.adamwStep({
        lr, beta1: cfg.adam_beta1, beta2: cfg.adam_beta2, eps: cfg.adam_epsilon, weightDecay: cfg.weight_decay, maxGradNorm: cfg.max_grad_norm, eightBit, paged: isPagedOptim(cfg.optim), inverseScale: scaler?.inverse ?? 1,
      });
      // With fp16 loss scaling an inf/NaN gradient is an overflow of the scale: the step was skipped
      // (no update) and the scale backs off, as GradScaler does; without it, divergence.
      if (scaler) scaler.update(!Number.isFinite(gradNorm));
      else if (!Number.isFinite(gradNorm)) throw notUpdated('gradient norm', gradNorm);
      if (!weightsFinite) throw nonFiniteUpdate(cfg, step + 1, step);
      st.grad_scaler = scaler?.state() ?? null;
      st.global_step++;
      st.micro_batches += accum;
      st.losses.push(loss);
      st.log_loss_sum += loss;
      st.log_steps++;

      const done = st.global_step;
      const epoch = (done * accum) / perEpoch;
      if (done % logEvery === 0 || done === totalSteps || (cfg.logging_first_step && done === 1)) {
        const secs = (Date.now() - sinceLogMs) / 1000;
        const rec = {
          step: done, epoch: round(epoch, 4), loss: round(st.log_loss_sum / st.log_steps, 4), learning_rate: lrFor(done), grad_norm: round(gradNorm, 4), tokens_per_second: round(sinceLogTokens / Math.max(secs, 1e-9), 1),
          ...(scaler ? { loss_scale: scaler.scale, skipped_steps: scaler.skippedSteps } : {}),
        };
        reporters.log(done, rec);
        progress.update(done, { loss: rec.loss, lr: rec.learning_rate, tokensPerSecond: rec.tokens_per_second, gradNorm, epoch });
        st.log_loss_sum = 0, st.log_steps = 0, sinceLogTokens = 0, sinceLogMs = Date.now();
      } else {
        progress.update(done, { loss, lr: lrFor(done), gradNorm, epoch });
      }
      // As HF's _maybe_log_save_evaluate: log, evaluate, then save (the checkpoint holds the best).
      if (evals.at(done) && !(await evaluate(done))) {
        interrupted = true;
        break;
      }
      if (world.size === 1 && shouldStop()) {
        interrupted = true;
        break;
      }
      if (saveAfter(done)) checkpoint(done);
    }
  } catch (err) {
    progress.stop();
    await reporters.close();
    throw err;
  }
  progress.stop();

  const runtime = (Date.now() - t0) / 1000;
  let saved: string | undefined;
  let bestNote: string | undefined;
  if (interrupted) {
    saved = checkpoint(st.global_step);
    print(`Interrupted after step ${st.global_step}: checkpoint saved to ${saved}`);
  } else {
    bestNote = await finishBest(s, st, totalSteps, run, print);
    if (world.main) saveFinalOutput(cfg.output_dir, model, cfg, adapter);
  }
  const stepsRun = st.global_step - stepsAtStart;
  const nonEmbedding = s.model.baseParams().filter((p) => !/embed_tokens|lm_head/.test(p.name)).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
  const result = trainSummary({
    runtimeSec: runtime,
    samples: stepsRun * globalBs * accum,
    steps: stepsRun,
    trainLoss: st.losses.length ? st.losses.reduce((a, b) => a + b, 0) / st.losses.length : NaN,
    totalFlos: flosFor(st.tokens_seen, nonEmbedding),
    epoch: round((st.global_step * accum) / perEpoch, 4),
    tokens: st.tokens_seen - tokensAtStart,
  });
  if (!interrupted && world.main) writeFileAtomic(join(cfg.output_dir, 'train_results.json'), JSON.stringify(result, null, 2) + '\n');
  reporters.summary(st.global_step, result);
  await reporters.close();
  printMetrics('train', result, (l) => stream.write(l));
  if (bestNote) print(bestNote);
  return {
    model: s.model, metrics: result, steps: st.global_step, losses: st.losses, interrupted, outputDir: cfg.output_dir, checkpoint: saved,
    best: st.best_global_step === null ? undefined : { metric: st.best_metric!, step: st.best_global_step, checkpoint: st.best_global_step === totalSteps ? cfg.output_dir : st.best_model_checkpoint ?? undefined },
    allocations: { afterPlan: s.allocationsAfterPlan, afterTraining: s.model.memoryStats().allocations },
  };
}

/** "eval_loss", or the metric_for_best_model as HF spells it in the metrics (eval_ prefix). */
function metricName(cfg: TrainConfig): string {
  const m = cfg.metric_for_best_model ?? 'loss';
  return m.startsWith('eval_') ? m : `eval_${m}`;
}

/**
 * The end of a run that evaluated: load_best_model_at_end puts the best checkpoint's trained weights
 * back (HF's _load_best_model) before the final output is written; save_total_limit 1 keeps only the
 * best checkpoint (HF deletes the others at the end). Returns the line naming the best.
 */
async function finishBest(s: Setup, st: TrainerState, totalSteps: number, run: RunShape, print: (l: string) => void): Promise<string | undefined> {
  const { cfg } = s;
  if (st.best_global_step === null || st.best_metric === null) return undefined;
  const name = metricName(cfg);
  const value = st.best_metric.toFixed(4);
  if (st.best_global_step === totalSteps) return `Best ${name}: ${value} at step ${totalSteps}, the final model in ${cfg.output_dir}`;
  const where = st.best_model_checkpoint;
  if (cfg.load_best_model_at_end && where !== null) {
    try {
      await applyTrained(checkCheckpoint(where, cfg, run, { hashes: true, moments: false }), s.model);
    } catch (err) {
      if (!(err instanceof SftError)) throw err;
      throw new SftError(`load_best_model_at_end: the best checkpoint ${where} fails its checks (${err.message}); the final output was not written, the checkpoints are as they were`);
    }
    print(`load_best_model_at_end: the final output in ${cfg.output_dir} is ${where}'s`);
  }
  if (cfg.save_total_limit === 1 && where !== null && s.world.main) {
    for (const c of listCheckpoints(cfg.output_dir)) if (c.dir !== where) rmSync(c.dir, { recursive: true, force: true });
  }
  if (where === null) return `Best ${name}: ${value} at step ${st.best_global_step} (no checkpoint was saved at that step)`;
  const whereStep = /checkpoint-(\d+)$/.exec(where)?.[1];
  return `Best checkpoint by ${name}: ${where} (${name} ${value} at step ${st.best_global_step}${whereStep !== String(st.best_global_step) ? `; that step was not saved, ${where} was the best when it was` : ''})`;
}

/** On resume, metrics logged after the checkpoint (by the interrupted run) are dropped: they will be
 *  logged again. Rewritten atomically: a crash here never leaves a truncated metrics.jsonl. */
function keepMetricsUpTo(outputDir: string, step: number): void {
  const f = join(outputDir, 'metrics.jsonl');
  if (!existsSync(f)) return;
  const kept = readFileSync(f, 'utf8').split('\n').filter((l) => {
    if (!l.trim()) return false;
    try {
      return (JSON.parse(l) as { step: number }).step <= step;
    } catch {
      return false;
    }
  });
  writeFileAtomic(f, kept.map((l) => l + '\n').join(''));
}

/** Endless micro-batches: epoch after epoch, each shuffled by (seed, epoch), starting after `consumed`
 *  micro-batches (a resumed run skips them without reading their samples). */
function microBatches(data: PreparedDataset, bs: number, seed: number, padId: number, consumed = 0): { next(): Batch } {
  const perEpoch = batchesPerEpoch(data.size, bs);
  let epoch = Math.floor(consumed / perEpoch);
  let it = batches(data, { batchSize: bs, seed, epoch, padId, startBatch: consumed % perEpoch });
  return {
    next() {
      let r = it.next();
      if (r.done) {
        epoch++;
        it = batches(data, { batchSize: bs, seed, epoch, padId });
        r = it.next();
      }
      return r.value as Batch;
    },
  };
}

/** Labels are stored aligned with the inputs (HF convention); the engine wants, at position t,
 *  the token to predict next: targets[t] = labels[t + 1], and -100 at each row's end. */
export function shiftLabels(labels: Int32Array, rows: number, seqLen: number): Int32Array {
  const out = new Int32Array(labels.length).fill(IGNORE);
  for (let r = 0; r < rows; r++) out.set(labels.subarray(r * seqLen + 1, (r + 1) * seqLen), r * seqLen);
  return out;
}

function countTargets(targets: Int32Array): number {
  let n = 0;
  for (const t of targets) if (t >= 0) n++;
  return n;
}

function round(x: number, places: number): number {
  const f = 10 ** places;
  return Math.round(x * f) / f;
}
