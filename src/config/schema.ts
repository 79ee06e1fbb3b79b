// The training config: Firefly's train_args JSON (HF TrainingArguments + Firefly's own keys) plus
// two sft keys (device, threads). Keys keep their snake_case names exactly as they appear in the JSON.
//
// Sources: yangjianxin1/Firefly component/argument.py and train_args/**/*.json; HF transformers
// TrainingArguments (4.57 and 5.x) for defaults and rules. Where Firefly differs from HF the
// Firefly value wins (e.g. lora_rank 64). Where sft differs from Firefly it says so below.
//
// What this build does with each key. "yes": honoured. "no-effect": accepted so Firefly/HF
// configs load, ignored, and named in one notice when set to a non-default value. Otherwise the
// value decides, as the table says; a notice is printed and training goes on, an error stops
// before anything runs (running would give a result the user did not ask for).
//
//   key                         | default        | this build
//   ----------------------------+----------------+--------------------------------------------------------
//   output_dir                  | (required)     | yes
//   model_name_or_path          | (required)     | yes
//   train_file                  | (required)     | yes
//   max_seq_length              | (required)     | yes (required by Firefly too)
//   template_name               | ""             | yes (the template registry checks the name; "" = the model's chat_template, else Firefly's old format)
//   eval_file                   | ""             | yes: evaluated with the training's template and max_seq_length
//   eval_strategy               | "no"           | no, steps, epoch yes (HF 5 name); needs eval_file
//   evaluation_strategy         | null           | yes: HF 4.x name of eval_strategy (both given and different -> error)
//   eval_steps                  | null           | yes (< 1 = ratio; null = logging_steps, as HF)
//   do_eval                     | false          | yes: true with eval_strategy "no" evaluates once at the end (as
//                               |                | HF's example scripts do); set true by any other eval_strategy
//   per_device_eval_batch_size  | 8              | yes (forward passes hold at most per_device_train_batch_size rows)
//   load_best_model_at_end      | false          | yes: the final output is the best checkpoint's (HF's rules on strategies)
//   metric_for_best_model       | null           | loss / eval_loss yes (the metric sft's evaluation computes); others error
//   greater_is_better           | null           | yes (null: false for a metric ending in "loss", as HF)
//   task_type                   | "sft"          | sft yes; pretrain, dpo -> error "not implemented yet"
//   train_mode                  | "qlora"        | lora, qlora (= lora on an NF4 base), full, prompt_tuning yes
//                               |                | (qlora is Firefly's default: a config without train_mode trains QLoRA there)
//   bits                        | 16 (4 if qlora)| 16, 32 yes (32-bit on the CPU); 4 yes (NF4 + double quant);
//                               |                | 8 -> notice: not quantised, trains in 32-bit;
//                               |                | qlora with bits 16/32 written out -> error (contradiction)
//   lora_rank, lora_alpha,      | 64, 16, 0.05,  | yes
//   lora_dropout,               | "all"          |
//   lora_target_modules         |                | "all" = every linear layer except lm_head (Firefly's rule)
//   num_virtual_tokens,         | 20, "RANDOM",  | train_mode prompt_tuning (PEFT's PROMPT_TUNING);
//   prompt_tuning_init(_text)   | ""             | set with another mode -> notice, ignored
//   max_prompt_length, beta     | 512, 0.1       | only for task_type dpo; set with sft -> notice, ignored
//   num_train_epochs, max_steps | 3, -1          | yes (max_steps > 0 overrides epochs)
//   per_device_train_batch_size | 8              | yes
//   gradient_accumulation_steps | 1              | yes
//   learning_rate, weight_decay | 5e-5, 0        | yes
//   adam_beta1/2, adam_epsilon  | .9,.999,1e-8   | yes
//   max_grad_norm               | 1.0            | yes (0 = no clipping)
//   optim                       | "adamw_torch"  | adamw_torch(_fused), adamw_hf, adamw yes (same AdamW);
//                               |                | paged_adamw_32bit/_8bit: states paged from pinned host memory on a GPU;
//                               |                | 8-/4-bit AdamW variants -> notice: 32-bit states;
//                               |                | any other HF optimizer -> error "not implemented yet"
//   lr_scheduler_type           | "linear"       | constant, constant_with_warmup, linear, cosine yes;
//                               |                | other HF schedulers -> error "not implemented yet"
//   warmup_steps, warmup_ratio  | 0, 0           | yes (warmup_steps < 1 is a ratio, as in HF 5)
//   logging_steps               | 500            | yes (< 1 = ratio of total steps, as in HF)
//   logging_first_step          | false          | yes
//   save_strategy               | "steps"        | no, steps, epoch, best yes (best: when the eval metric improves)
//   save_steps                  | 500            | yes (< 1 = ratio)
//   save_total_limit            | null           | yes (null = keep all checkpoints)
//   seed                        | 42             | yes
//   fp16, bf16                  | false          | bf16: bf16 compute (cuda and cpu); fp16: bf16 on cuda, fp32 on cpu,
//                               |                | with dynamic loss scaling; both -> error
//   gradient_checkpointing      | false          | yes (layers recomputed in backward)
//   report_to                   | "none"         | none, tensorboard, wandb, all yes (metrics.jsonl always written);
//                               |                | other integrations (mlflow, ...) -> notice, ignored
//   disable_tqdm                | false          | yes: true prints plain log lines instead of the progress bar
//   use_unsloth                 | false          | no-effect (a PyTorch library)
//   tokenize_num_workers        | 10             | no-effect
//   dataloader_num_workers      | 0              | no-effect
//   remove_unused_columns       | true           | no-effect
//   ddp_find_unused_parameters  | null           | no-effect
//   deepspeed                   | null           | zero_optimization.stage sets zero_stage (a path, JSON text or object);
//                               |                | the rest of a DeepSpeed config -> notice, no effect
//   local_rank                  | -1             | no-effect
//   logging_dir                 | null           | yes (TensorBoard event files go there)
//   run_name                    | null           | yes (the wandb run's name; default: output_dir's folder name)
//   overwrite_output_dir        | false          | yes: an earlier run in output_dir is moved aside to <output_dir>.replaced-<time>
//   device                      | "auto"         | yes (sft key: cpu | cuda | auto)
//   threads                     | 0              | yes (sft key: CPU threads, 0 = all cores)
//   parse_special_tokens        | false          | yes (sft key: special-token strings in the data's messages become their ids)
//   zero_stage                  | 0              | 1 yes (sft key: ZeRO-1, AdamW state sharded over data-parallel ranks);
//                               |                | 2, 3 -> notice: run as 1 (gradients/parameters not sharded, same result)
//
// Every other key of HF TrainingArguments (4.x and 5.x), of the Model/DataArguments that HF-style
// scripts carry (cache_dir, ...) and of older Firefly versions is in hf-keys.ts: accepted, applied
// where sft can (use_cpu), otherwise named in the "no effect" notice or refused when it would change
// the result. Anything else is an unknown key: one error lists them all, each with the nearest valid key.
// Every number has a range (each check's `allowed` text; configs/README.md's table gives the same).

import { readDeepSpeed } from './deepspeed.js';

export const TRAIN_MODES = ['full', 'lora', 'qlora', 'prompt_tuning'] as const;
export type TrainMode = (typeof TRAIN_MODES)[number];

export const TASK_TYPES = ['sft', 'pretrain', 'dpo'] as const;
export type TaskType = (typeof TASK_TYPES)[number];

/** Every scheduler name HF accepts; lrAt() runs the first four. */
export const LR_SCHEDULER_TYPES = [
  'constant', 'constant_with_warmup', 'linear', 'cosine',
  'cosine_with_restarts', 'polynomial', 'inverse_sqrt', 'reduce_lr_on_plateau',
  'cosine_with_min_lr', 'cosine_warmup_with_min_lr', 'warmup_stable_decay',
] as const;
export type LrSchedulerType = (typeof LR_SCHEDULER_TYPES)[number];
export const IMPLEMENTED_LR_SCHEDULERS: readonly LrSchedulerType[] = ['constant', 'constant_with_warmup', 'linear', 'cosine'];

/** AdamW under every name HF (4.x and 5.x) and Firefly configs use for it. */
const ADAMW = ['adamw_torch', 'adamw_torch_fused', 'adamw_hf', 'adamw'] as const;
/** Same update as AdamW; they differ in where or how precisely the states are stored. */
const ADAMW_PAGED = ['paged_adamw_32bit'] as const;
const ADAMW_LOW_BIT = ['adamw_8bit', 'adamw_bnb_8bit', 'paged_adamw_8bit', 'adamw_torch_8bit', 'adamw_torch_4bit'] as const;
/** Other HF optimizers: accepted by name so the error can say "not implemented" rather than "unknown". */
const OTHER_OPTIMIZERS = [
  'adamw_torch_xla', 'adamw_torch_npu_fused', 'adamw_apex_fused', 'adafactor', 'adamw_anyprecision',
  'ademamix', 'sgd', 'adagrad', 'ademamix_8bit', 'lion_8bit', 'lion_32bit', 'paged_ademamix_32bit',
  'paged_ademamix_8bit', 'paged_lion_32bit', 'paged_lion_8bit', 'rmsprop', 'rmsprop_bnb', 'rmsprop_bnb_8bit',
  'rmsprop_bnb_32bit', 'galore_adamw', 'galore_adamw_8bit', 'galore_adafactor', 'galore_adamw_layerwise',
  'galore_adamw_8bit_layerwise', 'galore_adafactor_layerwise', 'lomo', 'adalomo', 'grokadamw',
  'schedule_free_radam', 'schedule_free_adamw', 'schedule_free_sgd', 'apollo_adamw', 'apollo_adamw_layerwise',
] as const;
/** Optimizers whose AdamW states the engine keeps in 8-bit blocks (bitsandbytes' layout). */
export function isEightBitOptim(optim: string): boolean {
  return ['adamw_8bit', 'adamw_bnb_8bit', 'paged_adamw_8bit'].includes(optim);
}
/** Optimizers whose states page between pinned host memory and the GPU (the same update). */
export function isPagedOptim(optim: string): boolean {
  return ['paged_adamw_32bit', 'paged_adamw_8bit'].includes(optim);
}
export const OPTIMIZERS = [...ADAMW, ...ADAMW_PAGED, ...ADAMW_LOW_BIT, ...OTHER_OPTIMIZERS] as const;
export type Optimizer = (typeof OPTIMIZERS)[number];

/** HF report_to integrations ("all" and "none" included). */
export const REPORTERS = [
  'none', 'all', 'azure_ml', 'clearml', 'codecarbon', 'comet_ml', 'dagshub', 'dvclive', 'flyte', 'mlflow',
  'neptune', 'swanlab', 'tensorboard', 'trackio', 'wandb',
] as const;

export const SAVE_STRATEGIES = ['no', 'steps', 'epoch', 'best'] as const;
export const EVAL_STRATEGIES = ['no', 'steps', 'epoch'] as const;
/** The metrics sft's evaluation returns (with or without HF's "eval_" prefix). */
export const EVAL_METRICS = ['loss', 'eval_loss'] as const;
export const PROMPT_TUNING_INITS = ['TEXT', 'SAMPLE_VOCAB', 'RANDOM'] as const;
export const DEVICES = ['cpu', 'cuda', 'auto'] as const;

export interface TrainConfig {
  output_dir: string;
  model_name_or_path: string;
  train_file: string;
  max_seq_length: number;
  template_name: string;
  eval_file: string;
  /** >= 1: every N steps; in (0, 1): ratio of total steps; null: logging_steps. See resolveEvalPlan(). */
  eval_steps: number | null;
  /** Resolved: evaluation_strategy, when only it is given, is copied here. */
  eval_strategy: (typeof EVAL_STRATEGIES)[number];
  evaluation_strategy: (typeof EVAL_STRATEGIES)[number] | null;
  do_eval: boolean;
  per_device_eval_batch_size: number;
  load_best_model_at_end: boolean;
  /** Resolved as HF: "loss" when load_best_model_at_end or save_strategy "best" and unset. */
  metric_for_best_model: string | null;
  /** Resolved as HF: false for a metric ending in "loss", else true. */
  greater_is_better: boolean | null;
  task_type: TaskType;
  train_mode: TrainMode;
  bits: 4 | 8 | 16 | 32;
  lora_rank: number;
  lora_alpha: number;
  lora_dropout: number;
  /** "all" = every linear layer except lm_head; otherwise module names such as q_proj or W_pack. */
  lora_target_modules: 'all' | string[];
  num_virtual_tokens: number;
  prompt_tuning_init: (typeof PROMPT_TUNING_INITS)[number];
  prompt_tuning_init_text: string;
  max_prompt_length: number;
  beta: number;
  num_train_epochs: number;
  /** -1: run num_train_epochs; > 0: run exactly this many optimizer steps. */
  max_steps: number;
  per_device_train_batch_size: number;
  gradient_accumulation_steps: number;
  learning_rate: number;
  weight_decay: number;
  adam_beta1: number;
  adam_beta2: number;
  adam_epsilon: number;
  max_grad_norm: number;
  optim: Optimizer;
  lr_scheduler_type: LrSchedulerType;
  /** >= 1: steps; in (0, 1): ratio of total steps; 0: use warmup_ratio. See resolveWarmup(). */
  warmup_steps: number;
  warmup_ratio: number;
  /** >= 1: every N steps; in (0, 1): ratio of total steps. See resolveInterval(). */
  logging_steps: number;
  logging_first_step: boolean;
  save_strategy: (typeof SAVE_STRATEGIES)[number];
  save_steps: number;
  save_total_limit: number | null;
  seed: number;
  fp16: boolean;
  bf16: boolean;
  gradient_checkpointing: boolean;
  /** Normalised to a list: "none" -> [], "wandb" -> ["wandb"]. */
  report_to: string[];
  disable_tqdm: boolean;
  use_unsloth: boolean;
  tokenize_num_workers: number;
  dataloader_num_workers: number;
  remove_unused_columns: boolean;
  ddp_find_unused_parameters: boolean | null;
  deepspeed: string | Record<string, unknown> | null;
  local_rank: number;
  logging_dir: string | null;
  run_name: string | null;
  overwrite_output_dir: boolean;
  device: (typeof DEVICES)[number];
  /** CPU threads; 0 = all cores. */
  threads: number;
  /** Special tokens written as text in the data's messages become their ids (default: text stays text). */
  parse_special_tokens: boolean;
  /** ZeRO stage (DeepSpeed's numbering): >= 1 shards the AdamW state over the data-parallel ranks. */
  zero_stage: number;
}

// ---- value checks -------------------------------------------------------------------------

export const BAD = Symbol('bad value');
export const REQUIRED = Symbol('required');

/** How a command-line token becomes a value before the check sees it (HfArgumentParser's rules). */
export type TextForm = 'string' | 'number' | 'bool' | 'list' | 'json';

export interface Check<T> {
  /** What is allowed, for error messages: "an integer >= 1". */
  allowed: string;
  text: TextForm;
  /** The normalised value, or BAD. */
  accept(v: unknown): T | typeof BAD;
  /** Allowed words, for "did you mean" on a misspelt value. */
  words?: readonly string[];
  nullable?: boolean;
}

export const str = (nonEmpty = false): Check<string> => ({
  allowed: nonEmpty ? 'a non-empty string' : 'a string',
  text: 'string',
  accept: (v) => (typeof v === 'string' && (!nonEmpty || v.trim() !== '') ? v : BAD),
});

// Every number has an upper bound, generous enough that no real run meets it (Firefly and
// LLaMA-Factory configs stay far below), so that a typo such as 1e30 or 100000 stops here, naming
// the key, instead of exhausting memory, overflowing a step count or aborting in the engine.
const MAX_TOKENS = 2 ** 20;  // max_seq_length, max_prompt_length: 1M-token contexts fit
const MAX_STEPS = 1e8;       // max_steps, warmup and the logging/saving intervals
const MAX_WORKERS = 4096;    // threads and worker counts: more than any machine's cores

/** 1e6 and above as 1e6, 1e8 ... when a power of ten: the bound reads at a glance. */
const show = (n: number): string => (n >= 1e6 && Number.isInteger(Math.log10(n)) ? `1e${Math.log10(n)}` : String(n));

export const int = (min: number, max: number): Check<number> => ({
  allowed: `an integer from ${show(min)} to ${show(max)}`,
  text: 'number',
  accept: (v) => (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? v : BAD),
});

/** A number in [min, max], or (min, ...] / [..., max) where open. */
export const num = (min: number, max: number, open: { min?: boolean; max?: boolean } = {}): Check<number> => {
  const lo = open.min ? `> ${show(min)}` : `>= ${show(min)}`;
  const hi = open.max ? `< ${show(max)}` : `<= ${show(max)}`;
  return {
    allowed: `a number ${lo} and ${hi}`,
    text: 'number',
    accept: (v) =>
      typeof v === 'number' && Number.isFinite(v) && (open.min ? v > min : v >= min) && (open.max ? v < max : v <= max) ? v : BAD,
  };
};

export const bool = (): Check<boolean> => ({
  allowed: 'true or false',
  text: 'bool',
  accept: (v) => (typeof v === 'boolean' ? v : BAD),
});

function oneOf<T extends string | number>(values: readonly T[], allowed?: string): Check<T> {
  const numeric = typeof values[0] === 'number';
  return {
    allowed: allowed ?? `one of ${values.map((x) => (numeric ? String(x) : `"${x}"`)).join(', ')}`,
    text: numeric ? 'number' : 'string',
    accept: (v) => (values.includes(v as T) ? (v as T) : BAD),
    words: numeric ? undefined : (values as readonly string[]),
  };
}

/** HF's logging_steps/save_steps/eval_steps (min 1) and warmup_steps (min 0): an integer count, or
 *  a ratio of the total steps. */
const interval = (min = 1): Check<number> => ({
  allowed: `an integer from ${min} to ${show(MAX_STEPS)}, or a ratio in (0, 1) of the total steps`,
  text: 'number',
  accept: (v) => (typeof v === 'number' && (Number.isInteger(v) ? v >= min && v <= MAX_STEPS : v > 0 && v < 1) ? v : BAD),
});

export function orNull<T>(c: Check<T>): Check<T | null> {
  return { ...c, allowed: `${c.allowed}, or null`, nullable: true, accept: (v) => (v === null ? null : c.accept(v)) };
}

const isStringList = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string' && x.trim() !== '');

/** A list of names: a JSON list, or one comma-separated string. */
const names = (v: unknown): string[] | undefined =>
  typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter((s) => s !== '') : isStringList(v) ? v.map((s) => s.trim()) : undefined;

const targetModules: Check<'all' | string[]> = {
  allowed: '"all" or a list of module names such as ["q_proj", "v_proj"] (or "q_proj,v_proj")',
  text: 'list',
  accept: (v) => {
    const list = names(v);
    if (!list || list.length === 0) return BAD;
    if (list.includes('all')) return list.length === 1 ? 'all' : BAD;
    return list;
  },
};

const reportTo: Check<string[]> = {
  allowed: `"none", "all" or a list of integrations (${REPORTERS.filter((r) => r !== 'none' && r !== 'all').join(', ')})`,
  text: 'list',
  words: REPORTERS,
  accept: (v) => {
    if (v === null || (Array.isArray(v) && v.length === 0)) return [];  // [] is how a resolved config writes "none"
    const list = names(v);
    if (!list || list.length === 0 || !list.every((r) => (REPORTERS as readonly string[]).includes(r))) return BAD;
    if (list.includes('none')) return list.length === 1 ? [] : BAD;
    return list;
  },
};

/** ZeRO's stage, DeepSpeed's numbering; the text says what each does here (train --help shows it). */
const zeroStage: Check<number> = {
  ...int(0, 3),
  allowed: 'an integer from 0 to 3: 1 shards the AdamW state over the data-parallel ranks (each keeps 1/N of it); 2, 3 run as 1; 0 = off',
};

const maxSteps: Check<number> = {
  allowed: `-1 (train num_train_epochs) or an integer from 1 to ${show(MAX_STEPS)}`,
  text: 'number',
  accept: (v) => (typeof v === 'number' && Number.isInteger(v) && (v === -1 || (v >= 1 && v <= MAX_STEPS)) ? v : BAD),
};

const deepspeed: Check<string | Record<string, unknown> | null> = {
  allowed: 'a DeepSpeed config (a path, JSON text or an object; its zero_optimization.stage sets zero_stage), or null',
  text: 'string',
  nullable: true,
  accept: (v) => (v === null || typeof v === 'string' || (typeof v === 'object' && !Array.isArray(v)) ? (v as string | Record<string, unknown> | null) : BAD),
};

// ---- what this build does with a value ------------------------------------------------------

export type Finding = { notice: string } | { error: string };

/** honoured | depends on the value (see `support`) | never honoured | accepted and ignored */
export type Implemented = 'yes' | 'partly' | 'no' | 'no-effect';

export interface KeySpec<T> {
  check: Check<T>;
  default: T | typeof REQUIRED;
  implemented: Implemented;
  /** One line for --help and configs/README.md. */
  help: string;
  /** Called when the value differs from the default: what this build does about it. */
  support?: (value: T, cfg: TrainConfig) => Finding | undefined;
}

const notYet = (what: string, instead: string): Finding => ({ error: `${what} is not implemented yet in this build; ${instead}` });
const notice = (s: string): Finding => ({ notice: s });

export const SCHEMA: { readonly [K in keyof TrainConfig]: KeySpec<TrainConfig[K]> } = {
  output_dir: { check: str(true), default: REQUIRED, implemented: 'yes', help: 'folder for the adapter, checkpoints and metrics.jsonl' },
  model_name_or_path: { check: str(true), default: REQUIRED, implemented: 'yes', help: 'base model folder (config.json, weights, tokenizer)' },
  train_file: { check: str(true), default: REQUIRED, implemented: 'yes', help: 'training data: JSON Lines or one JSON array of records (Firefly, ChatML or alpaca)' },
  max_seq_length: { check: int(2, MAX_TOKENS), default: REQUIRED, implemented: 'yes', help: 'tokens per example; longer examples are cut on the right' },
  template_name: { check: str(), default: '', implemented: 'yes', help: 'chat template: chat_template (the model\'s own), or Firefly\'s qwen, baichuan, baichuan2, llama2, llama3, yi, default, ...; empty: the model\'s chat_template, else Firefly\'s old format' },
  // Evaluation during training (src/train/evaluation.ts). The rules between these keys are HF's
  // TrainingArguments.__post_init__ ones, checked in resolveEvalKeys().
  eval_file: {
    check: str(), default: '', implemented: 'yes', help: 'evaluation data (same formats as train_file); eval_loss = mean token cross-entropy over its trained tokens',
    support: (v, c) => (evaluates(c) ? undefined : notice(`eval_file="${v}" is not evaluated: eval_strategy is "no" and do_eval is false; set eval_strategy "steps" or "epoch" (or do_eval true for one evaluation at the end)`)),
  },
  eval_steps: {
    check: orNull(interval()), default: null, implemented: 'yes', help: 'eval_strategy "steps": evaluate every N steps (< 1: ratio of total steps; null: logging_steps)',
    support: (v, c) => (c.eval_strategy === 'steps' ? undefined : notice(`eval_steps=${v} only applies to eval_strategy "steps" (it is "${c.eval_strategy}"); ignored`)),
  },
  eval_strategy: {
    check: oneOf(EVAL_STRATEGIES), default: 'no', implemented: 'yes', help: 'when to evaluate eval_file: no, steps (every eval_steps) or epoch (at each epoch end)',
  },
  evaluation_strategy: {
    check: orNull(oneOf(EVAL_STRATEGIES)), default: null, implemented: 'yes', help: 'the HF 4.x name of eval_strategy',
  },
  do_eval: {
    check: bool(), default: false, implemented: 'yes', help: 'with eval_strategy "no": evaluate eval_file once after training (as HF example scripts do); true whenever eval_strategy is not "no"',
  },
  per_device_eval_batch_size: {
    check: int(1, 65536), default: 8, implemented: 'yes', help: 'eval samples per batch (forward passes hold at most per_device_train_batch_size of them, within the run\'s memory plan)',
  },
  load_best_model_at_end: {
    check: bool(), default: false, implemented: 'yes', help: 'the final output is the best checkpoint by metric_for_best_model (its checkpoint is never rotated away)',
  },
  metric_for_best_model: {
    check: orNull(str(true)), default: null, implemented: 'yes', help: 'metric that picks the best checkpoint: loss (= eval_loss), the one sft computes',
  },
  greater_is_better: {
    check: orNull(bool()), default: null, implemented: 'yes', help: 'whether a higher metric is better; null: false for a metric ending in "loss"',
  },
  task_type: {
    check: oneOf(TASK_TYPES), default: 'sft', implemented: 'partly', help: 'sft (pretrain and dpo not implemented yet)',
    support: (v) => notYet(`task_type="${v}"`, 'use task_type "sft"'),
  },
  train_mode: {
    check: oneOf(TRAIN_MODES), default: 'qlora', implemented: 'partly', help: 'qlora (LoRA on an NF4 base; Firefly\'s default), lora, full (every weight; writes a whole model), prompt_tuning (virtual tokens)',
    // qlora is lora over a 4-bit base (bits defaults to 4 for it).
    support: () => undefined,
  },
  bits: {
    check: oneOf([4, 8, 16, 32] as const), default: 16, implemented: 'partly', help: 'base weight precision; 4 = QLoRA: frozen linear weights in NF4 with double quantization (8 not implemented yet)',
    support: (v) =>
      v === 8 ? notice(`bits=8 is not implemented yet in this build; the base model is not quantised and training runs in 32-bit`) : undefined,
  },
  lora_rank: { check: int(1, 65536), default: 64, implemented: 'yes', help: 'LoRA rank r' },
  lora_alpha: { check: num(0, 1e6, { min: true }), default: 16, implemented: 'yes', help: 'LoRA scale numerator: scale = lora_alpha / lora_rank' },
  lora_dropout: { check: num(0, 1, { max: true }), default: 0.05, implemented: 'yes', help: 'dropout on the LoRA input' },
  lora_target_modules: { check: targetModules, default: 'all', implemented: 'yes', help: '"all" linear layers but lm_head, or a list of module names' },
  num_virtual_tokens: {
    check: int(1, 65536), default: 20, implemented: 'yes', help: 'prompt tuning: number of virtual tokens',
    support: (v, c) => (c.train_mode === 'prompt_tuning' ? undefined : notice(`num_virtual_tokens=${v} only applies to train_mode "prompt_tuning"; ignored`)),
  },
  prompt_tuning_init: {
    check: oneOf(PROMPT_TUNING_INITS), default: 'RANDOM', implemented: 'yes', help: 'prompt tuning init: TEXT (embeddings of prompt_tuning_init_text), SAMPLE_VOCAB or RANDOM',
    support: (v, c) => (c.train_mode === 'prompt_tuning' ? undefined : notice(`prompt_tuning_init="${v}" only applies to train_mode "prompt_tuning"; ignored`)),
  },
  prompt_tuning_init_text: {
    check: str(), default: '', implemented: 'yes', help: 'prompt tuning: the text whose token embeddings initialise the virtual tokens (TEXT init)',
    support: (_v, c) => (c.train_mode === 'prompt_tuning' ? undefined : notice('prompt_tuning_init_text only applies to train_mode "prompt_tuning"; ignored')),
  },
  max_prompt_length: {
    check: int(1, MAX_TOKENS), default: 512, implemented: 'no', help: 'DPO: prompt length limit',
    support: (v, c) => (c.task_type === 'dpo' ? undefined : notice(`max_prompt_length=${v} only applies to task_type "dpo"; ignored`)),
  },
  beta: {
    check: num(0, 1000, { min: true }), default: 0.1, implemented: 'no', help: 'DPO: beta of the DPO loss',
    support: (v, c) => (c.task_type === 'dpo' ? undefined : notice(`beta=${v} only applies to task_type "dpo"; ignored`)),
  },
  num_train_epochs: { check: num(0, 1e6, { min: true }), default: 3, implemented: 'yes', help: 'epochs (may be fractional); max_steps > 0 overrides' },
  max_steps: { check: maxSteps, default: -1, implemented: 'yes', help: 'optimizer steps; -1 = from num_train_epochs' },
  per_device_train_batch_size: { check: int(1, 65536), default: 8, implemented: 'yes', help: 'examples per forward/backward pass' },
  gradient_accumulation_steps: { check: int(1, 1e6), default: 1, implemented: 'yes', help: 'passes per optimizer step' },
  learning_rate: { check: num(0, 10), default: 5e-5, implemented: 'yes', help: 'peak learning rate' },
  weight_decay: { check: num(0, 10), default: 0, implemented: 'yes', help: 'AdamW decoupled weight decay' },
  adam_beta1: { check: num(0, 1, { max: true }), default: 0.9, implemented: 'yes', help: 'AdamW beta1' },
  adam_beta2: { check: num(0, 1, { max: true }), default: 0.999, implemented: 'yes', help: 'AdamW beta2' },
  adam_epsilon: { check: num(0, 1), default: 1e-8, implemented: 'yes', help: 'AdamW epsilon' },
  max_grad_norm: { check: num(0, 1e9), default: 1.0, implemented: 'yes', help: 'clip the global gradient norm; 0 = no clipping' },
  optim: {
    check: oneOf(OPTIMIZERS, 'an HF optimizer name such as "adamw_torch"'), default: 'adamw_torch', implemented: 'partly',
    help: 'adamw_torch / adamw_hf / adamw; adamw_8bit / paged_adamw_8bit: 8-bit blockwise states; paged variants page only on the GPU',
    support: (v) => {
      if ((ADAMW as readonly string[]).includes(v)) return undefined;
      if ((ADAMW_PAGED as readonly string[]).includes(v)) return notice(`optim="${v}": AdamW with 32-bit states; on the GPU they live in pinned host memory and page to the device in chunks (same update); on the CPU, plain AdamW`);
      if (v === 'paged_adamw_8bit') return notice(`optim="${v}": 8-bit AdamW states; on the GPU they live in pinned host memory and page to the device in chunks (same update)`);
      if (v === 'adamw_8bit' || v === 'adamw_bnb_8bit') return undefined;
      if ((ADAMW_LOW_BIT as readonly string[]).includes(v)) return notice(`optim="${v}": these low-bit states are not implemented yet in this build; using AdamW with 32-bit states (adamw_8bit is available)`);
      return notYet(`optim="${v}"`, 'use optim "adamw_torch"');
    },
  },
  lr_scheduler_type: {
    check: oneOf(LR_SCHEDULER_TYPES), default: 'linear', implemented: 'partly', help: 'constant, constant_with_warmup, linear or cosine',
    support: (v) => (IMPLEMENTED_LR_SCHEDULERS.includes(v) ? undefined : notYet(`lr_scheduler_type="${v}"`, `use one of ${IMPLEMENTED_LR_SCHEDULERS.join(', ')}`)),
  },
  warmup_steps: {
    check: interval(0),
    default: 0, implemented: 'yes', help: 'linear warmup steps (< 1: ratio of total steps); overrides warmup_ratio',
  },
  warmup_ratio: {
    check: num(0, 1), default: 0, implemented: 'yes', help: 'warmup as a ratio of total steps when warmup_steps is 0',
    support: (v, c) => (c.warmup_steps > 0 ? notice(`warmup_ratio=${v} is ignored because warmup_steps=${c.warmup_steps} is set (HF rule)`) : undefined),
  },
  logging_steps: { check: interval(), default: 500, implemented: 'yes', help: 'log every N optimizer steps (< 1: ratio of total steps)' },
  logging_first_step: { check: bool(), default: false, implemented: 'yes', help: 'also log after the first step' },
  save_strategy: {
    check: oneOf(SAVE_STRATEGIES), default: 'steps', implemented: 'yes', help: 'no, steps (every save_steps), epoch (each epoch end) or best (each evaluation that improves metric_for_best_model)',
  },
  save_steps: { check: interval(), default: 500, implemented: 'yes', help: 'checkpoint every N steps (< 1: ratio of total steps)' },
  save_total_limit: { check: orNull(int(1, 1e6)), default: null, implemented: 'yes', help: 'keep at most N checkpoints; null = all' },
  seed: { check: int(0, 2 ** 32 - 1), default: 42, implemented: 'yes', help: 'seed for LoRA init, dropout and data order' },
  fp16: {
    check: bool(), default: false, implemented: 'partly', help: 'dynamic loss scaling as torch.amp.GradScaler (inf/NaN steps skipped, scale in checkpoints); compute: bf16 on a GPU, fp32 on the CPU (bf16: true computes bf16 on both)',
    support: () => notice('fp16=true: dynamic loss scaling runs as in HF (GradScaler); there are no fp16 kernels: the compute is bf16 on a GPU and fp32 on the CPU; bf16=true trains in bf16 on both (fp32\'s range: no scaling needed)'),
  },
  bf16: {
    check: bool(), default: false, implemented: 'yes', help: 'bfloat16 frozen weights and activations with fp32 master weights, gradients and optimizer state, on a GPU and on the CPU (as torch.autocast with bfloat16); saved adapters are fp32',
  },
  gradient_checkpointing: {
    check: bool(), default: false, implemented: 'yes', help: 'keep only each layer input; recompute the layer in backward (less memory, more compute)',
  },
  report_to: {
    check: reportTo, default: [], implemented: 'partly', help: 'tensorboard, wandb (or all); sft always writes <output_dir>/metrics.jsonl',
    support: (v) => {
      const other = v.filter((r) => !['tensorboard', 'wandb', 'all'].includes(r));
      return other.length ? notice(`report_to=${other.join(',')} is not implemented yet in this build; ignored (tensorboard and wandb are; metrics also go to <output_dir>/metrics.jsonl)`) : undefined;
    },
  },
  disable_tqdm: { check: bool(), default: false, implemented: 'yes', help: 'plain log lines instead of the progress bar' },
  use_unsloth: { check: bool(), default: false, implemented: 'no-effect', help: 'Unsloth speed-ups (a PyTorch library)' },
  tokenize_num_workers: { check: int(1, MAX_WORKERS), default: 10, implemented: 'no-effect', help: 'Firefly pretraining tokenizer processes' },
  dataloader_num_workers: { check: int(0, MAX_WORKERS), default: 0, implemented: 'no-effect', help: 'PyTorch DataLoader workers' },
  remove_unused_columns: { check: bool(), default: true, implemented: 'no-effect', help: 'HF Trainer dataset plumbing' },
  ddp_find_unused_parameters: { check: orNull(bool()), default: null, implemented: 'no-effect', help: 'PyTorch DDP plumbing' },
  deepspeed: {
    check: deepspeed, default: null, implemented: 'partly', help: 'DeepSpeed config (a path, JSON text or object): its zero_optimization.stage sets zero_stage; the rest has no effect',
    support: (v) => {
      if (v === null) return undefined;
      const ds = readDeepSpeed(v);
      if ('error' in ds || !ds.others.length) return undefined;  // errors: resolveBetweenKeys
      const shown = ds.others.slice(0, 4).join(', ') + (ds.others.length > 4 ? `, ... (${ds.others.length} keys)` : '');
      return notice(`deepspeed: only zero_optimization.stage is read from ${ds.source} (zero_stage ${ds.stage}); ${shown} ${ds.others.length > 1 ? 'have' : 'has'} no effect in sft (its own keys set the batch, precision and optimizer)`);
    },
  },
  local_rank: { check: int(-1, 65535), default: -1, implemented: 'no-effect', help: 'distributed rank, set by launchers' },
  logging_dir: { check: orNull(str()), default: null, implemented: 'yes', help: 'TensorBoard folder (default <output_dir>/runs/<date>_<host>, as HF)' },
  run_name: { check: orNull(str()), default: null, implemented: 'yes', help: "the wandb run's name (default: the name of output_dir's folder, as HF)" },
  overwrite_output_dir: {
    check: bool(), default: false, implemented: 'yes',
    help: 'start over in an output_dir that holds an earlier run: the earlier run is first moved aside to <output_dir>.replaced-<time> (never mixed with the new one, never deleted)',
  },
  device: { check: oneOf(DEVICES), default: 'auto', implemented: 'yes', help: 'cpu, cuda or auto (cuda when a GPU is usable)' },
  threads: { check: int(0, MAX_WORKERS), default: 0, implemented: 'yes', help: 'CPU threads; 0 = all cores' },
  parse_special_tokens: {
    check: bool(), default: false, implemented: 'yes',
    help: "special tokens written as text in the data's messages (<|im_end|>, </s>, ...) become their ids; false: messages are text and only the template writes special tokens",
  },
  zero_stage: {
    check: zeroStage, default: 0, implemented: 'partly',
    help: 'ZeRO on a data-parallel run (mpirun / --nproc-per-node N): 1 = each rank keeps the AdamW state of 1/N of the trainable weights (same result, less memory); 2, 3 run as 1; 0 = off; set by a deepspeed config\'s zero_optimization.stage too',
    support: (v) =>
      v >= 2
        ? notice(`ZeRO stage ${v}: sft runs ZeRO stage 1: the AdamW state is sharded over the ranks, the gradients${v === 3 ? ' and parameters are' : ' are'} not; the training result is the same, only the memory per rank differs`)
        : undefined,
  },
};

export const KEYS = Object.keys(SCHEMA) as (keyof TrainConfig)[];

export function isKey(k: string): k is keyof TrainConfig {
  return Object.prototype.hasOwnProperty.call(SCHEMA, k);
}

export function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Rules between keys, after defaults are filled in. `given` holds the keys the user wrote.
 * Fills derived values in place (qlora's 4 bits) and returns errors to raise.
 */
export function resolveBetweenKeys(cfg: TrainConfig, given: ReadonlySet<string>): string[] {
  const errors: string[] = [];
  if (cfg.train_mode === 'qlora') {
    if (!given.has('bits')) cfg.bits = 4;
    else if (cfg.bits === 16 || cfg.bits === 32) {
      // A config that sets bits but not train_mode most likely wants plain LoRA: say where qlora came from.
      const mode = given.has('train_mode') ? 'train_mode "qlora"' : 'train_mode is not set, so it is "qlora" (Firefly\'s default), which';
      errors.push(`${mode} quantises the base model to 4 bits, but bits=${cfg.bits}; set bits to 4, or set train_mode "lora" for LoRA on a ${cfg.bits}-bit base`);
    }
  }
  if (cfg.train_mode === 'full' && cfg.bits === 4) {
    errors.push('train_mode "full" trains every weight, which cannot stay 4-bit; set bits to 16 or 32, or use train_mode "qlora"');
  }
  if (cfg.deepspeed !== null) {
    const ds = readDeepSpeed(cfg.deepspeed);
    if ('error' in ds) errors.push(ds.error);
    else if (!given.has('zero_stage')) cfg.zero_stage = ds.stage;
    else if (cfg.zero_stage !== ds.stage) errors.push(`zero_stage ${cfg.zero_stage} and ${ds.source}'s zero_optimization.stage ${ds.stage} disagree; keep one of them`);
  }
  if (cfg.fp16 && cfg.bf16) errors.push('fp16 and bf16 are both true; at most one of them can be true');
  if (cfg.train_mode === 'prompt_tuning' && cfg.prompt_tuning_init === 'TEXT' && cfg.prompt_tuning_init_text.trim() === '') {
    errors.push('prompt_tuning_init "TEXT" needs prompt_tuning_init_text');
  }
  errors.push(...resolveEvalKeys(cfg, given));
  return errors;
}

/** Whether the run evaluates eval_file at all (during training, or once at the end). */
export function evaluates(cfg: Pick<TrainConfig, 'eval_strategy' | 'do_eval'>): boolean {
  return cfg.eval_strategy !== 'no' || cfg.do_eval;
}

/** HF's rules between the evaluation keys (TrainingArguments.__post_init__), in place. */
function resolveEvalKeys(cfg: TrainConfig, given: ReadonlySet<string>): string[] {
  const errors: string[] = [];
  if (cfg.evaluation_strategy !== null) {
    if (!given.has('eval_strategy')) cfg.eval_strategy = cfg.evaluation_strategy;
    else if (cfg.eval_strategy !== cfg.evaluation_strategy) {
      errors.push(`evaluation_strategy "${cfg.evaluation_strategy}" and eval_strategy "${cfg.eval_strategy}" disagree (evaluation_strategy is HF 4.x's name for eval_strategy); keep one of them`);
    }
  }
  if (cfg.eval_strategy !== 'no') cfg.do_eval = true;
  if (cfg.metric_for_best_model === null && (cfg.load_best_model_at_end || cfg.save_strategy === 'best')) cfg.metric_for_best_model = 'loss';
  if (cfg.greater_is_better === null && cfg.metric_for_best_model !== null) cfg.greater_is_better = !cfg.metric_for_best_model.endsWith('loss');
  if (cfg.metric_for_best_model !== null && !(EVAL_METRICS as readonly string[]).includes(cfg.metric_for_best_model)) {
    errors.push(`metric_for_best_model "${cfg.metric_for_best_model}": sft's evaluation computes eval_loss only; use "loss" (or "eval_loss")`);
  }
  if (evaluates(cfg) && cfg.eval_file.trim() === '') {
    errors.push(`${cfg.eval_strategy !== 'no' ? `eval_strategy "${cfg.eval_strategy}"` : 'do_eval true'} needs eval_file (the evaluation data)`);
  }
  if (cfg.save_strategy === 'best' && cfg.eval_strategy === 'no') {
    errors.push('save_strategy "best" saves when an evaluation improves metric_for_best_model, but eval_strategy is "no"; set eval_strategy "steps" or "epoch" (and eval_file)');
  }
  if (cfg.load_best_model_at_end) {
    if (cfg.eval_strategy === 'no') errors.push('load_best_model_at_end needs evaluation during training; set eval_strategy "steps" or "epoch" (and eval_file)');
    else if (cfg.save_strategy !== 'best' && cfg.save_strategy !== cfg.eval_strategy) {
      errors.push(`load_best_model_at_end needs save_strategy to match eval_strategy (or be "best"), as in HF; they are "${cfg.save_strategy}" and "${cfg.eval_strategy}"`);
    } else if (cfg.save_strategy === 'steps') {
      const evalSteps = cfg.eval_steps ?? cfg.logging_steps;
      const bothRatios = evalSteps < 1 && cfg.save_steps < 1;
      const whole = (x: number) => Math.round(x * 1e6);
      if ((evalSteps < 1) !== (cfg.save_steps < 1) || (bothRatios ? whole(cfg.save_steps) % whole(evalSteps) !== 0 : cfg.save_steps % evalSteps !== 0)) {
        errors.push(`load_best_model_at_end needs save_steps (${cfg.save_steps}) to be a multiple of eval_steps (${evalSteps}${cfg.eval_steps === null ? ', from logging_steps' : ''}), as in HF, so that every checkpoint has its evaluation`);
      }
    }
  }
  return errors;
}
