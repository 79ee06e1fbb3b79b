// Limits ("Nothing lost, nothing forged"): a huge gradient_accumulation_steps runs in the memory of
// one micro-batch and answers Ctrl-C within a second, mid-step; an AdamW update that leaves the
// weights non-finite stops the run, naming the step and the last good checkpoint, with no final
// result written; Ctrl-C while the data is read exits 130 and leaves output_dir clean; a
// max_seq_length beyond the model's positions is said; a thread pool the system refuses is an error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { sink } from '../helpers/sink.js';
import { packageRoot } from '../../src/native/binding.js';
import { runCli } from '../helpers/cli.js';
import { verifyFolder } from '../../src/train/verify.js';

const root = mkdtempSync(join(tmpdir(), 'sft-limits-'));
const modelDir = join(root, 'model');
initModel({ arch: 'llama', outDir: modelDir, hidden: 32, layers: 1, heads: 2, kvHeads: 1, intermediate: 48, vocab: 300, seed: 1, maxPosition: 128, force: true });
const dataFile = join(root, 'data.jsonl');
writeFileSync(dataFile, Array.from({ length: 40 }, (_, i) => JSON.stringify({ conversation: [{ human: `question ${i}?`, assistant: `answer ${i * 7}.` }] })).join('\n') + '\n');

let configs = 0;
/** A config file for the tiny model; returns its path and output_dir. */
function config(over: Record<string, unknown>): { file: string; out: string } {
  const out = join(root, `out-${configs}`);
  const file = join(root, `cfg-${configs++}.json`);
  writeFileSync(file, JSON.stringify({
    output_dir: out, model_name_or_path: modelDir, train_file: dataFile, template_name: 'default', train_mode: 'lora', max_seq_length: 64,
    per_device_train_batch_size: 2, max_steps: 2, save_strategy: 'no', disable_tqdm: true, logging_steps: 1, ...over,
  }));
  return { file, out };
}

/** `sft train` in a child process: its output so far, and its exit. */
function startTrain(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', join(packageRoot, 'test', 'helpers', 'sft-entry.ts'), 'train', ...args], { cwd: packageRoot });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const done = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  return { child, done, output: () => out };
}

async function waitFor(p: ReturnType<typeof startTrain>, re: RegExp, ms = 60_000): Promise<void> {
  const until = Date.now() + ms;
  while (!re.test(p.output())) {
    if (Date.now() > until) {
      p.child.kill('SIGKILL');
      assert.fail(`no ${re} within ${ms} ms:\n${p.output()}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** SIGINT, then the exit code and how long the exit took; killed (code null) after `limitMs`. */
async function interrupt(p: ReturnType<typeof startTrain>, limitMs = 5000): Promise<{ code: number | null; seconds: number }> {
  const t0 = Date.now();
  p.child.kill('SIGINT');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), limitMs);
  const code = await p.done;
  clearTimeout(timer);
  return { code, seconds: (Date.now() - t0) / 1000 };
}

/** Resident memory of a process in MiB (Linux). */
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => !statSync(join(dir, f)).isDirectory());
}

test('gradient_accumulation_steps 1e6: the memory of one micro-batch, and Ctrl-C mid-step within a second', { skip: process.platform !== 'linux' && 'reads /proc' }, async () => {
  const { file, out } = config({ per_device_train_batch_size: 1, gradient_accumulation_steps: 1_000_000, max_steps: 1 });
  const p = startTrain(['--config', file]);
  await waitFor(p, /Training: 1 steps/);
  const before = rssMiB(p.child.pid!);
  await new Promise((r) => setTimeout(r, 1500));  // well into the first step's micro-batches
  const grown = rssMiB(p.child.pid!) - before;
  const { code, seconds } = await interrupt(p);
  assert.ok(grown < 64, `resident memory grew by ${grown.toFixed(0)} MiB in 1.5 s of one step`);
  assert.equal(code, 130, p.output());
  assert.ok(seconds < 2, `exit took ${seconds} s after SIGINT`);
  // The partial step is abandoned: the checkpoint holds the last complete step (none yet).
  assert.match(p.output(), /Interrupted after step 0: checkpoint saved to .*checkpoint-0/);
  const state = JSON.parse(readFileSync(join(out, 'checkpoint-0', 'trainer_state.json'), 'utf8'));
  assert.equal(state.global_step, 0);
  // ... and it passes every check a resume makes (no step trained, no moments yet).
  assert.equal(verifyFolder(join(out, 'checkpoint-0')).failed, 0, verifyFolder(join(out, 'checkpoint-0')).lines.join('\n'));
});

test('learning_rate 1e30 is refused before anything runs, naming the key, the file and the range', () => {
  // In fp32 one AdamW step at 1e30 leaves LoRA B near ±1e30, finite but garbage: the bound stops it.
  const { file, out } = config({ learning_rate: 1e30, max_steps: 1 });
  const r = runCli(['train', '--config', file]);
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /cfg-\d+\.json:1:\d+: learning_rate = 1e\+30 is not allowed; expected a number >= 0 and <= 10/);
  assert.ok(!existsSync(out));
});

test('adam_epsilon 0, one step: LoRA A has a zero gradient (B = 0), 0/0 is caught at the update', () => {
  const { file, out } = config({ adam_epsilon: 0, max_steps: 1 });
  const r = runCli(['train', '--config', file]);
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /step 1: the AdamW update made the trainable weights non-finite \(NaN or infinite\)/);
  assert.match(r.stderr, /nothing was saved as the final result/);
  assert.match(r.stderr, /no checkpoint was written/);
  assert.match(r.stderr, /adam_epsilon is 0/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  assert.ok(!existsSync(join(out, 'adapter_model.safetensors')), 'no final adapter');
});

test('full fine-tuning, adam_epsilon 0: embedding rows the data never uses are 0/0 at step 1', () => {
  const { file, out } = config({ train_mode: 'full', adam_epsilon: 0, max_steps: 1 });
  const r = runCli(['train', '--config', file]);
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /step 1: the AdamW update made the trainable weights non-finite/);
  assert.ok(!existsSync(join(out, 'model.safetensors')), 'no final model');
});

test('a non-finite update after a checkpoint names that checkpoint as the last good one', async () => {
  // A config that got past the bounds (an in-process caller): warmup from 0 makes step 1 a no-op
  // (saved as checkpoint-1); at step 2 the fp32 step size lr / (1 - beta1^2) overflows to Infinity.
  const { config: cfg } = configFromObject({
    output_dir: join(root, 'diverged'), model_name_or_path: modelDir, train_file: dataFile, template_name: 'default', train_mode: 'lora', max_seq_length: 64,
    per_device_train_batch_size: 2, max_steps: 3, lr_scheduler_type: 'constant_with_warmup', warmup_steps: 2, save_steps: 1, disable_tqdm: true,
  });
  cfg.learning_rate = 1e39;
  await assert.rejects(train(cfg, { print: () => {}, stream: sink() }), (err: Error) => {
    assert.match(err.message, /^step 2: the AdamW update made the trainable weights non-finite \(NaN or infinite\)/);
    assert.match(err.message, /nothing was saved as the final result, and the last good checkpoint is .*checkpoint-1 \(continue from it with --resume checkpoint-1/);
    assert.match(err.message, /lower learning_rate \(now 1e\+39\)/);
    return true;
  });
  assert.ok(existsSync(join(cfg.output_dir, 'checkpoint-1')));
  assert.ok(!existsSync(join(cfg.output_dir, 'adapter_model.safetensors')), 'no final adapter');
});

test('Ctrl-C while the data is read: exit 130 within a second or two, output_dir left clean', async () => {
  const big = join(root, 'big.jsonl');
  const line = (i: number) => JSON.stringify({ conversation: [{ human: `question number ${i}, asked at some length to make the line longer?`, assistant: `answer ${i}: ${'the quick brown fox jumps over the lazy dog. '.repeat(3)}` }] });
  writeFileSync(big, Array.from({ length: 400_000 }, (_, i) => line(i)).join('\n') + '\n');
  const { file, out } = config({ train_file: big });
  const p = startTrain(['--config', file]);
  await waitFor(p, /Reading /);
  await new Promise((r) => setTimeout(r, 300));
  const { code, seconds } = await interrupt(p);
  assert.equal(code, 130, p.output());
  assert.ok(seconds < 2, `exit took ${seconds} s after SIGINT`);
  assert.match(p.output(), /SIGINT: stopped while reading .*big\.jsonl/);
  assert.deepEqual(filesUnder(out), [], 'no half-written data cache');
});

test('max_seq_length above max_position_embeddings is said, with both numbers and the file', () => {
  const { file } = config({ max_seq_length: 512 });
  const r = runCli(['train', '--config', file, '--dry-run']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`max_seq_length 512 is above max_position_embeddings 128 in ${join(modelDir, 'config.json').replace(/[.\\]/g, '\\$&')}`));
  const ok = runCli(['train', '--config', config({ max_seq_length: 128 }).file, '--dry-run']);
  assert.doesNotMatch(ok.stderr, /max_position_embeddings/);
});

test('a thread pool the system cannot start is an error, not an abort; the pool stays usable', { skip: process.platform !== 'linux' && 'needs ulimit -v' }, () => {
  // 2000 threads of 8 MiB stacks do not fit in 6 GB of address space: std::thread throws.
  const addon = join(packageRoot, 'build', 'Release', 'sft_native.node');
  const script = `
    const addon = require(${JSON.stringify(addon)});
    const cfg = { arch: 'llama', vocabSize: 16, hiddenSize: 8, intermediateSize: 16, numLayers: 1, numHeads: 2, numKvHeads: 1,
      ropeTheta: 10000, rmsNormEps: 1e-6, tieWordEmbeddings: false, qkvBias: false, normHead: false, meta: true };
    try { new addon.Model({ ...cfg, threads: 2000 }); console.log('created'); } catch (e) { console.log('error: ' + e.message); }
    new addon.Model({ ...cfg, threads: 2 });
    console.log('then 2 threads: ok');`;
  const r = spawnSync('bash', ['-c', 'ulimit -v 6000000 && exec "$0" -e "$1"', process.execPath, script], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /error: could not start 2000 CPU threads \(\d+ started: .*\); set threads lower/);
  assert.match(r.stdout, /then 2 threads: ok/);
});
