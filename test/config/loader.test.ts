import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, configFromObject, parseOverrides } from '../../src/config/loader.js';
import { SftError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'sft-config-'));
let n = 0;
/** Writes `text` to a fresh file and returns its path. */
function file(text: string): string {
  const p = join(dir, `c${n++}.json`);
  writeFileSync(p, text);
  return p;
}
const BASE = { output_dir: 'out', model_name_or_path: 'm', train_file: 'd.jsonl', max_seq_length: 64 };
const load = (extra: Record<string, unknown>, overrides: string[] = []) => configFromObject({ ...BASE, ...extra }, overrides, 'x.json');

/** Asserts that fn throws an SftError whose message matches every pattern. */
function throwsSft(fn: () => unknown, ...patterns: (RegExp | string)[]): string {
  let msg = '';
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof SftError, `expected SftError, got ${String(err)}`);
    msg = err.message;
    return true;
  });
  for (const p of patterns) {
    if (typeof p === 'string') assert.ok(msg.includes(p), `message ${JSON.stringify(msg)} lacks ${JSON.stringify(p)}`);
    else assert.match(msg, p);
  }
  return msg;
}

test('a minimal config gets Firefly/HF defaults and no notices', () => {
  const { config, notices } = load({});
  assert.deepEqual(notices, []);
  assert.equal(config.output_dir, 'out');
  assert.equal(config.train_mode, 'qlora');  // Firefly's default (component/argument.py)
  assert.equal(config.task_type, 'sft');
  assert.equal(config.bits, 4);  // Firefly loads a qlora base in 4 bits
  assert.equal(config.lora_rank, 64);
  assert.equal(config.lora_alpha, 16);
  assert.equal(config.lora_dropout, 0.05);
  assert.equal(config.lora_target_modules, 'all');
  assert.equal(config.learning_rate, 5e-5);
  assert.equal(config.num_train_epochs, 3);
  assert.equal(config.max_steps, -1);
  assert.equal(config.per_device_train_batch_size, 8);
  assert.equal(config.gradient_accumulation_steps, 1);
  assert.equal(config.lr_scheduler_type, 'linear');
  assert.equal(config.optim, 'adamw_torch');
  assert.equal(config.warmup_steps, 0);
  assert.equal(config.logging_steps, 500);
  assert.equal(config.save_steps, 500);
  assert.equal(config.save_total_limit, null);
  assert.equal(config.max_grad_norm, 1);
  assert.equal(config.adam_beta1, 0.9);
  assert.equal(config.adam_beta2, 0.999);
  assert.equal(config.adam_epsilon, 1e-8);
  assert.equal(config.seed, 42);
  assert.deepEqual(config.report_to, []);
  assert.equal(config.device, 'auto');
  assert.equal(config.threads, 0);
  assert.equal(config.template_name, '');
});

test('relative paths are kept as written', () => {
  const { config } = configFromObject({ ...BASE, train_file: './data/x.jsonl', output_dir: 'output/a' });
  assert.equal(config.train_file, './data/x.jsonl');
  assert.equal(config.output_dir, 'output/a');
});

test('an unknown key names file, line, column and the nearest valid key', () => {
  const p = file('{\n  "output_dir": "o",\n  "model_name_or_path": "m",\n  "train_file": "t",\n  "max_seq_length": 8,\n    "learning_rat": 1e-4\n}\n');
  throwsSft(() => loadConfig(p), `${p}:6:5: unknown key "learning_rat" — did you mean "learning_rate"?`);
});

test('misspellings with swapped or dashed letters still find their key', () => {
  throwsSft(() => load({ lora_rnak: 8 }), 'did you mean "lora_rank"?');
  throwsSft(() => load({ 'num-train-epochs': 1 }), 'did you mean "num_train_epochs"?');
  throwsSft(() => load({ warmup_step: 1 }), 'did you mean "warmup_steps"?');
});

test('an unknown key with no close match points to the key list instead', () => {
  const msg = throwsSft(() => load({ completely_unrelated: 1 }), 'unknown key "completely_unrelated"', 'configs/README.md');
  assert.ok(!msg.includes('did you mean'));
});

test('a wrong type names the key, the value, where it is and what is allowed', () => {
  const p = file('{"output_dir": "o", "model_name_or_path": "m", "train_file": "t", "max_seq_length": 8,\n "learning_rate": "fast"}');
  throwsSft(() => loadConfig(p), `${p}:2:19: learning_rate = "fast" is not allowed; expected a number >= 0`);
  throwsSft(() => load({ fp16: 'true' }), 'fp16 = "true" is not allowed; expected true or false');
  throwsSft(() => load({ lora_rank: 8.5 }), 'lora_rank = 8.5 is not allowed; expected an integer from 1 to 65536');
  throwsSft(() => load({ output_dir: null }), 'output_dir = null is not allowed');
  throwsSft(() => load({ lora_target_modules: [1, 2] }), 'lora_target_modules = [1,2] is not allowed');
});

test('values out of range are refused', () => {
  throwsSft(() => load({ lora_dropout: 1.5 }), 'lora_dropout = 1.5', 'a number >= 0 and < 1');
  throwsSft(() => load({ per_device_train_batch_size: 0 }), 'per_device_train_batch_size = 0', 'an integer from 1 to 65536');
  throwsSft(() => load({ logging_steps: 2.5 }), 'logging_steps = 2.5', 'a ratio in (0, 1)');
  throwsSft(() => load({ max_steps: 0 }), 'max_steps = 0', '-1 (train num_train_epochs)');
  throwsSft(() => load({ bits: 5 }), 'bits = 5', 'one of 4, 8, 16, 32');
  throwsSft(() => load({ warmup_ratio: 1.5 }), 'warmup_ratio = 1.5');
  throwsSft(() => load({ max_seq_length: 0 }), 'max_seq_length = 0');
  throwsSft(() => load({ adam_beta2: 1 }), 'adam_beta2 = 1');
});

test('every number has a bound: absurd values are refused, naming the key and the range', () => {
  const absurd: [string, unknown, string][] = [
    ['max_seq_length', 1e9, 'an integer from 2 to 1048576'],
    ['per_device_train_batch_size', 1e6, 'an integer from 1 to 65536'],
    ['gradient_accumulation_steps', 1e9, 'an integer from 1 to 1e6'],
    ['lora_rank', 1e6, 'an integer from 1 to 65536'],
    ['lora_alpha', 1e30, 'a number > 0 and <= 1e6'],
    ['num_virtual_tokens', 1e6, 'an integer from 1 to 65536'],
    ['num_train_epochs', 1e30, 'a number > 0 and <= 1e6'],
    ['max_steps', 1e12, '-1 (train num_train_epochs) or an integer from 1 to 1e8'],
    ['learning_rate', 1e30, 'a number >= 0 and <= 10'],
    ['weight_decay', 1e3, 'a number >= 0 and <= 10'],
    ['adam_epsilon', 2, 'a number >= 0 and <= 1'],
    ['max_grad_norm', 1e30, 'a number >= 0 and <= 1e9'],
    ['warmup_steps', 1e12, 'an integer from 0 to 1e8, or a ratio in (0, 1) of the total steps'],
    ['logging_steps', 1e12, 'an integer from 1 to 1e8, or a ratio in (0, 1) of the total steps'],
    ['save_steps', 1e12, 'an integer from 1 to 1e8'],
    ['eval_steps', 1e12, 'an integer from 1 to 1e8'],
    ['save_total_limit', 1e9, 'an integer from 1 to 1e6, or null'],
    ['threads', 100000, 'an integer from 0 to 4096'],
    ['tokenize_num_workers', 1e6, 'an integer from 1 to 4096'],
    ['dataloader_num_workers', 1e6, 'an integer from 0 to 4096'],
    ['local_rank', 1e9, 'an integer from -1 to 65535'],
    ['max_prompt_length', 1e9, 'an integer from 1 to 1048576'],
    ['beta', 1e30, 'a number > 0 and <= 1000'],
  ];
  for (const [key, value, allowed] of absurd) {
    throwsSft(() => load({ [key]: value }), `x.json: ${key} = ${JSON.stringify(value)} is not allowed; expected ${allowed}`);
  }
});

test('the bounds refuse no real run: values seen in Firefly and LLaMA-Factory configs, and beyond', () => {
  const { config } = load({
    max_seq_length: 131072, per_device_train_batch_size: 512, gradient_accumulation_steps: 4096, lora_rank: 2048, lora_alpha: 4096,
    num_virtual_tokens: 1000, num_train_epochs: 1000, max_steps: 10_000_000, learning_rate: 10, weight_decay: 1, adam_epsilon: 1e-3,
    max_grad_norm: 1e9, warmup_steps: 100_000, logging_steps: 1_000_000, save_steps: 1_000_000, save_total_limit: 10_000, threads: 512,
    dataloader_num_workers: 64, local_rank: 7, max_prompt_length: 65536, beta: 10,
  });
  assert.equal(config.learning_rate, 10);
  assert.equal(config.max_seq_length, 131072);
});

test('--learning_rate 1e400 / Infinity / NaN: says what was typed', () => {
  for (const word of ['1e400', 'Infinity', '-Infinity', 'NaN', '-1e999']) {
    throwsSft(() => parseOverrides(['--learning_rate', word]), `command line: --learning_rate ${word}: not a finite number; expected a number >= 0 and <= 10`);
    throwsSft(() => parseOverrides([`--learning_rate=${word}`]), `--learning_rate ${word}: not a finite number`);
  }
  throwsSft(() => parseOverrides(['--max_steps', '1e400']), '--max_steps 1e400: not a finite number');
});

test('ratios are accepted where HF accepts them', () => {
  const { config } = load({ logging_steps: 0.1, save_steps: 0.5, warmup_steps: 0.05 });
  assert.equal(config.logging_steps, 0.1);
  assert.equal(config.save_steps, 0.5);
  assert.equal(config.warmup_steps, 0.05);
});

test('a misspelt choice suggests the right one', () => {
  throwsSft(() => load({ optim: 'adamw_troch' }), 'optim = "adamw_troch" is not allowed', 'did you mean "adamw_torch"?');
  throwsSft(() => load({ lr_scheduler_type: 'cosin' }), 'did you mean "cosine"?');
  throwsSft(() => load({ report_to: 'tensorbord' }), 'did you mean "tensorboard"?');
});

test('lists: lora_target_modules and report_to', () => {
  assert.deepEqual(load({ lora_target_modules: ['q_proj', 'v_proj'] }).config.lora_target_modules, ['q_proj', 'v_proj']);
  assert.deepEqual(load({ lora_target_modules: 'W_pack,o_proj' }).config.lora_target_modules, ['W_pack', 'o_proj']);
  assert.equal(load({ lora_target_modules: 'all' }).config.lora_target_modules, 'all');
  assert.deepEqual(load({ report_to: 'none' }).config.report_to, []);
  assert.deepEqual(load({ report_to: ['wandb', 'tensorboard'] }).config.report_to, ['wandb', 'tensorboard']);
  throwsSft(() => load({ lora_target_modules: [] }), 'lora_target_modules = []');
});

test('missing required keys are all named', () => {
  throwsSft(
    () => configFromObject({ model_name_or_path: 'm', max_seq_length: 8 }, [], 'x.json'),
    'x.json: missing required keys "output_dir"',
    '"train_file"',
  );
  const p = file('{"output_dir": "o", "train_file": "t", "max_seq_length": 8}');
  throwsSft(() => loadConfig(p), `${p}: missing required key "model_name_or_path"`);
});

test('required keys may come from the command line', () => {
  const { config } = configFromObject({ model_name_or_path: 'm', train_file: 't', max_seq_length: 8 }, ['--output_dir', 'out/x']);
  assert.equal(config.output_dir, 'out/x');
});

test('malformed JSON reports file, line and column', () => {
  throwsSft(() => loadConfig(file('{\n  "output_dir": "o",\n  "seed": 1,\n}')), /c\d+\.json:4:1: invalid JSON: trailing comma/);
  throwsSft(() => loadConfig(file('{\n  "output_dir": "o"\n  "seed": 1\n}')), /c\d+\.json:3:3: invalid JSON: expected "," or "}" after the value of "output_dir"/);
  throwsSft(() => loadConfig(file('{"output_dir": "o", "output_dir": "p"}')), /c\d+\.json:1:21: invalid JSON: duplicate key "output_dir"/);
  throwsSft(() => loadConfig(file('{"fp16": True}')), /1:10: invalid JSON: True is not JSON; write true/);
  throwsSft(() => loadConfig(file('')), /invalid JSON: the file is empty/);
  throwsSft(() => loadConfig(file('[1, 2]')), /1:1: invalid JSON: expected a JSON object/);
});

test('a missing file is an SftError naming it', () => {
  throwsSft(() => loadConfig(join(dir, 'nope.json')), 'nope.json: cannot read the config (no such file)');
  throwsSft(() => loadConfig(dir), 'it is a folder');
});

test('overrides: the example from the brief', () => {
  const p = file(JSON.stringify({ ...BASE, learning_rate: 2e-4, fp16: true }));
  const { config } = loadConfig(p, [
    '--learning_rate', '1e-4', '--output_dir', 'out/x', '--fp16', '--fp16=false', '--lora_target_modules', 'q_proj,v_proj',
  ]);
  assert.equal(config.learning_rate, 1e-4);
  assert.equal(config.output_dir, 'out/x');
  assert.equal(config.fp16, false);
  assert.deepEqual(config.lora_target_modules, ['q_proj', 'v_proj']);
});

test('overrides: HfArgumentParser forms', () => {
  assert.deepEqual(parseOverrides(['--gradient_checkpointing']), { gradient_checkpointing: true });
  assert.deepEqual(parseOverrides(['--fp16', 'no', '--bf16', 'Y']), { fp16: false, bf16: true });
  assert.deepEqual(parseOverrides(['--fp16', '--seed', '7']), { fp16: true, seed: 7 });
  assert.deepEqual(parseOverrides(['--max-steps', '5', '--per-device-train-batch-size=2']), { max_steps: 5, per_device_train_batch_size: 2 });
  assert.deepEqual(parseOverrides(['--max_steps', '-1']), { max_steps: -1 });
  assert.deepEqual(parseOverrides(['--no_remove_unused_columns']), { remove_unused_columns: false });
  assert.deepEqual(parseOverrides(['--report_to', 'wandb', 'tensorboard', '--seed', '1']), { report_to: ['wandb', 'tensorboard'], seed: 1 });
  assert.deepEqual(parseOverrides(['--report_to', 'none']), { report_to: [] });
  assert.deepEqual(parseOverrides(['--save_total_limit', 'None']), { save_total_limit: null });
  assert.deepEqual(parseOverrides(['--seed', '1', '--seed', '2']), { seed: 2 });
  assert.deepEqual(parseOverrides(['--template_name=qwen']), { template_name: 'qwen' });
  assert.deepEqual(parseOverrides(['--bits', '4']), { bits: 4 });
  assert.deepEqual(parseOverrides([]), {});
});

test('overrides: bad input is an SftError with a suggestion', () => {
  throwsSft(() => parseOverrides(['--learning_rat', '1e-4']), 'unknown option "--learning_rat" — did you mean "--learning_rate"?');
  throwsSft(() => parseOverrides(['--fp16', 'maybe']), '--fp16 = "maybe" is not allowed; expected true or false');
  throwsSft(() => parseOverrides(['--lora_rank=abc']), '--lora_rank = "abc" is not allowed; expected an integer from 1 to 65536');
  throwsSft(() => parseOverrides(['--lora_rank']), '--lora_rank needs a value');
  throwsSft(() => parseOverrides(['--lora_rank', '--seed', '1']), '--lora_rank needs a value');
  throwsSft(() => parseOverrides(['learning_rate', '1']), 'unexpected argument "learning_rate"');
  throwsSft(() => parseOverrides(['--no_fp16']), 'unknown option "--no_fp16"'); // fp16 defaults to false: HF adds no --no_fp16
  throwsSft(() => parseOverrides(['--optim', 'adamw_troch']), 'did you mean "adamw_torch"?');
});

test('notices for accepted but unimplemented values', () => {
  const has = (notices: string[], ...parts: string[]) =>
    assert.ok(notices.some((s) => parts.every((p) => s.includes(p))), `no notice with ${parts.join(' + ')} in ${JSON.stringify(notices)}`);
  assert.ok(!load({ bits: 4 }).notices.some((n) => n.includes('bits=4')), 'bits=4 (NF4 QLoRA) is implemented: no notice');
  has(load({ bits: 8 }).notices, 'bits=8 is not implemented yet');
  has(load({ fp16: true }).notices, 'fp16=true', 'dynamic loss scaling', 'bf16 on a GPU', 'fp32 on the CPU', 'bf16=true trains in bf16');
  assert.deepEqual(load({ bf16: true }).notices, [], 'bf16 is implemented on both backends: no notice');
  assert.deepEqual(load({ gradient_checkpointing: true }).notices, []);
  has(load({ optim: 'paged_adamw_32bit' }).notices, 'optim="paged_adamw_32bit"', 'pinned host memory', 'same update');
  assert.deepEqual(load({ optim: 'adamw_8bit' }).notices, []);
  has(load({ optim: 'paged_adamw_8bit' }).notices, 'optim="paged_adamw_8bit"', '8-bit AdamW states', 'pinned host memory');
  has(load({ optim: 'adamw_torch_4bit' }).notices, 'optim="adamw_torch_4bit"', '32-bit states');
  has(load({ report_to: ['tensorboard', 'mlflow'] }).notices, 'report_to=mlflow is not implemented yet', 'metrics.jsonl');
  assert.deepEqual(load({ report_to: ['tensorboard', 'wandb'] }).notices, []);
  has(load({ eval_file: 'e.jsonl' }).notices, 'eval_file="e.jsonl" is not evaluated', 'set eval_strategy "steps" or "epoch"');
  has(load({ warmup_steps: 10, warmup_ratio: 0.1 }).notices, 'warmup_ratio=0.1 is ignored', 'warmup_steps=10');
  has(load({ num_virtual_tokens: 8 }).notices, 'num_virtual_tokens=8 only applies to train_mode "prompt_tuning"');
  has(load({ beta: 0.2 }).notices, 'beta=0.2 only applies to task_type "dpo"');
});

test('qlora: 4 bits by default; contradicting bits is an error', () => {
  const { config, notices } = load({ train_mode: 'qlora' });
  assert.equal(config.train_mode, 'qlora');
  assert.equal(config.bits, 4);
  assert.deepEqual(notices, []);
  throwsSft(() => load({ train_mode: 'qlora', bits: 16 }), 'x.json: train_mode "qlora" quantises the base model to 4 bits, but bits=16');
});

test('plumbing keys: one notice naming each non-default one, silence for defaults', () => {
  const { notices } = load({ dataloader_num_workers: 4, remove_unused_columns: false, ddp_find_unused_parameters: false });
  assert.equal(notices.length, 1);
  assert.equal(
    notices[0],
    'dataloader_num_workers=4, remove_unused_columns=false, ddp_find_unused_parameters=false: have no effect in sft (PyTorch/HF plumbing); ignored',
  );
  assert.deepEqual(load({ dataloader_num_workers: 0, remove_unused_columns: true, disable_tqdm: false }).notices, []);
  assert.equal(load({ use_unsloth: true }).notices[0], 'use_unsloth=true: has no effect in sft (PyTorch/HF plumbing); ignored');
});

test('values that would make the run wrong are errors', () => {
  throwsSft(() => load({ train_mode: 'full', bits: 4 }), 'train_mode "full" trains every weight, which cannot stay 4-bit');
  throwsSft(() => load({ train_mode: 'prompt_tuning', prompt_tuning_init: 'TEXT' }), 'prompt_tuning_init "TEXT" needs prompt_tuning_init_text');
  throwsSft(() => load({ task_type: 'dpo' }), 'task_type="dpo" is not implemented yet');
  throwsSft(() => load({ task_type: 'pretrain' }), 'task_type="pretrain" is not implemented yet');
  throwsSft(() => load({ optim: 'sgd' }), 'optim="sgd" is not implemented yet', 'adamw_torch');
  throwsSft(() => load({ lr_scheduler_type: 'polynomial' }), 'lr_scheduler_type="polynomial" is not implemented yet');
  throwsSft(() => load({ save_strategy: 'best' }), 'save_strategy "best" saves when an evaluation improves', 'eval_strategy is "no"');
  throwsSft(() => load({ fp16: true, bf16: true }), 'fp16 and bf16 are both true');
});

test('several errors are reported together, one per line', () => {
  const msg = throwsSft(() => load({ train_mode: 'full', bits: 4, task_type: 'dpo' }));
  assert.equal(msg.split('\n').length, 2);
});

test('implemented choices load silently', () => {
  for (const optim of ['adamw_torch', 'adamw_torch_fused', 'adamw_hf', 'adamw']) assert.deepEqual(load({ optim }).notices, []);
  for (const s of ['constant', 'constant_with_warmup', 'linear', 'cosine']) assert.deepEqual(load({ lr_scheduler_type: s }).notices, []);
  for (const s of ['no', 'steps', 'epoch']) assert.deepEqual(load({ save_strategy: s }).notices, []);
  assert.deepEqual(load({ device: 'cpu', threads: 4, disable_tqdm: true, train_mode: 'lora', bits: 32 }).notices, []);
});
