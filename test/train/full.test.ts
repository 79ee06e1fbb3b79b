// Full fine-tuning: every weight trains; the output is a complete HF model folder that loads back
// with the trained model's logits, and a stopped run resumes bit for bit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { loadBase } from '../../src/model/load.js';
import { readSafetensorsHeader } from '../../src/io/safetensors.js';
import { sink } from '../helpers/sink.js';

const root = mkdtempSync(join(tmpdir(), 'sft-full-'));
const modelDir = join(root, 'model');
initModel({ arch: 'qwen2', outDir: modelDir, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 64, vocab: 300, seed: 4, maxPosition: 128, force: true });
const dataFile = join(root, 'data.jsonl');
writeFileSync(dataFile, [['hi', 'hello!'], ['1+1?', '2'], ['colour of grass?', 'green']].map(([h, a]) => JSON.stringify({ conversation: [{ human: h, assistant: a }] })).join('\n') + '\n');

const base = {
  model_name_or_path: modelDir, train_file: dataFile, template_name: 'qwen', max_seq_length: 160, train_mode: 'full',
  per_device_train_batch_size: 3, max_steps: 40, learning_rate: 3e-3, lr_scheduler_type: 'constant', weight_decay: 0.01,
  logging_steps: 10, save_steps: 100, seed: 2, disable_tqdm: true,
};

async function run(over: Record<string, unknown>, opts: { resume?: string; stopAfter?: number } = {}) {
  const { config } = configFromObject({ ...base, ...over });
  let n = 0;
  return train(config, { print: () => {}, stream: sink(), resume: opts.resume, shouldStop: () => opts.stopAfter !== undefined && ++n >= opts.stopAfter });
}

test('full fine-tuning fits the data and writes a loadable HF model folder', async () => {
  const r = await run({ output_dir: join(root, 'out') });
  assert.ok(r.losses[r.losses.length - 1] < 0.3 * r.losses[0], `loss ${r.losses[0]} -> ${r.losses[r.losses.length - 1]}`);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'sft_config.json', 'train_results.json']) assert.ok(existsSync(join(r.outputDir, f)), f);
  assert.ok(!existsSync(join(r.outputDir, 'adapter_model.safetensors')));
  const names = [...readSafetensorsHeader(join(r.outputDir, 'model.safetensors')).tensors.keys()];
  assert.ok(names.includes('model.layers.1.self_attn.q_proj.bias') && names.includes('model.embed_tokens.weight'));
  const { model } = await loadBase(r.outputDir);
  const ids = new Int32Array([5, 17, 99, 3]);
  assert.deepEqual(await model.logits(ids, 1, 4), await r.model!.logits(ids, 1, 4));
  // The base folder is untouched: its logits differ from the trained model's.
  const { model: orig } = await loadBase(modelDir);
  assert.notDeepEqual(await orig.logits(ids, 1, 4), await model.logits(ids, 1, 4));
});

test('full fine-tuning: stopped and resumed = uninterrupted, bit for bit', async () => {
  const whole = await run({ output_dir: join(root, 'whole'), max_steps: 8 });
  const dir = join(root, 'split');
  await run({ output_dir: dir, max_steps: 8 }, { stopAfter: 3 });
  const second = await run({ output_dir: dir, max_steps: 8 }, { resume: 'latest' });
  assert.deepEqual(second.losses, whole.losses);
});

test('optim adamw_8bit: 8-bit states for the large tensors, converges like AdamW, resumes bit for bit', async () => {
  const over = { max_steps: 10, optim: 'adamw_8bit', learning_rate: 2e-3 };
  const a32 = await run({ output_dir: join(root, 'opt32'), max_steps: 10, learning_rate: 2e-3 });
  const a8 = await run({ output_dir: join(root, 'opt8'), ...over });
  const last = (l: number[]) => l[l.length - 1];
  assert.ok(Math.abs(last(a8.losses) - last(a32.losses)) < 0.1 * last(a32.losses), `8-bit ${last(a8.losses)} vs 32-bit ${last(a32.losses)}`);
  const st = a8.model!.getOptimizerState();
  const eight = st.tensors.filter((t) => t.m8 && t.m8.length);
  assert.ok(eight.length > 0 && eight.every((t) => t.m8!.length >= 4096 && t.m.length === 0), 'large tensors have 8-bit states');
  assert.ok(st.tensors.some((t) => t.m.length > 0 && t.m.length < 4096), 'small tensors keep 32-bit states');
  const dir = join(root, 'opt8-split');
  await run({ output_dir: dir, ...over }, { stopAfter: 4 });
  const resumed = await run({ output_dir: dir, ...over }, { resume: 'latest' });
  assert.deepEqual(resumed.losses, a8.losses);
});
