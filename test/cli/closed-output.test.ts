// `sft chat ... | head`: the reader closes the pipe early. Commands that print their product end
// quietly with status 0 (no EPIPE stack trace); a training run goes on and writes its output_dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { packageRoot } from '../../src/native/binding.js';

const root = mkdtempSync(join(tmpdir(), 'sft-closed-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));
const model = join(root, 'model');
initModel({ arch: 'llama', outDir: model, hidden: 32, layers: 1, heads: 2, intermediate: 64, vocab: 300, seed: 1, maxPosition: 2048, force: true });

/** Runs the CLI and, as `head -c 1` would, closes its stdout as soon as the first bytes arrive. */
function closeAfterFirstBytes(args: string[], input = ''): Promise<{ status: number | null; signal: string | null; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(packageRoot, 'test', 'helpers', 'sft-entry.ts'), ...args], { cwd: packageRoot });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdout.once('data', () => child.stdout.destroy());
  child.stdin.end(input);
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  return new Promise((resolve) => child.on('close', (status, signal) => {
    clearTimeout(timer);
    resolve({ status, signal, stderr });
  }));
}

const quiet = (r: { status: number | null; stderr: string }) => {
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /EPIPE|Error|at .*\.ts:\d+/, r.stderr);
};

test('sft score | head: ends quietly, status 0', async () => {
  // One output row per token: far more than a pipe holds.
  quiet(await closeAfterFirstBytes(['score', '--model', model, '--text', 'hello world '.repeat(800)]));
});

test('sft chat | head: ends quietly, status 0', async () => {
  quiet(await closeAfterFirstBytes(['chat', '--model', model, '--temperature', '0', '--max-new-tokens', '64'], 'hello\n/reset\n'.repeat(200)));
});

test('sft train | head: the run goes on and writes its output_dir, status 0', async () => {
  const data = join(root, 'train.jsonl');
  writeFileSync(data, JSON.stringify({ conversation: [{ human: 'hi', assistant: 'hello there' }] }) + '\n');
  const out = join(root, 'out');
  const cfg = join(root, 'train.json');
  writeFileSync(cfg, JSON.stringify({
    output_dir: out, model_name_or_path: model, train_file: data, template_name: 'llama2', max_seq_length: 1024,
    per_device_train_batch_size: 1, gradient_accumulation_steps: 1, max_steps: 6, learning_rate: 1e-3, logging_steps: 1,
    save_strategy: 'no', lora_rank: 2, lora_alpha: 4, disable_tqdm: true,
  }));
  quiet(await closeAfterFirstBytes(['train', '--config', cfg]));
  assert.ok(existsSync(join(out, 'adapter_model.safetensors')), 'the adapter was not written');
});
