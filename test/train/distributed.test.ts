// Data parallel on MPI (issue 16): 2 ranks of B rows train exactly as 1 rank of 2B rows (per-step
// losses and the final adapter within 1e-6, LoRA dropout on, gradient accumulation 2): the oracle
// is the one-process run, which shares no collective. A rank killed after a checkpoint stops the
// job and the checkpoint resumes, with 2 ranks, to the uninterrupted run's adapter. SKIPs (with a
// message) where mpirun is not installed (.ci/run installs openmpi-bin libopenmpi-dev).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { packageRoot } from '../../src/native/binding.js';
import { adapter, hasMpi, losses, maxDiff, metricLosses, mpiTrain as mpiTrainIn, skipWithoutMpi as skip } from '../helpers/mpi-train.js';

const root = mkdtempSync(join(tmpdir(), 'sft-dist-'));
const modelDir = join(root, 'model');
const dataFile = join(root, 'data.jsonl');
if (hasMpi) {
  initModel({ arch: 'llama', outDir: modelDir, hidden: 32, layers: 1, heads: 2, kvHeads: 1, intermediate: 48, vocab: 300, seed: 1, maxPosition: 128, force: true });
  // Lengths vary, so each rank's rows are padded to the global batch's longest.
  writeFileSync(dataFile, Array.from({ length: 22 }, (_, i) => JSON.stringify({ conversation: [{ human: `question ${i}${' more'.repeat(i % 5)}?`, assistant: `answer ${i * 7}.` }] })).join('\n') + '\n');
}

const base = (out: string, over: Record<string, unknown> = {}) => ({
  output_dir: out, model_name_or_path: modelDir, train_file: dataFile, template_name: 'default', train_mode: 'lora', max_seq_length: 64,
  per_device_train_batch_size: 2, gradient_accumulation_steps: 2, max_steps: 6, save_strategy: 'steps', save_steps: 3, disable_tqdm: true,
  logging_steps: 1, lora_dropout: 0.1, learning_rate: 1e-2, warmup_steps: 0, threads: 1, seed: 3, ...over,
});

const mpiTrain = (ranks: number, cfg: Record<string, unknown>, extra: string[] = []) => mpiTrainIn(root, ranks, cfg, extra);

test('2 MPI ranks x 2 rows = 1 rank x 4 rows: the same losses and adapter (dropout 0.1, accumulation 2)', { skip }, async () => {
  const outOne = join(root, 'one'), outTwo = join(root, 'two');
  // learning_rate 3e-4: the two runs sum each gradient in a different order (2 + 2 rows, then the
  // all-reduce, against 4 rows), and AdamW turns a gradient that is a near-cancellation (q_proj's in
  // this tiny model's nearly uniform attention) into a step of about +-lr whatever its rounding:
  // at 1e-2 the adapters differ by 2.2e-6, at 1e-3 by 9e-7, at 3e-4 by 7e-8.
  const lr = { learning_rate: 3e-4 };
  const one = await train(configFromObject(base(outOne, { ...lr, per_device_train_batch_size: 4 })).config, { print: () => {}, stream: { write: () => true } as never });
  const two = mpiTrain(2, base(outTwo, lr));
  const code = await two.done;
  assert.equal(code, 0, two.output());
  const l1 = losses(join(outOne, 'checkpoint-3')), l2 = losses(join(outTwo, 'checkpoint-3'));
  assert.equal(l2.length, 3);
  l1.forEach((x, i) => assert.ok(Math.abs(x - l2[i]) < 1e-6, `step ${i + 1}: ${x} vs ${l2[i]}`));
  assert.deepEqual(metricLosses(outTwo), metricLosses(outOne));  // 4 decimals, all 6 steps; rank 0 alone wrote
  const d = maxDiff(adapter(outOne), adapter(outTwo));
  assert.ok(d < 1e-6, `final adapters differ by ${d}`);
  assert.ok(one.losses.length === 6);
  // Rank 1 wrote nothing: one metrics line per step.
  assert.equal(metricLosses(outTwo).length, 6);
});

test('a rank killed after a checkpoint stops the job; the checkpoint resumes on 2 ranks to the uninterrupted result', { skip }, async () => {
  const outFull = join(root, 'full'), outKilled = join(root, 'killed');
  // A longer run, so that the kill lands after checkpoint-3 and well before the end.
  const long = { max_steps: 40 };
  const full = mpiTrain(2, base(outFull, long));
  assert.equal(await full.done, 0, full.output());
  const killed = mpiTrain(2, base(outKilled, long));
  const until = Date.now() + 60_000;
  while (!existsSync(join(outKilled, 'checkpoint-3', 'sft_manifest.json'))) {
    if (Date.now() > until) assert.fail(killed.output());
    await new Promise((r) => setTimeout(r, 5));
  }
  const rank1 = spawnSync('sh', ['-c', `pgrep -P ${killed.child.pid} | tail -1`]).stdout.toString().trim();
  assert.ok(rank1, 'no rank process found under mpirun');
  process.kill(Number(rank1), 'SIGKILL');
  const code = await killed.done;
  assert.notEqual(code, 0, `the job went on after a rank was killed:\n${killed.output()}`);
  assert.ok(!existsSync(join(outKilled, 'adapter_model.safetensors')), 'a killed job wrote a final adapter');
  const resumed = mpiTrain(2, base(outKilled, long), ['--resume', 'checkpoint-3']);
  assert.equal(await resumed.done, 0, resumed.output());
  const d = maxDiff(adapter(outFull), adapter(outKilled));
  assert.equal(d, 0, `resumed adapter differs by ${d}`);
});

test('resume with another world size is refused, naming both', { skip }, async () => {
  const out = join(root, 'two');  // written by the first test with 2 ranks
  await assert.rejects(train(configFromObject(base(out)).config, { resume: 'checkpoint-3', print: () => {}, stream: { write: () => true } as never }), /2 rank\(s\); this run has 1/);
});

test('sft train --nproc-per-node 2 runs the same command as 2 MPI ranks', { skip }, async () => {
  const out = join(root, 'nproc');
  const file = join(root, 'nproc.json');
  writeFileSync(file, JSON.stringify(base(out, { max_steps: 2, save_strategy: 'no' })));
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(packageRoot, 'test', 'helpers', 'sft-entry.ts'), 'train', '--config', file, '--nproc-per-node', '2'], { cwd: packageRoot, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /x 2 ranks \(mpi\)/);
  assert.equal((r.stdout.match(/^Training:/gm) ?? []).length, 1, 'rank 1 printed too');
  assert.ok(existsSync(join(out, 'adapter_model.safetensors')));
});
