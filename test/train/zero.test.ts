// ZeRO stage 1 on MPI (issue 16; docs/SCALING.md): each rank keeps the AdamW state of its slice of
// the trainable elements, updates it after the gradient all-reduce and all-gathers the new values.
// Two oracles that share no sharding code: the unsharded run on the same ranks (the same summed
// gradients, so the same bits: weights, losses and optimizer.safetensors byte for byte), and the
// one-process run of the whole global batch (losses and weights within 1e-6). The checkpoint is
// the unsharded one, so resume crosses between ZeRO and plain runs exactly. 3 ranks over full
// fine-tuning with 8-bit AdamW put the slice cuts inside 8-bit tensors (embed_tokens at 9216 and
// lm_head at 768 of their 10240 elements: whole 256-blocks). SKIPs where mpirun is not installed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { native as addon } from '../../src/native/binding.js';
import { readHfConfig } from '../../src/model/hfconfig.js';
import { loadBase } from '../../src/model/load.js';
import { readSafetensorsHeader } from '../../src/io/safetensors.js';
import { adapter, hasMpi, losses, maxDiff, mpiTrain as mpiTrainIn, skipWithoutMpi as skip, tensors } from '../helpers/mpi-train.js';

const root = mkdtempSync(join(tmpdir(), 'sft-zero-'));
const modelDir = join(root, 'model');
const dataFile = join(root, 'data.jsonl');
initModel({ arch: 'llama', outDir: modelDir, hidden: 32, layers: 1, heads: 2, kvHeads: 1, intermediate: 48, vocab: 300, seed: 1, maxPosition: 128, force: true });
writeFileSync(dataFile, Array.from({ length: 22 }, (_, i) => JSON.stringify({ conversation: [{ human: `question ${i}${' more'.repeat(i % 5)}?`, assistant: `answer ${i * 7}.` }] })).join('\n') + '\n');
// ZeRO through the HF route: a DeepSpeed config file with zero_optimization.stage 1.
const dsFile = join(root, 'ds_zero1.json');
writeFileSync(dsFile, JSON.stringify({ zero_optimization: { stage: 1 } }));

// learning_rate 3e-4: AdamW turns q_proj's near-cancelling gradients (summed in another order on 2
// ranks than on 1) into steps of about +-lr, so the 1-rank oracle's tolerance needs a small lr
// (test/train/distributed.test.ts says more); the unsharded-ranks oracle is exact at any lr.
const base = (out: string, over: Record<string, unknown> = {}) => ({
  output_dir: out, model_name_or_path: modelDir, train_file: dataFile, template_name: 'default', train_mode: 'lora', max_seq_length: 64,
  per_device_train_batch_size: 2, gradient_accumulation_steps: 2, max_steps: 6, save_strategy: 'steps', save_steps: 3, disable_tqdm: true,
  logging_steps: 1, lora_dropout: 0.1, learning_rate: 3e-4, warmup_steps: 0, threads: 1, seed: 3, ...over,
});
const quiet = { print: () => {}, stream: { write: () => true } as never };
const mpiTrain = (ranks: number, cfg: Record<string, unknown>, extra: string[] = []) => mpiTrainIn(root, ranks, cfg, extra);

async function mpiOk(ranks: number, cfg: Record<string, unknown>, extra: string[] = []): Promise<string> {
  const r = mpiTrain(ranks, cfg, extra);
  assert.equal(await r.done, 0, r.output());
  return r.output();
}

const bytes = (f: string) => readFileSync(f);
const closeLosses = (a: number[], b: number[]) => {
  assert.equal(a.length, b.length);
  a.forEach((x, i) => assert.ok(Math.abs(x - b[i]) < 1e-6, `step ${i + 1}: ${x} vs ${b[i]}`));
};

/** A copy of a finished run's output_dir without its final output, to resume from checkpoint-3. */
function resumable(from: string, to: string, finalFile: string): string {
  cpSync(from, to, { recursive: true });
  rmSync(join(to, finalFile));
  return to;
}

const lora = { one: join(root, 'lora-one'), plain: join(root, 'lora-plain'), zero: join(root, 'lora-zero') };

test('LoRA, 2 ranks: ZeRO-1 (deepspeed stage 1) = the unsharded 2 ranks bit for bit, = 1 rank x 4 rows within 1e-6', { skip }, async () => {
  await train(configFromObject(base(lora.one, { per_device_train_batch_size: 4 })).config, quiet);
  await mpiOk(2, base(lora.plain));
  const out = await mpiOk(2, base(lora.zero, { deepspeed: dsFile }));
  assert.match(out, /ZeRO-1: the AdamW state is sharded over 2 ranks/);
  // Bit for bit against the unsharded ranks: adapter, and the gathered optimizer state in the
  // unsharded checkpoint format.
  assert.ok(bytes(join(lora.zero, 'adapter_model.safetensors')).equals(bytes(join(lora.plain, 'adapter_model.safetensors'))), 'adapters differ from the unsharded run');
  for (const c of ['checkpoint-3', 'checkpoint-6'].filter((c) => existsSync(join(lora.plain, c))))
    assert.ok(bytes(join(lora.zero, c, 'optimizer.safetensors')).equals(bytes(join(lora.plain, c, 'optimizer.safetensors'))), `${c}/optimizer.safetensors differs`);
  // Against one process with the whole global batch.
  closeLosses(losses(join(lora.zero, 'checkpoint-3')), losses(join(lora.one, 'checkpoint-3')));
  const d = maxDiff(adapter(lora.zero), adapter(lora.one));
  assert.ok(d < 1e-6, `final adapters differ by ${d}`);
});

test('resume crosses ZeRO and plain exactly: an unsharded checkpoint resumes sharded, a sharded one unsharded', { skip }, async () => {
  assert.ok(existsSync(join(lora.zero, 'checkpoint-3')), 'the first test did not run');
  const zeroFromPlain = resumable(lora.plain, join(root, 'zero-from-plain'), 'adapter_model.safetensors');
  const plainFromZero = resumable(lora.zero, join(root, 'plain-from-zero'), 'adapter_model.safetensors');
  await mpiOk(2, base(zeroFromPlain, { zero_stage: 1 }), ['--resume', 'checkpoint-3']);
  await mpiOk(2, base(plainFromZero), ['--resume', 'checkpoint-3']);
  assert.equal(maxDiff(adapter(zeroFromPlain), adapter(lora.plain)), 0, 'ZeRO-1 resumed from an unsharded checkpoint');
  assert.equal(maxDiff(adapter(plainFromZero), adapter(lora.plain)), 0, 'unsharded resumed from a ZeRO-1 checkpoint');
});

test('full fine-tuning, 2 ranks, ZeRO-1 = 1 rank x 4 rows: losses and every weight within 1e-6', { skip }, async () => {
  const full = { train_mode: 'full', learning_rate: 1e-3 };
  const one = join(root, 'full-one'), zero = join(root, 'full-zero');
  await train(configFromObject(base(one, { ...full, per_device_train_batch_size: 4 })).config, quiet);
  await mpiOk(2, base(zero, { ...full, zero_stage: 1 }));
  closeLosses(losses(join(zero, 'checkpoint-3')), losses(join(one, 'checkpoint-3')));
  const d = maxDiff(tensors(join(zero, 'model.safetensors')), tensors(join(one, 'model.safetensors')));
  assert.ok(d < 1e-6, `final weights differ by ${d}`);
});

test('full fine-tuning with 8-bit AdamW, 3 ranks (cuts inside 8-bit tensors): ZeRO-1 = unsharded bit for bit, and resumes exactly', { skip }, async () => {
  const f8 = { train_mode: 'full', optim: 'adamw_8bit', learning_rate: 1e-3 };
  const plain = join(root, 'f8-plain'), zero = join(root, 'f8-zero');
  await mpiOk(3, base(plain, f8));
  await mpiOk(3, base(zero, { ...f8, zero_stage: 1 }));
  const opt = join('checkpoint-3', 'optimizer.safetensors');
  assert.ok([...readSafetensorsHeader(join(plain, opt)).tensors.keys()].some((k) => k.endsWith('.q8')), 'no 8-bit states were saved');
  assert.ok(bytes(join(zero, opt)).equals(bytes(join(plain, opt))), 'optimizer.safetensors differs from the unsharded run');
  assert.ok(bytes(join(zero, 'model.safetensors')).equals(bytes(join(plain, 'model.safetensors'))), 'weights differ from the unsharded run');
  // The 8-bit codes and scales go back to their slices on resume (set_moments' part of each tensor).
  const resumed = resumable(zero, join(root, 'f8-resumed'), 'model.safetensors');
  await mpiOk(3, base(resumed, { ...f8, zero_stage: 1 }), ['--resume', 'checkpoint-3']);
  assert.ok(bytes(join(resumed, 'model.safetensors')).equals(bytes(join(plain, 'model.safetensors'))), 'the resumed ZeRO-1 run differs');
});

test('bf16 full fine-tuning (fp32 masters, bf16 compute copy), 2 ranks: ZeRO-1 = unsharded bit for bit, losses included', { skip }, async () => {
  // The gathered masters must reach the compute copy: steps 2 to 4 compute with it.
  const bf16 = { train_mode: 'full', bf16: true, learning_rate: 1e-3, max_steps: 4, save_steps: 3 };
  const plain = join(root, 'bf16-plain'), zero = join(root, 'bf16-zero');
  await mpiOk(2, base(plain, bf16));
  await mpiOk(2, base(zero, { ...bf16, zero_stage: 1 }));
  assert.deepEqual(losses(join(zero, 'checkpoint-3')), losses(join(plain, 'checkpoint-3')));
  assert.ok(bytes(join(zero, 'model.safetensors')).equals(bytes(join(plain, 'model.safetensors'))), 'weights differ from the unsharded run');
});

// The plan shrinks to the slice. Two meta models (no memory), ranks 0 and 1 of 2: each holds about
// half the unsharded optimizer kind, and together all of it (up to each buffer's 256-byte alignment).
test("the memory plan's optimizer kind is this rank's slice; --dry-run --nproc-per-node 2 prints it", async () => {
  const { native } = readHfConfig(modelDir);
  const optimizerBytes = (shard?: { rank: number; size: number }) => {
    const m = new (addon().Model)({ ...native, device: 'cpu', dtype: 'f32', meta: true });
    m.setBaseTrainable(true);
    if (shard) m.shardOptimizer(shard);
    m.plan({ batch: 1, seqLen: 8, train: true, optimizer: true, eightBit: true, paged: false });
    const k = m.memoryPlan().kinds.find((x) => x.kind === 'optimizer')!;
    return { bytes: k.bytes, count: k.count };
  };
  const whole = optimizerBytes(), r0 = optimizerBytes({ rank: 0, size: 2 }), r1 = optimizerBytes({ rank: 1, size: 2 });
  const slack = (r0.count + r1.count) * 256;
  assert.ok(Math.abs(r0.bytes + r1.bytes - whole.bytes) <= slack, `${r0.bytes} + ${r1.bytes} vs ${whole.bytes}`);
  for (const r of [r0, r1]) assert.ok(r.bytes < 0.6 * whole.bytes, `a slice holds ${r.bytes} of ${whole.bytes} bytes`);
  // The dry run of one rank of 2 (no mpirun: it plans rank 0's slice in this process).
  const lines: string[] = [];
  const kib = (ls: string[]) => Number(/optimizer\s+([\d.]+) KiB/.exec(ls.join('\n'))?.[1]);
  await train(configFromObject(base(join(root, 'dry'), { zero_stage: 1 })).config, { dryRun: true, dryRunRanks: 2, print: (l) => lines.push(l) });
  const one: string[] = [];
  await train(configFromObject(base(join(root, 'dry'), { zero_stage: 1 })).config, { dryRun: true, print: (l) => one.push(l) });
  assert.match(lines.join('\n'), /ZeRO-1: the AdamW state is sharded over 2 ranks \(the optimizer line below is rank 0's slice\)/);
  assert.match(one.join('\n'), /ZeRO stage 1: one rank, nothing to shard/);
  assert.ok(kib(lines) > 0.4 * kib(one) && kib(lines) < 0.6 * kib(one), `dry-run optimizer ${kib(lines)} KiB vs ${kib(one)} KiB unsharded`);
});

test('a model sharded for 2 ranks refuses to step in a world of 1, saying so', async () => {
  const { model: m } = await loadBase(modelDir, { device: 'cpu', dtype: 'f32' });
  m.setBaseTrainable(true);
  m.shardOptimizer({ rank: 0, size: 2 });
  const ids = Int32Array.from({ length: 8 }, (_, i) => i + 3);
  await m.forwardBackward(ids, ids, 1, 8, 1, 0);
  await assert.rejects(m.adamwStep({ lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 }), /sharded for rank 0 of 2, but this process is rank 0 of 1/);
  assert.throws(() => m.shardOptimizer({ rank: 2, size: 2 }), /rank 2 of 2 is not a rank/);
});
