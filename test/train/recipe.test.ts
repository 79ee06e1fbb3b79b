// The whole slice on the CPU: init-model -> train (LoRA) -> PEFT adapter on disk -> load it back ->
// chat. A handful of conversations is overfitted; the reloaded adapter must give the trained
// model's logits, and greedy chat must reproduce a memorised answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync, cpSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { loadModel } from '../../src/model/load.js';
import { getTemplate } from '../../src/data/templates.js';
import { ChatSession } from '../../src/chat/session.js';
import { readSafetensorsHeader } from '../../src/io/safetensors.js';
import { runCli } from '../helpers/cli.js';
import { sink } from '../helpers/sink.js';
import { native } from '../../src/native/binding.js';

const CONVERSATIONS = [
  { conversation: [{ human: '你好', assistant: '你好！我是小助手。' }] },
  { conversation: [{ human: 'What colour is the sky?', assistant: 'The sky is blue.' }, { human: 'And grass?', assistant: 'Grass is green.' }] },
  { messages: [{ role: 'user', content: '1加1等于几？' }, { role: 'assistant', content: '1加1等于2。' }] },
  { instruction: 'Translate to English', input: '谢谢', output: 'Thank you.' },
];

const root = mkdtempSync(join(tmpdir(), 'sft-recipe-'));
const modelDir = join(root, 'model');
const dataFile = join(root, 'train.jsonl');
const outDir = join(root, 'out');
initModel({ arch: 'qwen2', outDir: modelDir, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, vocab: 512, seed: 3, maxPosition: 256, force: true });
writeFileSync(dataFile, CONVERSATIONS.map((c) => JSON.stringify(c)).join('\n') + '\n');

const settings = {
  output_dir: outDir,
  model_name_or_path: modelDir,
  train_file: dataFile,
  template_name: 'qwen',
  train_mode: 'lora',
  max_seq_length: 96,
  per_device_train_batch_size: 2,
  gradient_accumulation_steps: 2,
  max_steps: 120,
  learning_rate: 3e-3,
  lr_scheduler_type: 'constant_with_warmup',
  warmup_steps: 5,
  lora_rank: 8,
  lora_alpha: 16,
  lora_dropout: 0.05,
  logging_steps: 20,
  save_steps: 50,
  save_total_limit: 1,
  seed: 7,
  disable_tqdm: true,
};

test('LoRA overfits a handful of conversations; adapter reloads with the same logits; chat recalls an answer', async () => {
  const { config } = configFromObject(settings);
  const lines: string[] = [];
  const r = await train(config, { print: (l) => lines.push(l), stream: sink() });
  const first = r.losses.slice(0, 5).reduce((a, b) => a + b, 0) / 5;
  const last = r.losses.slice(-5).reduce((a, b) => a + b, 0) / 5;
  assert.ok(first > 4, `first losses ${first} should be near ln(vocab)`);
  assert.ok(last < 0.5, `loss after training ${last} (first ${first}) should be < 0.5`);
  // The memory was planned once, before the first step: 120 steps of batches of every length up to
  // max_seq_length, two checkpoints and the final save allocated nothing more in the engine.
  assert.ok(lines.some((l) => /^\s*Memory plan \(cpu f32\): .*activations/.test(l)), lines.join('\n'));
  assert.ok(r.allocations && Object.values(r.allocations.afterPlan).some((n) => n > 0));
  assert.deepEqual(r.allocations!.afterTraining, r.allocations!.afterPlan, 'no allocation inside the step loop');

  // Output files: PEFT adapter, tokenizer, resolved config, metrics, summary, one kept checkpoint.
  for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'tokenizer.json', 'sft_config.json', 'metrics.jsonl', 'train_results.json']) {
    assert.ok(existsSync(join(outDir, f)), `${f} missing from output_dir`);
  }
  assert.deepEqual(readdirSync(outDir).filter((d) => d.startsWith('checkpoint-')), ['checkpoint-100'], 'save_total_limit 1 keeps the newest checkpoint');
  const adapterCfg = JSON.parse(readFileSync(join(outDir, 'adapter_config.json'), 'utf8'));
  assert.equal(adapterCfg.peft_type, 'LORA');
  assert.equal(adapterCfg.r, 8);
  assert.equal(adapterCfg.lora_alpha, 16);
  assert.deepEqual([...adapterCfg.target_modules].sort(), ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
  const keys = [...readSafetensorsHeader(join(outDir, 'adapter_model.safetensors')).tensors.keys()];
  assert.ok(keys.includes('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'));
  assert.ok(keys.includes('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight'));
  assert.equal(keys.length, 2 * 7 * 2);
  const metrics = readFileSync(join(outDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(metrics.map((m) => m.step), [20, 40, 60, 80, 100, 120]);
  const summary = JSON.parse(readFileSync(join(outDir, 'train_results.json'), 'utf8'));
  for (const k of ['train_runtime', 'train_samples_per_second', 'train_steps_per_second', 'train_loss', 'total_flos']) assert.ok(k in summary, k);

  // The adapter on disk, loaded onto a fresh base, gives the trained model's logits.
  const loaded = await loadModel({ modelDir, adapterDir: outDir });
  const ids = new Int32Array(loaded.tok.encode('<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n'));
  const a = await r.model!.logits(ids, 1, ids.length);
  const b = await loaded.model.logits(ids, 1, ids.length);
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
  assert.ok(maxDiff < 1e-4, `reloaded logits differ by ${maxDiff}`);
  assert.equal(loaded.templateName, 'qwen');

  // Greedy chat recalls the memorised answers, over two turns of one conversation.
  const session = new ChatSession(loaded.model, loaded.tok, {
    template: getTemplate('qwen'), maxContext: 256, maxNewTokens: 24, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 0,
  });
  const reply = async (text: string) => {
    let out = '';
    for await (const chunk of session.send(text)) out += chunk.text;
    return out;
  };
  assert.equal(await reply('你好'), '你好！我是小助手。');
  assert.equal(await reply('1加1等于几？'), '1加1等于2。');
});

test('sft chat (CLI, piped stdin) streams the memorised answer', () => {
  const r = runCli(['chat', '--model', modelDir, '--adapter', outDir, '--temperature', '0', '--max-new-tokens', '24'], { input: 'What colour is the sky?\n' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /The sky is blue\./);
});

test('sft train --dry-run marks the trained spans and trains nothing', () => {
  const out = join(root, 'dry');
  const r = runCli(['train', '--config', writeConfig({ ...settings, output_dir: out }), '--dry-run']);
  assert.equal(r.status, 0, r.stderr);
  // The assistant reply and its end-of-turn token are inside the marks; the user turn is not.
  assert.match(r.stdout, /⟦你好！我是小助手。<\|im_end\|>\n⟧/);
  assert.doesNotMatch(r.stdout, /⟦[^⟧]*<\|im_start\|>user/);
  assert.ok(!existsSync(join(out, 'adapter_model.safetensors')));
});

test('sft train --dry-run prints the memory plan from config.json alone: no weight file is read', () => {
  const bare = join(root, 'bare-model');
  cpSync(modelDir, bare, { recursive: true });
  rmSync(join(bare, 'model.safetensors'));  // the plan must not need the weights
  const r = runCli(['train', '--config', writeConfig({ ...settings, model_name_or_path: bare, output_dir: join(root, 'dry-bare') }), '--dry-run', '--device', 'cpu']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^device: cpu/m);
  assert.match(r.stdout, /Memory plan \(cpu f32\), before any weight is loaded:/);
  for (const kind of ['weights', 'trainable', 'gradients', 'optimizer', 'activations', 'workspace']) assert.match(r.stdout, new RegExp(`^  ${kind} +\\d`, 'm'), kind);
  assert.match(r.stdout, /^  total +[\d.]+ (KiB|MiB|GiB)/m);
  assert.match(r.stdout, /^fits: yes/m);
  assert.match(r.stdout, /config\.json was not checked against them/);
  assert.match(r.stdout, /⟦你好！我是小助手。<\|im_end\|>\n⟧/);  // the samples, from the tokenizer alone
});

test('sft train --dry-run says a plan does not fit, naming the largest kind and what to lower', () => {
  const r = runCli(['train', '--config', writeConfig({ ...settings, output_dir: join(root, 'dry-big') }), '--dry-run',
    '--device', 'cpu', '--per_device_train_batch_size', '65536', '--max_seq_length', '4096']);  // the largest batch allowed
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^fits: NO — .* needed, .* free; largest kind activations .*: lower per_device_train_batch_size or max_seq_length, or set gradient_checkpointing true$/m);
});

test('device cuda without a GPU: the dry run still plans (for a GPU of unknown size), a real run is refused with the reason', () => {
  if (native().backends().cudaDevices > 0) return;
  const cfg = writeConfig({ ...settings, output_dir: join(root, 'dry-cuda'), bf16: true });
  const dry = runCli(['train', '--config', cfg, '--dry-run', '--device', 'cuda']);
  assert.equal(dry.status, 0, dry.stderr);
  assert.match(dry.stdout, /device: cuda — planned only: (this build has no CUDA backend|no usable CUDA device)/);
  assert.match(dry.stdout, /Memory plan \(cuda bf16\)/);
  assert.match(dry.stdout, /^fits: unknown/m);
  const real = runCli(['train', '--config', cfg, '--device', 'cuda']);
  assert.notEqual(real.status, 0);
  assert.match(real.stderr, /device "cuda": .*use device "cpu" or "auto"/);
});

test('device cuda: QLoRA (train_mode qlora, bits 4) and 8-bit AdamW are planned, not refused; the plan holds the NF4 weights', () => {
  if (native().backends().cudaDevices > 0) return;
  const cfg = writeConfig({ ...settings, output_dir: join(root, 'dry-cuda-qlora'), bf16: true, train_mode: 'qlora', optim: 'paged_adamw_8bit' });
  const dry = runCli(['train', '--config', cfg, '--dry-run', '--device', 'cuda']);
  assert.equal(dry.status, 0, dry.stderr);
  assert.doesNotMatch(dry.stdout + dry.stderr, /not available on the cuda backend/);
  assert.match(dry.stdout, /QLoRA: linear weights quantized to NF4 with double quantization, [\d.]+ MiB -> [\d.]+ MiB/);
  assert.match(dry.stdout, /Memory plan \(cuda bf16\)/);
});

test('config overrides on the command line reach the run; unknown keys are refused with a suggestion', () => {
  const cfg = writeConfig({ ...settings, output_dir: join(root, 'ovr') });
  const bad = runCli(['train', '--config', cfg, '--learning_rat', '1e-4']);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /unknown option "--learning_rat".*did you mean "--learning_rate"/);
  const ok = runCli(['train', '--config', cfg, '--max_steps', '2', '--logging_steps', '1', '--save_steps', '100', '--report_to', 'tensorboard']);
  assert.equal(ok.status, 0, ok.stderr);
  const lines = readFileSync(join(root, 'ovr', 'metrics.jsonl'), 'utf8').trim().split('\n');
  assert.equal(lines.length, 2);
  // report_to tensorboard: HF's runs/<date>_<host>/events.out.tfevents.*; and the loss plot, always.
  const runs = readdirSync(join(root, 'ovr', 'runs'));
  assert.equal(runs.length, 1);
  assert.ok(readdirSync(join(root, 'ovr', 'runs', runs[0])).some((f) => f.startsWith('events.out.tfevents.')));
  assert.match(readFileSync(join(root, 'ovr', 'loss.svg'), 'utf8'), /<svg[^>]*>[\s\S]*<polyline/);
});

function writeConfig(obj: Record<string, unknown>): string {
  const f = join(root, `cfg-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(f, JSON.stringify(obj, null, 2));
  return f;
}
