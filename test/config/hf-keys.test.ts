// A config means what it means in Firefly and HF: Firefly's defaults (train_mode "qlora"), every
// TrainingArguments field of transformers 4.x and 5.x known (from their source:
// test/fixtures/reference/training_args_fields.json), unknown keys reported all at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, configFromObject, parseOverrides } from '../../src/config/loader.js';
import { SftError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'sft-hfkeys-'));
const BASE = { output_dir: 'out', model_name_or_path: 'm', train_file: 'd.jsonl', max_seq_length: 64 };
const load = (extra: Record<string, unknown>, overrides: string[] = []) => configFromObject({ ...BASE, ...extra }, overrides, 'x.json');

function sftMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof SftError, `expected SftError, got ${String(err)}`);
    return err.message;
  }
  assert.fail('no error');
}

interface Fields { versions: Record<string, { fields: string[]; defaults?: Record<string, unknown> }> }
const HF = JSON.parse(readFileSync(join(import.meta.dirname, '../fixtures/reference/training_args_fields.json'), 'utf8')) as Fields;

test("Firefly's defaults: a config without train_mode trains QLoRA on a 4-bit base", () => {
  // Firefly component/argument.py: train_mode defaults to "qlora"; its train.py loads the base in
  // 4 bits for qlora. lora_rank 64, lora_alpha 16, lora_dropout 0.05, task_type "sft", template "".
  const { config, notices } = load({ template_name: 'qwen', learning_rate: 2e-4 });
  assert.equal(config.train_mode, 'qlora');
  assert.equal(config.bits, 4);
  assert.deepEqual([config.lora_rank, config.lora_alpha, config.lora_dropout, config.task_type], [64, 16, 0.05, 'sft']);
  assert.deepEqual(notices, []);
  // A config that wants LoRA on a 16-bit base says so.
  assert.deepEqual([load({ train_mode: 'lora' }).config.bits, load({ train_mode: 'lora' }).config.train_mode], [16, 'lora']);
  // bits 16 without train_mode contradicts the qlora default: say where qlora came from.
  const msg = sftMessage(() => load({ bits: 16 }));
  assert.match(msg, /train_mode is not set, so it is "qlora" \(Firefly's default\)/);
  assert.match(msg, /set train_mode "lora"/);
});

test('the keys of the Firefly write-up config load (cache_dir, do_eval, evaluation_strategy "no", ...)', () => {
  // Our own config with the keys that write-up's baichuan-7B config carries: HF TrainingArguments
  // plus the ModelArguments of an HF script. The defaults among them are silent; the rest are
  // named once, in one notice.
  const p = join(dir, 'writeup.json');
  writeFileSync(p, JSON.stringify({
    output_dir: 'output/baichuan-7b-qlora', model_name_or_path: 'baichuan-7B', cache_dir: './cache', train_file: 'data/train.jsonl',
    max_seq_length: 512, do_train: true, do_eval: false, evaluation_strategy: 'no', per_device_train_batch_size: 4,
    per_device_eval_batch_size: 4, gradient_accumulation_steps: 4, learning_rate: 2e-4, num_train_epochs: 2, lr_scheduler_type: 'cosine',
    warmup_ratio: 0.03, logging_steps: 10, logging_strategy: 'steps', save_strategy: 'steps', save_steps: 200, save_total_limit: 2,
    fp16: true, gradient_checkpointing: true, dataloader_num_workers: 0, report_to: 'tensorboard', run_name: 'baichuan-7b-sft',
    remove_unused_columns: false, ddp_find_unused_parameters: false, seed: 42, template_name: 'baichuan',
  }, null, 2));
  const { config, notices } = loadConfig(p);
  assert.equal(config.model_name_or_path, 'baichuan-7B');
  assert.equal(config.train_mode, 'qlora');
  const ignored = notices.filter((n) => n.includes('no effect'));
  assert.equal(ignored.length, 1, notices.join('\n'));
  for (const k of ['cache_dir="./cache"', 'remove_unused_columns=false']) assert.ok(ignored[0].includes(k), ignored[0]);
  // The evaluation keys are applied (evaluation during training), not ignored.
  assert.equal(config.per_device_eval_batch_size, 4);
  assert.ok(!ignored[0].includes('per_device_eval_batch_size'), ignored[0]);
  // run_name is applied (the wandb run's name), not ignored.
  assert.equal(config.run_name, 'baichuan-7b-sft');
  for (const k of ['do_train', 'do_eval', 'evaluation_strategy', 'logging_strategy', 'run_name']) assert.ok(!ignored[0].includes(k), `${k} is at its default: ${ignored[0]}`);
  // Each key is named once.
  assert.equal(ignored[0].split('cache_dir').length, 2);
});

test('every TrainingArguments field of transformers ~4.29, ~4.50, 4.57 and 5.18 is a known key, in a file and on the command line', () => {
  const names = new Set(Object.values(HF.versions).flatMap((v) => v.fields));
  assert.ok(names.size > 140, `${names.size} fields`);
  for (const name of names) {
    // Any value: only "unknown" matters here (the value checks come next).
    for (const attempt of [() => load({ [name]: 'x' }), () => parseOverrides([`--${name}`, 'x'])]) {
      try {
        attempt();
      } catch (err) {
        assert.ok(!/unknown (key|option)/.test((err as Error).message), `${name}: ${(err as Error).message}`);
      }
    }
  }
});

test("every TrainingArguments field set to its HF default (4.57, 5.18) loads with no notice and no error", () => {
  const required = new Set(['output_dir']);  // required here, as in HF before 4.50
  for (const [version, v] of Object.entries(HF.versions)) {
    for (const [name, value] of Object.entries(v.defaults ?? {})) {
      if (required.has(name)) continue;
      // disable_tqdm: HF's None means "decide from the log level"; sft's false is what it decides.
      if (name === 'disable_tqdm') continue;
      let notices: string[] = [];
      assert.doesNotThrow(() => ({ notices } = load({ [name]: value })), `${version} ${name}=${JSON.stringify(value)}`);
      assert.deepEqual(notices, [], `${version} ${name}=${JSON.stringify(value)}`);
    }
  }
});

test('unknown keys are all reported in one error, each with its suggestion and place', () => {
  const p = join(dir, 'typos.json');
  writeFileSync(p, '{\n  "output_dir": "o",\n  "model_name_or_path": "m",\n  "train_file": "t",\n  "max_seq_length": 8,\n' +
    '  "lerning_rate": 1e-4,\n  "cache_dri": "c",\n  "evaluation_stratgy": "no"\n}\n');
  const msg = sftMessage(() => loadConfig(p));
  assert.deepEqual(msg.split('\n'), [
    `${p}:6:3: unknown key "lerning_rate" — did you mean "learning_rate"?`,
    `${p}:7:3: unknown key "cache_dri" — did you mean "cache_dir"?`,
    `${p}:8:3: unknown key "evaluation_stratgy" — did you mean "evaluation_strategy"?`,
  ]);
  const cli = sftMessage(() => parseOverrides(['--lora_rnak', '8', '--do_evl', '--seed', '1', '--cache-dri=x']));
  assert.deepEqual(cli.split('\n'), [
    'command line: unknown option "--lora_rnak" — did you mean "--lora_rank"?',
    'command line: unknown option "--do_evl" — did you mean "--do_eval"?',
    'command line: unknown option "--cache_dri" — did you mean "--cache_dir"?',
  ]);
});

test('command-line overrides read HF keys as HfArgumentParser does', () => {
  const { config, notices } = load({}, ['--cache_dir', '/c', '--do_eval', 'false', '--no_dataloader_pin_memory', '--evaluation_strategy=no', '--run_name', 'r1']);
  assert.equal(config.train_mode, 'qlora');
  assert.equal(notices.length, 1);
  assert.match(notices[0], /cache_dir="\/c"/);
  assert.match(notices[0], /dataloader_pin_memory=false/);
  assert.equal(config.run_name, 'r1');
  assert.ok(!/do_eval|evaluation_strategy|run_name/.test(notices[0]), notices[0]);
});

test('HF keys sft can honour are applied: use_cpu / no_cuda pick the CPU, per_gpu_train_batch_size the batch', () => {
  assert.equal(load({ use_cpu: true }).config.device, 'cpu');
  assert.equal(load({ no_cuda: true }).config.device, 'cpu');
  assert.equal(load({ use_cpu: false }).config.device, 'auto');
  assert.deepEqual(load({ use_cpu: true }).notices, []);
  assert.match(sftMessage(() => load({ use_cpu: true, device: 'cuda' })), /use_cpu=true asks for the CPU, but device is "cuda"/);
  // HF: per_gpu_train_batch_size (deprecated) wins over per_device_train_batch_size when set.
  assert.equal(load({ per_gpu_train_batch_size: 2, per_device_train_batch_size: 8 }).config.per_device_train_batch_size, 2);
  assert.equal(load({ per_gpu_train_batch_size: null }).config.per_device_train_batch_size, 8);
});

test('HF keys whose effect sft lacks, and that would change the result, stop the run', () => {
  assert.match(sftMessage(() => load({ label_smoothing_factor: 0.1 })), /label_smoothing_factor=0.1: label smoothing is not implemented yet/);
  assert.match(sftMessage(() => load({ neftune_noise_alpha: 5 })), /NEFTune/);
  assert.match(sftMessage(() => load({ lr_scheduler_kwargs: { num_cycles: 2 } })), /lr_scheduler_kwargs/);
  assert.deepEqual(load({ label_smoothing_factor: 0, lr_scheduler_kwargs: {} }).notices, []);
  // Wrong types are still wrong.
  assert.match(sftMessage(() => load({ do_eval: 'yes' })), /x.json: do_eval = "yes" is not allowed; expected true or false/);
});

test('no-effect keys are named once, grouped by why', () => {
  const { notices } = load({ push_to_hub: true, cache_dir: 'c', remove_unused_columns: false, torch_compile: true });
  assert.deepEqual(notices, [
    'push_to_hub=true: has no effect in sft (sft does not upload to the Hugging Face Hub); cache_dir="c": has no effect in sft ' +
      '(download and loading options: sft reads model_name_or_path as a local folder); torch_compile=true, remove_unused_columns=false: ' +
      'have no effect in sft (PyTorch/HF plumbing); ignored',
  ]);
});
