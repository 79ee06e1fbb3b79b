// Prompt tuning against peft (PROMPT_TUNING, fixtures by scripts/reference/make_prompt_tuning_fixture.py):
// peft's adapter loads and gives peft's logits, loss and virtual-token gradient; a prompt-tuning run
// trains only the virtual tokens and writes an adapter in peft's format that loads back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { applyAdapter, loadBase, loadModel } from '../../src/model/load.js';
import { readSafetensorsHeader, readTensorF32 } from '../../src/io/safetensors.js';
import { readPromptTuningAdapter } from '../../src/io/peft.js';
import { shiftLabels, train } from '../../src/train/recipe.js';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { sink } from '../helpers/sink.js';


function relErr(got: Float32Array, want: Float32Array): number {
  let d = 0, s = 0;
  for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(got[i] - want[i])), s = Math.max(s, Math.abs(want[i]));
  return d / s;
}

for (const arch of ['llama', 'bloom']) test(`${arch}: peft's prompt-tuning adapter: logits, loss and the virtual tokens' gradient equal peft's`, async () => {
  const dir = join(packageRoot, 'test', 'fixtures', 'reference', arch);
  const ref = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
  const refP = JSON.parse(readFileSync(join(dir, 'expected-prompt.json'), 'utf8'));
  const file = join(dir, 'expected-prompt.safetensors');
  const h = readSafetensorsHeader(file);
  const { model } = await loadBase(dir);
  applyAdapter(model, join(dir, 'prompt-tuning'));
  const [B, T] = [ref.ids.length, ref.ids[0].length];
  const ids = Int32Array.from(ref.ids.flat() as number[]);
  const e = relErr(await model.logits(ids, B, T), readTensorF32(file, h, 'logits'));
  assert.ok(e < 1e-5, `logits ${e}`);
  const targets = shiftLabels(Int32Array.from(ref.labels.flat() as number[]), B, T);
  const tokens = targets.filter((t) => t >= 0).length;
  model.zeroGrad();
  const r = await model.forwardBackward(ids, targets, B, T, 1 / tokens, 0);
  assert.ok(Math.abs(r.lossSum / r.tokens - refP.loss) < 1e-5 * refP.loss, `loss ${r.lossSum / r.tokens} vs ${refP.loss}`);
  const g = relErr(model.getGrad('prompt_embeddings'), readTensorF32(file, h, 'grad.prompt_embeddings'));
  assert.ok(g < 1e-4, `grad ${g}`);
});

test('a prompt-tuning run trains only the virtual tokens (TEXT init) and its adapter loads back', async () => {
  const root = mkdtempSync(join(tmpdir(), 'sft-pt-'));
  const modelDir = join(root, 'model');
  initModel({ arch: 'llama', outDir: modelDir, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96, vocab: 300, seed: 8, maxPosition: 128, force: true });
  const data = join(root, 'd.jsonl');
  writeFileSync(data, [['hi', 'hello!'], ['2+2?', '4']].map(([h, a]) => JSON.stringify({ conversation: [{ human: h, assistant: a }] })).join('\n') + '\n');
  const { config } = configFromObject({
    output_dir: join(root, 'out'), model_name_or_path: modelDir, train_file: data, template_name: 'default', max_seq_length: 64,
    train_mode: 'prompt_tuning', num_virtual_tokens: 6, prompt_tuning_init: 'TEXT', prompt_tuning_init_text: 'Answer briefly:',
    per_device_train_batch_size: 2, max_steps: 30, learning_rate: 3e-2, lr_scheduler_type: 'constant', logging_steps: 10, save_strategy: 'no', seed: 1, disable_tqdm: true,
  });
  const r = await train(config, { print: () => {}, stream: sink() });
  assert.ok(r.losses[r.losses.length - 1] < r.losses[0], `loss ${r.losses[0]} -> ${r.losses[r.losses.length - 1]}`);
  const cfg = JSON.parse(readFileSync(join(r.outputDir, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.peft_type, 'PROMPT_TUNING');
  assert.equal(cfg.num_virtual_tokens, 6);
  assert.equal(cfg.token_dim, 64);
  assert.equal(cfg.prompt_tuning_init, 'TEXT');
  const { embeddings } = readPromptTuningAdapter(r.outputDir);
  // Only the virtual tokens trained: the base is untouched, and the embeddings moved from their TEXT init.
  const loaded = await loadModel({ modelDir, adapterDir: r.outputDir });
  assert.deepEqual(loaded.model.getTensor('prompt_embeddings'), embeddings);
  const ids = new Int32Array([5, 9, 40]);
  // loadModel packs the frozen weights for inference (products of <= 8 rows, here the lm_head over the
  // 3 scored positions, then run the panel GEMV, whose sums differ from the row-major GEMV's within
  // rounding): pack the trained model too, then bit for bit.
  await r.model!.prepareInference();
  assert.deepEqual(await loaded.model.logits(ids, 1, 3), await r.model!.logits(ids, 1, 3));
  const { model: base } = await loadBase(modelDir);
  assert.deepEqual(base.getTensor('model.layers.0.mlp.up_proj.weight'), r.model!.getTensor('model.layers.0.mlp.up_proj.weight'));
});

test('configs/bloom-1b4-prompt-tuning.json runs on a tiny Bloom with alpaca records', async () => {
  const { loadConfig } = await import('../../src/config/loader.js');
  const root = mkdtempSync(join(tmpdir(), 'sft-ptb-'));
  const modelDir = join(root, 'bloom');
  initModel({ arch: 'bloom', outDir: modelDir, hidden: 32, layers: 2, heads: 4, intermediate: 128, vocab: 300, seed: 2, maxPosition: 256, force: true });
  const data = join(root, 'alpaca.jsonl');
  writeFileSync(data, [['翻译成英文', '早上好', 'Good morning'], ['2+3=?', '', '5']].map(([i, x, o]) => JSON.stringify({ instruction: i, input: x, output: o })).join('\n') + '\n');
  const { config } = loadConfig(join(packageRoot, 'configs', 'bloom-1b4-prompt-tuning.json'), [
    '--model_name_or_path', modelDir, '--train_file', data, '--output_dir', join(root, 'out'), '--max_steps', '3', '--gradient_accumulation_steps', '1', '--max_seq_length', '128',
  ]);
  const r = await train(config, { print: () => {}, stream: sink() });
  assert.equal(r.steps, 3);
  const cfg = JSON.parse(readFileSync(join(r.outputDir, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.peft_type, 'PROMPT_TUNING');
  assert.deepEqual(readPromptTuningAdapter(r.outputDir).embeddings.length, 20 * 32);
});
