// fp16: true is dynamic loss scaling as HF's Trainer does it through torch.amp.GradScaler (PyTorch's
// torch/amp/grad_scaler.py and _amp_update_scale_): scale 2^16 at the start, the loss multiplied by
// it, gradients unscaled before clipping; a step whose gradients hold inf/NaN is skipped (no update,
// no learning-rate step) and halves the scale; 2000 clean steps in a row double it; the scale lives
// in fp32. The state is in every checkpoint and a resumed run continues it exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { readLoraAdapter } from '../../src/io/peft.js';
import { readSafetensorsHeader, readTensorF32, writeSafetensors } from '../../src/io/safetensors.js';
import { LossScaler, type LossScalerOptions } from '../../src/train/loss-scaler.js';
import { checkTrainerState } from '../../src/train/resume.js';
import { sink } from '../helpers/sink.js';

const root = mkdtempSync(join(tmpdir(), 'sft-fp16-'));
const modelDir = join(root, 'model');
initModel({ arch: 'llama', outDir: modelDir, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48, vocab: 400, seed: 2, maxPosition: 128, force: true });
// A second model whose final norm is 1e4 times larger: its gradients are large enough that a loss
// scale near fp32's top overflows them (in fp16 compute that happens at ordinary scales).
const loudDir = join(root, 'loud');
initModel({ arch: 'llama', outDir: loudDir, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48, vocab: 400, seed: 2, maxPosition: 128, force: true });
{
  const file = join(loudDir, 'model.safetensors');
  const h = readSafetensorsHeader(file);
  const tensors = [...h.tensors].map(([name, t]) => {
    const data = readTensorF32(file, h, name);
    if (name === 'model.norm.weight') for (let i = 0; i < data.length; i++) data[i] *= 1e4;
    return { name, dtype: 'F32' as const, shape: t.shape, data };
  });
  writeSafetensors(file, tensors, { format: 'pt' });
}
const dataFile = join(root, 'data.jsonl');
const rows = [['hi', 'hello there, how are you doing today?'], ['2+2?', '4'], ['name a colour', 'red'], ['count to five', 'one two three four five']];
writeFileSync(dataFile, rows.map(([h, a]) => JSON.stringify({ conversation: [{ human: h, assistant: a }] })).join('\n') + '\n');

let runs = 0;
async function run(over: Record<string, unknown>, opts: { scaler?: LossScalerOptions; resume?: string; stopAfter?: number } = {}) {
  const { config } = configFromObject({
    output_dir: join(root, `out-${runs++}`), model_name_or_path: modelDir, train_file: dataFile, template_name: 'default', train_mode: 'lora', max_seq_length: 64,
    per_device_train_batch_size: 2, gradient_accumulation_steps: 2, max_steps: 6, learning_rate: 1e-2, lr_scheduler_type: 'linear', warmup_steps: 0,
    lora_rank: 4, lora_alpha: 8, lora_dropout: 0.1, logging_steps: 1, save_strategy: 'no', disable_tqdm: true, seed: 11, weight_decay: 0.1, ...over,
  });
  let steps = 0;
  const r = await train(config, {
    print: () => {}, stream: sink(), lossScaler: opts.scaler, resume: opts.resume,
    shouldStop: () => opts.stopAfter !== undefined && ++steps >= opts.stopAfter,
  });
  const metrics = readFileSync(join(r.outputDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number | null>).filter((m) => 'loss' in m);
  return { ...r, adapter: r.interrupted ? [] : readLoraAdapter(r.outputDir).tensors, metrics };
}

test('GradScaler rules: 2^16 start, x0.5 and reset on overflow, x2 after growth_interval clean steps, fp32 scale', () => {
  const s = new LossScaler();
  assert.equal(s.scale, 65536);
  assert.equal(s.inverse, 1 / 65536);
  for (let i = 0; i < 1999; i++) s.update(false);
  assert.equal(s.scale, 65536);
  assert.equal(s.growthTracker, 1999);
  s.update(false);
  assert.deepEqual(s.state(), { scale: 131072, growth_tracker: 0, skipped_steps: 0 });
  s.update(false);
  s.update(true);
  assert.deepEqual(s.state(), { scale: 65536, growth_tracker: 0, skipped_steps: 1 });
  // A growth past fp32's largest value is not made (the tracker still resets).
  const top = new LossScaler({ initScale: 2 ** 127, growthInterval: 1 });
  top.update(false);
  assert.deepEqual(top.state(), { scale: 2 ** 127, growth_tracker: 0, skipped_steps: 0 });
  // The scale is an fp32 value: an initial 0.1 is fp32's 0.1, and so is every change of it.
  const odd = new LossScaler({ initScale: 0.1 });
  assert.equal(odd.scale, Math.fround(0.1));
  odd.update(true);
  assert.equal(odd.scale, Math.fround(Math.fround(0.1) * 0.5));
  // The state restores exactly.
  const back = new LossScaler({}, s.state());
  assert.deepEqual(back.state(), s.state());
});

test('fp16 with no overflow trains the same weights as fp32 (the power-of-two scale is exact), scale logged', async () => {
  const plain = await run({});
  const scaled = await run({ fp16: true });
  assert.deepEqual(scaled.losses, plain.losses);
  for (let i = 0; i < plain.adapter.length; i++) {
    let d = 0;
    for (let j = 0; j < plain.adapter[i].data.length; j++) d = Math.max(d, Math.abs(plain.adapter[i].data[j] - scaled.adapter[i].data[j]));
    assert.ok(d <= 1e-7, `${plain.adapter[i].name}: max difference ${d}`);
  }
  assert.deepEqual(scaled.metrics.map((m) => [m.loss_scale, m.skipped_steps]), plain.metrics.map(() => [65536, 0]));
  assert.deepEqual(scaled.metrics.map((m) => m.grad_norm), plain.metrics.map((m) => m.grad_norm), 'the norm is the unscaled one');
  assert.ok(plain.metrics.every((m) => !('loss_scale' in m)), 'no scale without fp16');
});

test('an overflowing step is skipped (weights as before), halves the scale and holds the learning rate; clean steps grow it', async () => {
  // Step 1 overflows at 2^127 and changes nothing: the adapter equals its initial values (lr 0).
  const initial = await run({ model_name_or_path: loudDir, max_steps: 1, learning_rate: 0 });
  const one = await run({ model_name_or_path: loudDir, max_steps: 1, fp16: true }, { scaler: { initScale: 2 ** 127 } });
  assert.equal(one.metrics[0].skipped_steps, 1);
  assert.equal(one.metrics[0].loss_scale, 2 ** 126);
  assert.equal(one.metrics[0].grad_norm, null, 'the norm of an overflow is inf/NaN (null in JSON)');
  for (let i = 0; i < initial.adapter.length; i++) assert.deepEqual(one.adapter[i].data, initial.adapter[i].data, initial.adapter[i].name);

  // A longer run: skips until the scale fits, then grows every 2 clean steps (growth_interval 2).
  const n = 30, lr = 1e-2;
  const r = await run({ model_name_or_path: loudDir, max_steps: n, fp16: true, learning_rate: lr }, { scaler: { initScale: 2 ** 127, growthInterval: 2 } });
  let scale = 2 ** 127, tracker = 0, skipped = 0, sawSkip = false, sawGrowth = false;
  for (const m of r.metrics) {
    const skip = (m.skipped_steps as number) > skipped;
    if (skip) {
      assert.equal(m.skipped_steps, skipped + 1);
      assert.equal(m.grad_norm, null, `step ${m.step}`);
      scale /= 2, tracker = 0, skipped++, sawSkip = true;
    } else {
      assert.ok(typeof m.grad_norm === 'number' && Number.isFinite(m.grad_norm), `step ${m.step}`);
      if (++tracker === 2) scale *= 2, tracker = 0, sawGrowth = true;
    }
    assert.equal(m.loss_scale, scale, `step ${m.step}`);
    // linear decay over n steps, counting optimizer steps taken (HF skips the scheduler step too)
    assert.ok(Math.abs((m.learning_rate as number) - lr * (1 - ((m.step as number) - skipped) / n)) < 1e-12, `lr at step ${m.step}`);
  }
  assert.ok(sawSkip && sawGrowth, `skips and growth both seen: ${JSON.stringify(r.metrics.map((m) => m.loss_scale))}`);
});

test('stopped and resumed mid-run = uninterrupted, scale and skipped steps included', async () => {
  const over = { model_name_or_path: loudDir, max_steps: 24, fp16: true, save_strategy: 'steps', save_steps: 5 };
  const scaler = { initScale: 2 ** 127, growthInterval: 3 };
  const whole = await run(over, { scaler });
  const dir = join(root, 'split');
  const first = await run({ ...over, output_dir: dir }, { scaler, stopAfter: 13 });
  assert.equal(first.steps, 13);
  const state = JSON.parse(readFileSync(join(dir, 'checkpoint-13', 'trainer_state.json'), 'utf8'));
  assert.ok(state.grad_scaler.skipped_steps > 0, 'the first part skipped steps');
  assert.equal(state.grad_scaler.skipped_steps, whole.metrics[12].skipped_steps);
  assert.equal(state.grad_scaler.scale, whole.metrics[12].loss_scale);
  const second = await run({ ...over, output_dir: dir }, { scaler, resume: 'latest' });
  assert.equal(second.steps, 24);
  assert.deepEqual(second.losses, whole.losses);
  for (let i = 0; i < whole.adapter.length; i++) assert.deepEqual(second.adapter[i].data, whole.adapter[i].data, whole.adapter[i].name);
  const strip = (ms: Record<string, unknown>[]) => ms.map(({ tokens_per_second: _t, ...m }) => m);
  assert.deepEqual(strip(second.metrics), strip(whole.metrics));
});

test('trainer_state.json: a damaged grad_scaler is refused, naming the key', () => {
  const good = { global_step: 2, micro_batches: 2, losses: [1, 1], log_loss_sum: 0, log_steps: 0, tokens_seen: 9, total_steps: 4 };
  const check = (gs: unknown) => checkTrainerState('t.json', { ...good, grad_scaler: gs }, { accum: 1 });
  assert.deepEqual(check({ scale: 65536, growth_tracker: 1, skipped_steps: 1 }).grad_scaler, { scale: 65536, growth_tracker: 1, skipped_steps: 1 });
  assert.equal(check(null).grad_scaler, null);
  for (const bad of [{ scale: -1, growth_tracker: 0, skipped_steps: 0 }, { scale: 0.1, growth_tracker: 0, skipped_steps: 0 }, { scale: 1, growth_tracker: 0, skipped_steps: 3 }, { scale: 1 }, 5]) {
    assert.throws(() => check(bad), /t\.json: "grad_scaler" is .*expected \{ "scale": a positive finite number/);
  }
});
