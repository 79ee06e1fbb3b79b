// Every shipped config loads, and configs/README.md documents every config and every key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/loader.js';
import { KEYS, SCHEMA } from '../../src/config/schema.js';

const DIR = join(import.meta.dirname, '../../configs');
const files = readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();

test('the expected configs ship', () => {
  for (const f of ['baichuan-7b.json', 'baichuan2-7b.json', 'llama2-7b.json', 'qwen2-7b.json', 'tiny-demo.json']) {
    assert.ok(files.includes(f), `configs/${f} is missing`);
  }
});

for (const f of files) {
  test(`configs/${f} loads without error`, () => {
    const { config } = loadConfig(join(DIR, f));
    assert.ok(config.output_dir && config.model_name_or_path && config.train_file);
  });
}

test('tiny-demo.json holds the demo settings', () => {
  const { config, notices } = loadConfig(join(DIR, 'tiny-demo.json'));
  assert.deepEqual(notices, []);
  assert.equal(config.model_name_or_path, 'data/models/tiny-demo');
  assert.equal(config.train_file, 'data/demo.jsonl');
  assert.equal(config.output_dir, 'output/tiny-demo');
  assert.equal(config.template_name, 'qwen');
  assert.equal(config.train_mode, 'lora');
  assert.equal(config.lora_rank, 16);
  assert.equal(config.lora_alpha, 32);
  assert.equal(config.lora_dropout, 0);
  assert.equal(config.learning_rate, 3e-3);
  assert.equal(config.max_seq_length, 128);
  assert.equal(config.per_device_train_batch_size, 8);
  assert.equal(config.gradient_accumulation_steps, 1);
  assert.equal(config.max_steps, 300);
  assert.equal(config.logging_steps, 10);
  assert.equal(config.save_steps, 100);
  assert.equal(config.save_total_limit, 2);
  assert.equal(config.lr_scheduler_type, 'cosine');
  assert.equal(config.warmup_steps, 10);
  assert.equal(config.seed, 42);
});

test('baichuan-7b.json keeps Firefly\'s QLoRA recipe and says what this build does instead', () => {
  const { config, notices } = loadConfig(join(DIR, 'baichuan-7b.json'));
  assert.equal(config.model_name_or_path, 'baichuan-inc/Baichuan-7B');
  assert.equal(config.template_name, 'baichuan');
  assert.equal(config.train_mode, 'qlora');
  assert.equal(config.bits, 4);
  assert.equal(config.lora_rank, 64);
  assert.equal(config.lora_alpha, 16);
  assert.equal(config.lora_dropout, 0.05);
  assert.equal(config.learning_rate, 2e-4);
  assert.equal(config.max_seq_length, 1024);
  assert.equal(config.lr_scheduler_type, 'constant_with_warmup');
  assert.equal(config.optim, 'paged_adamw_32bit');
  assert.equal(config.gradient_checkpointing, true);
  assert.equal(config.max_grad_norm, 0.3);
  for (const key of ['fp16=true', 'optim="paged_adamw_32bit"', 'remove_unused_columns=false']) {
    assert.ok(notices.some((s) => s.includes(key)), `no notice for ${key}: ${JSON.stringify(notices)}`);
  }
});

test('configs/README.md names every config and every key', () => {
  const readme = readFileSync(join(DIR, 'README.md'), 'utf8');
  for (const f of files) assert.ok(readme.includes(f), `README does not mention ${f}`);
  for (const k of KEYS) assert.ok(readme.includes(`\`${k}\``), `README does not document \`${k}\``);
});

test("configs/README.md's key table gives the schema's bounds: every number in a key's allowed text", () => {
  const readme = readFileSync(join(DIR, 'README.md'), 'utf8');
  const numbers = (s: string) => s.match(/-?\d+(?:\.\d+)?(?:e[-+]?\d+)?/g) ?? [];
  for (const k of KEYS) {
    const row = readme.split('\n').find((l) => l.startsWith(`| \`${k}\` |`));
    assert.ok(row, `README has no table row for \`${k}\``);
    const allowed = row.split(' | ')[2];
    const shown = new Set(numbers(allowed));
    for (const n of numbers(SCHEMA[k].check.allowed)) {
      assert.ok(shown.has(n), `README's allowed column for \`${k}\` ("${allowed}") lacks ${n} (schema: ${SCHEMA[k].check.allowed})`);
    }
  }
});
