// Training-loop semantics that must hold exactly: a seed makes a run repeatable, gradient
// accumulation equals the larger batch (loss averaged over all target tokens of the step), and
// the learning-rate schedule reaches the optimizer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { readLoraAdapter } from '../../src/io/peft.js';
import { sink } from '../helpers/sink.js';

const root = mkdtempSync(join(tmpdir(), 'sft-optim-'));
const modelDir = join(root, 'model');
initModel({ arch: 'llama', outDir: modelDir, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48, vocab: 400, seed: 2, maxPosition: 128, force: true });
const dataFile = join(root, 'data.jsonl');
// Replies of very different lengths, so padding and token counts differ between micro-batches.
const rows = [
  ['hi', 'hello there, how are you doing today?'], ['2+2?', '4'], ['name a colour', 'red'], ['count to five', 'one two three four five'],
  ['你好', '你好！'], ['capital of France?', 'Paris is the capital of France.'], ['yes?', 'no'], ['long one', 'a b c d e f g h i j k l m n o p'],
];
writeFileSync(dataFile, rows.map(([h, a]) => JSON.stringify({ conversation: [{ human: h, assistant: a }] })).join('\n') + '\n');

let runs = 0;
async function run(over: Record<string, unknown>) {
  const { config } = configFromObject({
    output_dir: join(root, `out-${runs++}`), model_name_or_path: modelDir, train_file: dataFile, template_name: 'default', train_mode: 'lora', max_seq_length: 64,
    per_device_train_batch_size: 4, gradient_accumulation_steps: 1, max_steps: 4, learning_rate: 1e-2, lr_scheduler_type: 'constant',
    lora_rank: 4, lora_alpha: 8, lora_dropout: 0, logging_steps: 1, save_strategy: 'no', disable_tqdm: true, seed: 11, weight_decay: 0.1, ...over,
  });
  const r = await train(config, { print: () => {}, stream: sink() });
  return { ...r, adapter: readLoraAdapter(r.outputDir) };
}

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) num = Math.max(num, Math.abs(a[i] - b[i])), den = Math.max(den, Math.abs(a[i]));
  return num / den;
}

test('the same seed gives the same run bit for bit (dropout on); another seed does not', async () => {
  const a = await run({ lora_dropout: 0.1 });
  const b = await run({ lora_dropout: 0.1 });
  const c = await run({ lora_dropout: 0.1, seed: 12 });
  assert.deepEqual(a.losses, b.losses);
  for (let i = 0; i < a.adapter.tensors.length; i++) assert.deepEqual(a.adapter.tensors[i].data, b.adapter.tensors[i].data);
  assert.notDeepEqual(a.losses, c.losses);
});

test('batch 4 equals batch 2 x 2 accumulation steps (same samples, loss over all their tokens)', async () => {
  const big = await run({ per_device_train_batch_size: 4, gradient_accumulation_steps: 1 });
  const acc = await run({ per_device_train_batch_size: 2, gradient_accumulation_steps: 2 });
  assert.equal(big.losses.length, acc.losses.length);
  for (let i = 0; i < big.losses.length; i++) assert.ok(Math.abs(big.losses[i] - acc.losses[i]) < 1e-5 * big.losses[i], `step ${i + 1}: ${big.losses[i]} vs ${acc.losses[i]}`);
  for (let i = 0; i < big.adapter.tensors.length; i++) {
    const d = maxRelDiff(big.adapter.tensors[i].data, acc.adapter.tensors[i].data);
    assert.ok(d < 1e-4, `${big.adapter.tensors[i].name}: ${d}`);
  }
});

test('the logged learning rate follows the schedule, and a zero learning rate leaves the adapter at its init', async () => {
  const r = await run({ lr_scheduler_type: 'linear', warmup_steps: 2, max_steps: 4 });
  const logged = readFileSync(join(r.outputDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).learning_rate);
  // HF: after update k the logged rate is the next update's: linear warmup 2 then decay to 0 at 4.
  assert.deepEqual(logged.map((x: number) => +x.toFixed(8)), [0.005, 0.01, 0.005, 0]);
  const frozen = await run({ learning_rate: 0, weight_decay: 0 });
  const b = frozen.adapter.tensors.filter((t) => t.name.endsWith('lora_B.weight'));
  assert.ok(b.every((t) => t.data.every((x) => x === 0)), 'lora_B stays zero with lr 0');
});

test('gradient_checkpointing: the same losses and adapter as keeping all activations', async () => {
  const a = await run({ lora_dropout: 0.1 });
  const b = await run({ lora_dropout: 0.1, gradient_checkpointing: true });
  assert.deepEqual(b.losses, a.losses);
  for (let i = 0; i < a.adapter.tensors.length; i++) assert.deepEqual(b.adapter.tensors[i].data, a.adapter.tensors[i].data);
});
