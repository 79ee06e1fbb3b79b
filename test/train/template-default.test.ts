// A config without template_name (Firefly's configs before January 2024) trains with the model's own
// chat_template, else with the format Firefly trained such a config with, and says which; `sft merge`
// writes the adapter's training template into the merged folder as its chat_template.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { loadModel } from '../../src/model/load.js';
import { getTemplate } from '../../src/data/templates.js';
import { builtInJinja } from '../../src/data/chat-template.js';
import { encodePrompt } from '../../src/data/encode.js';
import { runCli } from '../helpers/cli.js';
import { sink } from '../helpers/sink.js';

const root = mkdtempSync(join(tmpdir(), 'sft-template-default-'));
const modelDir = join(root, 'model');
const dataFile = join(root, 'train.jsonl');
initModel({ arch: 'llama', outDir: modelDir, hidden: 32, layers: 1, heads: 2, intermediate: 64, vocab: 300, seed: 1, maxPosition: 128, force: true });
writeFileSync(dataFile, JSON.stringify({ conversation: [{ human: 'hi', assistant: 'hello there' }] }) + '\n');

// Keys as Firefly's early train_args/*.json had them: no template_name.
const oldConfig = (over: Record<string, unknown>) =>
  configFromObject({
    model_name_or_path: modelDir, train_file: dataFile, max_seq_length: 64, per_device_train_batch_size: 1, gradient_accumulation_steps: 1,
    max_steps: 2, learning_rate: 1e-3, logging_steps: 1, save_strategy: 'no', lora_rank: 4, lora_alpha: 8, seed: 1, disable_tqdm: true, ...over,
  }).config;

test("no template_name, a model with a chat_template: trains with it, says so, and records it", async () => {
  const out = join(root, 'own');
  const lines: string[] = [];
  await train(oldConfig({ output_dir: out }), { print: (l) => lines.push(l), stream: sink() });
  assert.ok(lines.some((l) => /template_name not set: training with the model's own chat_template/.test(l)), lines.join('\n'));
  assert.equal(JSON.parse(readFileSync(join(out, 'sft_config.json'), 'utf8')).template_name, 'chat_template');
  // chat on base + adapter uses it too.
  assert.equal((await loadModel({ modelDir, adapterDir: out })).templateName, 'chat_template');
});

test('no template_name, a model without one: Firefly\'s old <s>input</s>target</s> format, with a notice', async () => {
  const bare = join(root, 'bare');
  cpSync(modelDir, bare, { recursive: true });
  const tc = JSON.parse(readFileSync(join(bare, 'tokenizer_config.json'), 'utf8'));
  delete tc.chat_template;
  writeFileSync(join(bare, 'tokenizer_config.json'), JSON.stringify(tc));
  rmSync(join(bare, 'chat_template.jinja'), { force: true });
  const lines: string[] = [];
  await train(oldConfig({ output_dir: join(root, 'legacy'), model_name_or_path: bare }), { dryRun: true, print: (l) => lines.push(l) });
  const text = lines.join('\n');
  assert.match(text, /the format Firefly used before templates, <s>input<\/s>target<\/s>… \(template_name "firefly_legacy"\)/);
  assert.match(text, /<s>hi<\/s>⟦hello there<\/s>⟧/);
});

test('sft merge: the merged folder carries the training template as its chat_template; chat on it lays prompts out as training did', async () => {
  const adapter = join(root, 'adapter');
  await train(oldConfig({ output_dir: adapter, template_name: 'default' }), { print: () => {}, stream: sink() });
  const merged = join(root, 'merged');
  const r = runCli(['merge', '--model', modelDir, '--adapter', adapter, '--out', merged]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /chat_template: template "default", which the adapter was trained with/);
  const tc = JSON.parse(readFileSync(join(merged, 'tokenizer_config.json'), 'utf8'));
  assert.equal(tc.chat_template, builtInJinja(getTemplate('default')));
  assert.equal(tc.eos_token, JSON.parse(readFileSync(join(modelDir, 'tokenizer_config.json'), 'utf8')).eos_token, "the base's other keys are kept");
  const onMerged = await loadModel({ modelDir: merged });
  const onBase = await loadModel({ modelDir, adapterDir: adapter });
  assert.equal(onMerged.templateName, 'default');
  const conv = { turns: [{ role: 'user' as const, content: 'hi' }] };
  assert.deepEqual(encodePrompt(conv, onMerged.template, onMerged.tok), encodePrompt(conv, onBase.template, onBase.tok));
});
