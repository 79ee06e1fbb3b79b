// Keys a Firefly/HF config may carry that the schema (schema.ts) does not hold: the rest of HF
// TrainingArguments, the Model/DataArguments keys that HF-style training scripts put in the same
// JSON (cache_dir, ...), and keys of earlier Firefly versions. They are accepted so such a config
// loads unchanged. None of them enters the resolved config: a key is applied to a schema key where
// sft can honour it (use_cpu -> device "cpu"), refused where ignoring it would change the result
// (label_smoothing_factor), and otherwise named once in the "no effect" notice when its value is
// not a default.
//
// Source: transformers' src/transformers/training_args.py, the TrainingArguments fields of about
// 4.29 and 4.50 and of 4.57 and 5.18, the deprecated and removed ones included (evaluation_strategy,
// sharded_ddp, xpu_backend, ...; test/fixtures/reference/training_args_fields.json); Firefly's
// component/argument.py history. A key whose default changed between versions lists every
// default: none of them is news.
import { BAD, bool, int, isKey, num, orNull, str, type Check, type TextForm } from './schema.js';

/** Why a key does nothing here: the text of the notice. */
const WHY = {
  plumbing: 'PyTorch/HF plumbing',
  hub: 'sft does not upload to the Hugging Face Hub',
  loading: 'download and loading options: sft reads model_name_or_path as a local folder',
  data: "sft's data order: shuffled by seed each epoch, the last partial batch kept",
  logging: 'sft logs every logging_steps to metrics.jsonl and report_to',
  saving: 'sft always writes safetensors checkpoints with their optimizer state',
  resume: 'sft resumes with --resume',
  pretrain: 'Firefly pretraining; task_type "pretrain" is not implemented yet',
  eval: 'evaluation during training is not implemented yet',
} as const;
export type Why = keyof typeof WHY;
export const whyText = (w: Why): string => WHY[w];

export interface OtherKey {
  check: Check<unknown>;
  /** Values that are some version's default (the first is shown by --help). */
  defaults: readonly unknown[];
  why: Why;
  /** Where sft honours the key: sets schema keys in `values` (what the user wrote), or returns an error. */
  apply?: (v: unknown, values: Record<string, unknown>) => string | undefined;
  /** Ignoring a non-default value would train something else than asked: refuse it, saying this. */
  refuse?: string;
}

// Value checks, loose where HF is loose: a no-effect key only has to be of the type HF reads.
const BIG = 2 ** 31 - 1;
const any = (allowed: string, text: TextForm, ok: (v: unknown) => boolean): Check<unknown> => ({ allowed, text, accept: (v) => (ok(v) ? v : BAD) });
const B = bool() as Check<unknown>;
const B_ = orNull(bool()) as Check<unknown>;
const I = int(-1, BIG) as Check<unknown>;
const I_ = orNull(int(-1, BIG)) as Check<unknown>;
const N = num(0, 1e9) as Check<unknown>;
const N_ = orNull(num(0, 1e9)) as Check<unknown>;
const S = str() as Check<unknown>;
const S_ = orNull(str()) as Check<unknown>;
const isStrings = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string');
const LIST = { ...any('a string or a list of strings, or null', 'list', (v) => v === null || typeof v === 'string' || isStrings(v)), nullable: true };
const OBJ = { ...any('a JSON object, a path to one, or null', 'json', (v) => v === null || typeof v === 'string' || (typeof v === 'object' && !Array.isArray(v))), nullable: true };
const STR_OR_BOOL = any('a string or true/false', 'string', (v) => typeof v === 'string' || typeof v === 'boolean');

const k = (check: Check<unknown>, defaults: unknown[], why: Why, more: Partial<OtherKey> = {}): OtherKey => ({ check, defaults, why, ...more });
const notYet = (what: string, instead: string) => `${what} is not implemented yet in this build; ${instead}`;

/** use_cpu / no_cuda: the CPU, unless the config asks for cuda in the same breath. */
const onCpu = (key: string) => (v: unknown, values: Record<string, unknown>) => {
  if (v !== true) return undefined;
  if (values.device === 'cuda') return `${key}=true asks for the CPU, but device is "cuda"; keep one of them`;
  values.device = 'cpu';
  return undefined;
};

export const OTHER_KEYS: Readonly<Record<string, OtherKey>> = {
  // Applied.
  do_train: k(B, [true, false], 'plumbing'),  // sft train always trains; HF scripts read it, the Trainer does not
  use_cpu: k(B, [false], 'plumbing', { apply: onCpu('use_cpu') }),
  no_cuda: k(B, [false], 'plumbing', { apply: onCpu('no_cuda') }),
  per_gpu_train_batch_size: k(orNull(int(1, 65536)) as Check<unknown>, [null], 'plumbing', {
    // HF's deprecated name wins over per_device_train_batch_size when set.
    apply: (v, values) => {
      if (v !== null) values.per_device_train_batch_size = v;
      return undefined;
    },
  }),

  // Refused when set: ignoring them would change what is trained.
  label_smoothing_factor: k(num(0, 1, { max: true }) as Check<unknown>, [0], 'plumbing', { refuse: notYet('label smoothing', 'remove label_smoothing_factor or set it to 0') }),
  neftune_noise_alpha: k(N_, [null], 'plumbing', { refuse: notYet('NEFTune embedding noise', 'remove neftune_noise_alpha') }),
  lr_scheduler_kwargs: k(OBJ, [null, {}], 'plumbing', { refuse: notYet('lr_scheduler_kwargs', 'remove it (the four schedulers sft runs take no extra arguments)') }),
  optim_args: k(S_, [null], 'plumbing', { refuse: notYet('optim_args', 'remove it (AdamW takes its settings from adam_beta1, adam_beta2, adam_epsilon)') }),
  optim_target_modules: k(LIST, [null], 'plumbing', { refuse: notYet('optim_target_modules (GaLore/APOLLO)', 'remove it') }),
  adafactor: k(B, [false], 'plumbing', { refuse: notYet('adafactor=true (the Adafactor optimizer)', 'use optim "adamw_torch"') }),

  // No effect here.
  accelerator_config: k(OBJ, [null], 'plumbing'),
  auto_find_batch_size: k(B, [false], 'plumbing'),
  average_tokens_across_devices: k(B, [true, false], 'plumbing'),
  data_seed: k(I_, [null], 'data'),
  dataloader_drop_last: k(B, [false], 'data'),
  dataloader_in_order: k(B, [true], 'plumbing'),
  dataloader_multiprocessing_context: k(S_, [null], 'plumbing'),
  dataloader_persistent_workers: k(B, [false], 'plumbing'),
  dataloader_pin_memory: k(B, [true], 'plumbing'),
  dataloader_prefetch_factor: k(I_, [null], 'plumbing'),
  ddp_backend: k(S_, [null], 'plumbing'),
  ddp_broadcast_buffers: k(B_, [null], 'plumbing'),
  ddp_bucket_cap_mb: k(I_, [null], 'plumbing'),
  ddp_static_graph: k(B_, [null], 'plumbing'),
  ddp_timeout: k(I, [1800], 'plumbing'),
  debug: k(LIST, ['', []], 'plumbing'),
  dispatch_batches: k(B_, [null], 'plumbing'),
  enable_jit_checkpoint: k(B, [false], 'plumbing'),
  fp16_backend: k(S, ['auto'], 'plumbing'),
  fp16_opt_level: k(S, ['O1'], 'plumbing'),
  fsdp: k(LIST, ['', null, []], 'plumbing'),
  fsdp_config: k(OBJ, [null], 'plumbing'),
  fsdp_min_num_params: k(I, [0], 'plumbing'),
  fsdp_transformer_layer_cls_to_wrap: k(S_, [null], 'plumbing'),
  full_determinism: k(B, [false], 'plumbing'),
  gradient_checkpointing_kwargs: k(OBJ, [null], 'plumbing'),
  group_by_length: k(B, [false], 'data'),
  half_precision_backend: k(S, ['auto'], 'plumbing'),
  ignore_data_skip: k(B, [false], 'data'),
  include_num_input_tokens_seen: k(STR_OR_BOOL, [false, 'no'], 'logging'),
  include_tokens_per_second: k(B, [false, true], 'logging'),  // sft always reports tokens per second
  jit_mode_eval: k(B, [false], 'plumbing'),
  label_names: k(LIST, [null], 'plumbing'),
  length_column_name: k(S, ['length'], 'plumbing'),
  liger_kernel_config: k(OBJ, [null], 'plumbing'),
  log_level: k(S, ['passive'], 'logging'),
  log_level_replica: k(S, ['warning'], 'logging'),
  log_on_each_node: k(B, [true], 'logging'),
  logging_nan_inf_filter: k(B, [true], 'logging'),
  logging_strategy: k(S, ['steps'], 'logging'),
  mp_parameters: k(S, [''], 'plumbing'),
  parallelism_config: k(OBJ, [null], 'plumbing'),
  past_index: k(I, [-1], 'plumbing'),
  project: k(S, ['huggingface'], 'logging'),
  ray_scope: k(S_, ['last'], 'plumbing'),
  restore_callback_states_from_checkpoint: k(B, [false], 'resume'),
  resume_from_checkpoint: k(S_, [null], 'resume'),
  save_on_each_node: k(B, [false], 'saving'),
  save_only_model: k(B, [false], 'saving'),
  save_safetensors: k(B_, [true, false, null], 'saving'),
  sharded_ddp: k(LIST, ['', null, []], 'plumbing'),
  skip_memory_metrics: k(B, [true], 'logging'),
  split_batches: k(B_, [null, false], 'plumbing'),
  tf32: k(B_, [null], 'plumbing'),
  torch_compile: k(B, [false], 'plumbing'),
  torch_compile_backend: k(S_, [null], 'plumbing'),
  torch_compile_mode: k(S_, [null], 'plumbing'),
  torch_empty_cache_steps: k(I_, [null], 'plumbing'),
  torchdynamo: k(S_, [null], 'plumbing'),
  tp_size: k(I_, [0, null], 'plumbing'),
  tpu_metrics_debug: k(B, [false], 'plumbing'),
  tpu_num_cores: k(I_, [null], 'plumbing'),
  trackio_bucket_id: k(S_, [null], 'logging'),
  trackio_space_id: k(S_, [null, 'trackio'], 'logging'),
  trackio_static_space_id: k({ ...S_, accept: (v) => (v === false ? v : S_.accept(v)) }, [null, false], 'logging'),
  train_sampling_strategy: k(S, ['random'], 'data'),
  use_cache: k(B, [false], 'plumbing'),
  use_ipex: k(B, [false], 'plumbing'),
  use_legacy_prediction_loop: k(B, [false], 'plumbing'),
  use_liger_kernel: k(B, [false], 'plumbing'),
  use_mps_device: k(B, [false], 'plumbing'),
  xpu_backend: k(S_, [null], 'plumbing'),
  push_to_hub: k(B, [false], 'hub'),
  hub_always_push: k(B, [false], 'hub'),
  hub_model_id: k(S_, [null], 'hub'),
  hub_private_repo: k(B_, [null, false], 'hub'),
  hub_revision: k(S_, [null], 'hub'),
  hub_strategy: k(S, ['every_save'], 'hub'),
  hub_token: k(S_, [null], 'hub'),
  push_to_hub_model_id: k(S_, [null], 'hub'),
  push_to_hub_organization: k(S_, [null], 'hub'),
  push_to_hub_token: k(S_, [null], 'hub'),
  // Evaluation-only settings of the Trainer.
  batch_eval_metrics: k(B, [false], 'eval'),
  bf16_full_eval: k(B, [false], 'eval'),
  do_predict: k(B, [false], 'eval'),
  eval_do_concat_batches: k(B, [true], 'eval'),
  eval_on_start: k(B, [false], 'eval'),
  eval_use_gather_object: k(B, [false], 'eval'),
  fp16_full_eval: k(B, [false], 'eval'),
  include_for_metrics: k(LIST, [[]], 'eval'),
  include_inputs_for_metrics: k(B, [false], 'eval'),
  per_gpu_eval_batch_size: k(I_, [null], 'eval'),
  prediction_loss_only: k(B, [false], 'eval'),

  // Model/DataArguments of HF-style scripts (run_clm.py and its descendants) that only steer
  // downloading and preprocessing.
  cache_dir: k(S_, [null], 'loading'),
  model_revision: k(S, ['main'], 'loading'),
  use_fast_tokenizer: k(B, [true], 'loading'),
  trust_remote_code: k(B, [false, true], 'loading'),  // sft runs no model code, remote or not
  token: k(S_, [null], 'loading'),
  use_auth_token: k(STR_OR_BOOL, [false], 'loading'),
  low_cpu_mem_usage: k(B, [false], 'loading'),
  torch_dtype: k(S_, [null, 'auto'], 'loading'),
  overwrite_cache: k(B, [false], 'loading'),
  preprocessing_num_workers: k(I_, [null], 'loading'),

  // Firefly's pretraining keys (early 2024 versions).
  min_seq_length: k(int(1, 2 ** 20) as Check<unknown>, [1024], 'pretrain'),
  window_step_size: k(int(1, 2 ** 20) as Check<unknown>, [1024], 'pretrain'),

  // Evaluation keys the schema does not hold (eval_file, eval_strategy and the rest are in schema.ts).
  eval_accumulation_steps: k(I_, [null], 'eval'),
  eval_delay: k(N, [0], 'eval'),
};

/** Keys of OTHER_KEYS that the schema does not hold (the schema wins where both name a key). */
export function isOtherKey(key: string): boolean {
  return Object.prototype.hasOwnProperty.call(OTHER_KEYS, key) && !isKey(key);
}

export const OTHER_KEY_NAMES: readonly string[] = Object.keys(OTHER_KEYS).filter(isOtherKey);
