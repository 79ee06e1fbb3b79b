// A Firefly-style QLoRA config that leaves train_mode out trains QLoRA, as in Firefly
// (component/argument.py: train_mode defaults to "qlora"; train.py loads that base in 4 bits), and
// the run's first line says so before the model is loaded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { loadConfig } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { sink } from '../helpers/sink.js';

const root = mkdtempSync(join(tmpdir(), 'sft-startline-'));
const modelDir = join(root, 'model');
initModel({ arch: 'llama', outDir: modelDir, hidden: 32, layers: 1, heads: 2, kvHeads: 2, intermediate: 64, vocab: 300, seed: 1, maxPosition: 64, force: true });
const dataFile = join(root, 'data.jsonl');
writeFileSync(dataFile, [['hi', 'hello'], ['2+2?', '4']].map(([h, a]) => JSON.stringify({ conversation: [{ human: h, assistant: a }] })).join('\n') + '\n');

test('a Firefly-style qlora config without train_mode trains QLoRA, and the first line says what it trains', async () => {
  // The keys of a Firefly *-sft-qlora.json, train_mode and bits left to their defaults.
  const file = join(root, 'firefly-sft-qlora.json');
  writeFileSync(file, JSON.stringify({
    output_dir: join(root, 'out'), model_name_or_path: modelDir, train_file: dataFile, template_name: 'qwen', num_train_epochs: 1,
    per_device_train_batch_size: 2, gradient_accumulation_steps: 1, learning_rate: 2e-4, max_seq_length: 96, logging_steps: 1,
    save_steps: 100, save_total_limit: 1, lr_scheduler_type: 'constant_with_warmup', warmup_steps: 1, lora_rank: 8, lora_alpha: 16,
    lora_dropout: 0.05, gradient_checkpointing: true, disable_tqdm: true, optim: 'paged_adamw_32bit', seed: 42, fp16: true,
    report_to: 'tensorboard', dataloader_num_workers: 0, save_strategy: 'steps', weight_decay: 0, max_grad_norm: 0.3,
    remove_unused_columns: false, device: 'cpu',
  }));
  const { config } = loadConfig(file, ['--report_to', 'none']);
  const lines: string[] = [];
  const r = await train(config, { print: (l) => lines.push(l), stream: sink() });
  assert.equal(r.steps, 1);

  const saved = JSON.parse(readFileSync(join(r.outputDir, 'sft_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(saved.train_mode, 'qlora');
  assert.equal(saved.bits, 4);
  assert.ok(lines.some((l) => /QLoRA: linear weights quantized to NF4/.test(l)), lines.join('\n'));

  // One line, before loading, naming mode, bits, rank/alpha, targets, template and device.
  const start = lines.filter((l) => l.startsWith('Training qlora'));
  assert.equal(start.length, 1, lines.join('\n'));
  assert.ok(lines.indexOf(start[0]) < lines.findIndex((l) => l.startsWith('Loading ')), lines.join('\n'));
  const m = /^Training qlora \(bits 4: NF4 base\); LoRA r=8 alpha=16 dropout=0\.05 on (.+); template "qwen"; cpu, fp32 compute$/.exec(start[0]);
  assert.ok(m, start[0]);
  // Firefly's target rule: every linear layer but lm_head (a Llama layer's seven projections).
  assert.deepEqual(m[1].split(', ').sort(), ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
});
