// `sft merge` of a QLoRA adapter: it says the base was NF4 in training, scores NF4 base + adapter
// against the merged model, and --dequantized-base writes dequant(NF4(W)) + alpha/r * B A. The
// reference is computed here: the engine's NF4 dequantizer on a freshly quantized base (every tensor
// it leaves alone is returned as it is) plus B A multiplied out from the adapter's tensors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { loadBase } from '../../src/model/load.js';
import { readLoraAdapter } from '../../src/io/peft.js';
import { listCheckpointTensors } from '../../src/model/weights.js';
import { readSafetensorsHeader, readTensorF32 } from '../../src/io/safetensors.js';
import { runCli } from '../helpers/cli.js';
import { sink } from '../helpers/sink.js';

const root = mkdtempSync(join(tmpdir(), 'sft-merge-qlora-'));
const modelDir = join(root, 'model');
initModel({ arch: 'llama', outDir: modelDir, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, vocab: 400, seed: 8, maxPosition: 128, force: true });
const dataFile = join(root, 'data.jsonl');
writeFileSync(dataFile, Array.from({ length: 6 }, (_, i) => JSON.stringify({ conversation: [{ human: `q${i}?`, assistant: `the answer is ${i * 3}` }] })).join('\n') + '\n');

async function adapter(bits: number, rank: number, alpha: number): Promise<string> {
  const out = join(root, `adapter-${bits}`);
  const { config } = configFromObject({
    output_dir: out, model_name_or_path: modelDir, train_file: dataFile, template_name: 'qwen', max_seq_length: 120,
    per_device_train_batch_size: 3, max_steps: 6, learning_rate: 5e-3, lr_scheduler_type: 'constant', lora_rank: rank, lora_alpha: alpha,
    lora_dropout: 0, save_strategy: 'no', disable_tqdm: true, seed: 2, bits, train_mode: bits === 4 ? 'qlora' : 'lora',
  });
  await train(config, { print: () => {}, stream: sink() });
  return out;
}

/** Every tensor of a merged folder, by name. */
function merged(dir: string): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const s of listCheckpointTensors(dir)) out.set(s.name, readTensorF32(s.file, readSafetensorsHeader(s.file), s.name));
  return out;
}

/** base + (alpha / r) B A for every LoRA target, base as given for the rest. */
function expected(base: Map<string, Float32Array>, adapterDir: string): Map<string, Float32Array> {
  const { config, tensors } = readLoraAdapter(adapterDir);
  const scale = config.loraAlpha / config.r;
  const out = new Map([...base].map(([k, v]) => [k, Float32Array.from(v)]));
  for (const a of tensors.filter((t) => t.name.endsWith('lora_A.weight'))) {
    const b = tensors.find((t) => t.name === a.name.replace('lora_A', 'lora_B'))!;
    const w = out.get(a.name.replace('.lora_A.weight', '.weight'))!;
    const [r, cols] = a.shape, rows = b.shape[0];
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        let d = 0;
        for (let k = 0; k < r; k++) d += b.data[i * r + k] * a.data[k * cols + j];
        w[i * cols + j] += scale * d;
      }
    }
  }
  return out;
}

function maxDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  let m = 0;
  for (const [k, v] of b) {
    const x = a.get(k);
    assert.ok(x, `merged model lacks ${k}`);
    for (let i = 0; i < v.length; i++) m = Math.max(m, Math.abs(x[i] - v[i]));
  }
  return m;
}

test('merging a QLoRA adapter: the notice, the score, and --dequantized-base = dequant(NF4(W)) + alpha/r B A', async () => {
  const dir = await adapter(4, 8, 16);
  const { model: full } = await loadBase(modelDir);
  const { model: nf4 } = await loadBase(modelDir);
  nf4.quantize({ bits: 4, doubleQuant: true });
  const W = new Map(full.baseParams().map((p) => [p.name, full.getTensor(p.name)]));
  const deq = new Map(nf4.baseParams().map((p) => [p.name, nf4.getTensor(p.name)]));
  // The quantization moved the linear weights (the two references differ where it matters).
  assert.ok(maxDiff(deq, W) > 1e-3);

  const plain = runCli(['merge', '--model', modelDir, '--adapter', dir, '--out', join(root, 'merged-full'), '--dtype', 'f32']);
  assert.equal(plain.status, 0, plain.stderr);
  assert.match(plain.stdout, /was trained with QLoRA .*during training its base was NF4/);
  assert.match(plain.stdout, /Merging into the full-precision base: W \+ BA\. --dequantized-base merges into dequant\(NF4\(W\)\) \+ BA/);
  const fullScore = /Score on 6 samples of .*data\.jsonl \(\d+ trained tokens\): NF4 base \+ adapter loss ([\d.]+) \(perplexity [\d.]+\); merged loss ([\d.]+) \(perplexity [\d.]+\); difference ([+-][\d.]+)/.exec(plain.stdout);
  assert.ok(fullScore, plain.stdout);
  assert.ok(maxDiff(merged(join(root, 'merged-full')), expected(W, dir)) < 1e-5);

  const dq = runCli(['merge', '--model', modelDir, '--adapter', dir, '--out', join(root, 'merged-nf4'), '--dtype', 'f32', '--dequantized-base', '--score-file', dataFile, '--score-samples', '4']);
  assert.equal(dq.status, 0, dq.stderr);
  assert.match(dq.stdout, /Merging into the dequantized NF4 base: dequant\(NF4\(W\)\) \+ BA/);
  const got = merged(join(root, 'merged-nf4'));
  const diff = maxDiff(got, expected(deq, dir));
  assert.ok(diff < 1e-5, `dequantized merge off by ${diff}`);
  assert.ok(maxDiff(got, expected(W, dir)) > 1e-3, 'not the full-precision merge');
  // Into the base it was trained against, the merged model scores as NF4 base + adapter does.
  const s = /Score on 4 samples .*NF4 base \+ adapter loss ([\d.]+) .*merged loss ([\d.]+) .*difference ([+-][\d.]+)/.exec(dq.stdout);
  assert.ok(s, dq.stdout);
  assert.equal(s[1], s[2]);
});

test('--dequantized-base on an adapter trained on a 16-bit base is refused; such a merge says nothing of NF4', async () => {
  const dir = await adapter(16, 4, 8);
  const r = runCli(['merge', '--model', modelDir, '--adapter', dir, '--out', join(root, 'x'), '--dequantized-base']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /--dequantized-base: .* was not trained on a 4-bit base/);
  const ok = runCli(['merge', '--model', modelDir, '--adapter', dir, '--out', join(root, 'y')]);
  assert.equal(ok.status, 0, ok.stderr);
  assert.ok(!/NF4|Score on/.test(ok.stdout), ok.stdout);
});
