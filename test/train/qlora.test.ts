// QLoRA on the CPU: the same run with an NF4 base (bits 4) converges like LoRA on the full-precision
// base, and its adapter is an ordinary PEFT LoRA adapter that loads onto the 16/32-bit base.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { loadModel } from '../../src/model/load.js';
import { sink } from '../helpers/sink.js';

const root = mkdtempSync(join(tmpdir(), 'sft-qlora-'));
const modelDir = join(root, 'model');
initModel({ arch: 'llama', outDir: modelDir, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, vocab: 400, seed: 5, maxPosition: 128, force: true });
const dataFile = join(root, 'data.jsonl');
const rows = [['你好', '你好！很高兴见到你。'], ['What is 2+3?', '2+3 equals 5.'], ['Name a fruit.', 'An apple.'], ['晚安', '晚安，做个好梦。']];
writeFileSync(dataFile, rows.map(([h, a]) => JSON.stringify({ conversation: [{ human: h, assistant: a }] })).join('\n') + '\n');

async function run(bits: number) {
  const lines: string[] = [];
  const { config } = configFromObject({
    output_dir: join(root, `out-${bits}`), model_name_or_path: modelDir, train_file: dataFile, template_name: 'qwen', train_mode: 'lora', max_seq_length: 64,
    per_device_train_batch_size: 4, max_steps: 150, learning_rate: 3e-3, lr_scheduler_type: 'constant_with_warmup', warmup_steps: 5,
    lora_rank: 8, lora_alpha: 16, lora_dropout: 0, logging_steps: 10, save_strategy: 'no', disable_tqdm: true, seed: 3, bits,
  });
  const r = await train(config, { print: (l) => lines.push(l), stream: sink() });
  return { ...r, lines };
}

test('QLoRA (NF4 base) converges like LoRA, and its adapter loads onto the full-precision base', async () => {
  const lora = await run(16);
  const qlora = await run(4);
  assert.ok(qlora.lines.some((l) => /QLoRA: linear weights quantized to NF4 with double quantization/.test(l)), qlora.lines.join('\n'));
  const tail = (l: number[]) => l.slice(-5).reduce((a, b) => a + b, 0) / 5;
  const [a, b] = [tail(lora.losses), tail(qlora.losses)];
  assert.ok(b < 0.5, `QLoRA final loss ${b}`);
  assert.ok(Math.abs(a - b) < 0.25, `LoRA ${a} vs QLoRA ${b}`);
  // Loading the adapter re-quantizes the base as in training (sft_config.json says bits 4), so it
  // recalls the training answer greedily; on the full-precision base it loads as a plain LoRA.
  const full = await loadModel({ modelDir, adapterDir: qlora.outputDir, bits: 16 });
  const probe = new Int32Array([5, 6, 7]);
  assert.ok((await full.model.logits(probe, 1, 3)).every(Number.isFinite));
  const loaded = await loadModel({ modelDir, adapterDir: qlora.outputDir });
  const prompt = loaded.tok.encode('<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n');
  const want = loaded.tok.encode('2+3 equals 5.');
  const ids = [...prompt];
  for (let i = 0; i < want.length; i++) {
    const logits = await loaded.model.logits(new Int32Array(ids), 1, ids.length);
    const V = logits.length / ids.length;
    const last = logits.subarray((ids.length - 1) * V);
    let best = 0;
    for (let v = 1; v < V; v++) if (last[v] > last[best]) best = v;
    ids.push(best);
  }
  assert.deepEqual(ids.slice(prompt.length), want);
});
