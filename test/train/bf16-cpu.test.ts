// bf16: true on the CPU trains in bf16 (bf16 frozen weights and activations; fp32 master weights,
// gradients and AdamW moments, as PyTorch's CPU autocast keeps them): the run line and the memory
// plan say so, the losses follow the fp32 run's, the saved adapter is fp32 in PEFT's layout and
// loads (onto a bf16 base: the trained model's logits exactly), and a resumed run continues bit for
// bit. The per-op and whole-model checks are test/native/test_bf16_*.cpp.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { loadModel } from '../../src/model/load.js';
import { readLoraAdapter } from '../../src/io/peft.js';
import { readSafetensorsHeader } from '../../src/io/safetensors.js';
import { runCli } from '../helpers/cli.js';
import { sink } from '../helpers/sink.js';

const root = mkdtempSync(join(tmpdir(), 'sft-bf16-'));
const modelDir = join(root, 'model');
initModel({ arch: 'llama', outDir: modelDir, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, vocab: 400, seed: 4, maxPosition: 128, force: true });
const dataFile = join(root, 'data.jsonl');
const rows = [['hi', 'hello there, how are you doing today?'], ['2+2?', '4'], ['name a colour', 'red'], ['count to five', 'one two three four five']];
writeFileSync(dataFile, rows.map(([h, a]) => JSON.stringify({ conversation: [{ human: h, assistant: a }] })).join('\n') + '\n');

const settings = {
  model_name_or_path: modelDir, train_file: dataFile, template_name: 'default', train_mode: 'lora', device: 'cpu', max_seq_length: 64,
  per_device_train_batch_size: 2, gradient_accumulation_steps: 2, max_steps: 8, learning_rate: 5e-3, lr_scheduler_type: 'linear', warmup_steps: 0,
  lora_rank: 8, lora_alpha: 16, lora_dropout: 0.1, logging_steps: 1, save_strategy: 'no', disable_tqdm: true, seed: 11,
};

let runs = 0;
async function run(over: Record<string, unknown>, opts: { resume?: string; stopAfter?: number } = {}) {
  const { config } = configFromObject({ output_dir: join(root, `out-${runs++}`), ...settings, ...over });
  const lines: string[] = [];
  let steps = 0;
  const r = await train(config, {
    print: (l) => lines.push(l), stream: sink(), resume: opts.resume,
    shouldStop: () => opts.stopAfter !== undefined && ++steps >= opts.stopAfter,
  });
  return { ...r, lines, adapter: r.interrupted ? [] : readLoraAdapter(r.outputDir).tensors };
}

function relNorm(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) d += (a[i] - b[i]) ** 2, n += b[i] ** 2;
  return Math.sqrt(d / n);
}

test('bf16 on the CPU: bf16 compute said and planned, losses follow fp32, adapter saved in fp32 and reloads exactly', async () => {
  const fp32 = await run({});
  const bf16 = await run({ bf16: true });
  assert.ok(bf16.lines.some((l) => /^Training lora .*; cpu, bf16 compute$/.test(l)), bf16.lines.join('\n'));
  assert.ok(fp32.lines.some((l) => /; cpu, fp32 compute$/.test(l)));
  assert.ok(bf16.lines.some((l) => /Memory plan \(cpu bf16\)/.test(l)), bf16.lines.join('\n'));
  assert.ok(!bf16.lines.some((l) => /bf16=true/.test(l)), 'no notice: bf16 is what the CPU computes');
  // The same steps, PyTorch's bf16 distance from fp32: loss within 2e-2 at every step, and descending.
  assert.equal(bf16.losses.length, 8);
  for (let i = 0; i < 8; i++) assert.ok(Math.abs(bf16.losses[i] - fp32.losses[i]) / fp32.losses[i] < 2e-2, `step ${i + 1}: bf16 ${bf16.losses[i]} fp32 ${fp32.losses[i]}`);
  assert.ok(bf16.losses[7] < 0.8 * bf16.losses[0], `bf16 losses descend: ${bf16.losses}`);
  assert.notDeepEqual(bf16.losses, fp32.losses, 'bf16 is not fp32 under another name');

  // The adapter: PEFT's names, fp32 tensors (the masters), close to the fp32 run's: within 1e-1 after
  // 8 AdamW steps (the worst 6e-2, a lora_B from zero: Adam moves every element by ~lr whatever its
  // gradient's size, so bf16's noise on the small gradient elements shows in full).
  const file = join(bf16.outputDir, 'adapter_model.safetensors');
  const header = readSafetensorsHeader(file);
  assert.ok(header.tensors.has('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'));
  for (const [name, t] of header.tensors) assert.equal(t.dtype, 'F32', name);
  for (let i = 0; i < fp32.adapter.length; i++) {
    assert.equal(bf16.adapter[i].name, fp32.adapter[i].name);
    assert.ok(relNorm(bf16.adapter[i].data, fp32.adapter[i].data) < 1e-1, `${fp32.adapter[i].name}: ${relNorm(bf16.adapter[i].data, fp32.adapter[i].data)}`);
  }
  const ids = new Int32Array([5, 17, 230, 4, 99, 12, 7, 301]);
  const trained = await bf16.model!.logits(ids, 1, ids.length);
  const onBf16 = await loadModel({ modelDir, adapterDir: bf16.outputDir, dtype: 'bf16' });
  assert.deepEqual(await onBf16.model.logits(ids, 1, ids.length), trained, 'the saved masters round to the compute copies the run had');
  const onF32 = await loadModel({ modelDir, adapterDir: bf16.outputDir });
  assert.ok(relNorm(await onF32.model.logits(ids, 1, ids.length), trained) < 2e-2, 'on an fp32 base: bf16 rounding away');
});

test('bf16 on the CPU: stopped and resumed = uninterrupted, bit for bit', async () => {
  const over = { bf16: true, max_steps: 8, save_strategy: 'steps', save_steps: 3 };
  const whole = await run(over);
  const dir = join(root, 'split');
  const first = await run({ ...over, output_dir: dir }, { stopAfter: 4 });
  assert.equal(first.steps, 4);
  const second = await run({ ...over, output_dir: dir }, { resume: 'latest' });
  assert.equal(second.steps, 8);
  assert.deepEqual(second.losses, whole.losses);
  for (let i = 0; i < whole.adapter.length; i++) assert.deepEqual(second.adapter[i].data, whole.adapter[i].data, whole.adapter[i].name);
});

test('sft train --dry-run with bf16 on the CPU: the plan in bf16, weights and activations halved', () => {
  const plan = (bf16: boolean) => {
    const cfg = join(root, `dry-${bf16}.json`);
    writeFileSync(cfg, JSON.stringify({ ...settings, output_dir: join(root, `dry-${bf16}`), bf16 }));
    const r = runCli(['train', '--config', cfg, '--dry-run']);
    assert.equal(r.status, 0, r.stderr);
    const kind = (k: string) => {
      const m = new RegExp(`^  ${k} +([\\d.]+) (B|KiB|MiB|GiB)`, 'm').exec(r.stdout);
      assert.ok(m, `${k} in\n${r.stdout}`);
      return Number(m[1]) * { B: 1, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30 }[m[2] as 'B'];
    };
    return { out: r.stdout, weights: kind('weights'), activations: kind('activations'), gradients: kind('gradients'), optimizer: kind('optimizer') };
  };
  const f = plan(false), b = plan(true);
  assert.match(b.out, /Memory plan \(cpu bf16\), before any weight is loaded:/);
  assert.match(b.out, /; cpu, bf16 compute$/m);
  assert.ok(Math.abs(b.weights / f.weights - 0.5) < 0.02, `weights ${b.weights} vs ${f.weights}`);
  assert.ok(b.activations / f.activations < 0.6, `activations ${b.activations} vs ${f.activations}`);
  assert.ok(Math.abs(b.gradients / f.gradients - 1) < 0.01 && Math.abs(b.optimizer / f.optimizer - 1) < 0.01, 'gradients and AdamW moments stay fp32');
});

test('fp16 on the CPU: fp32 compute with loss scaling, and the notice points to bf16', async () => {
  const r = await run({ fp16: true, max_steps: 1 });
  assert.ok(r.lines.some((l) => /fp16=true: the CPU backend has no fp16 kernels, so the run trains in fp32; dynamic loss scaling .*bf16=true trains in bf16 on the CPU/.test(l)), r.lines.join('\n'));
  assert.ok(r.lines.some((l) => /; cpu, fp32 compute$/.test(l)));
});
