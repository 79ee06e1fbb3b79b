// Reporters: metrics.jsonl always, TensorBoard and wandb as report_to says, loss.svg at close.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Reporters, hfTags } from '../../src/log/reporters.js';
import type { WandbClient } from '../../src/log/wandb.js';

const rec = (step: number, loss: number) => ({ step, epoch: step / 10, loss, learning_rate: 1e-4, grad_norm: 0.5, tokens_per_second: 100 });

test("HF's tag names: train/x, eval_x -> eval/x; non-numbers and the step left out", () => {
  assert.deepEqual(hfTags({ step: 3, loss: 1.5, eval_loss: 2, test_acc: 0.5, learning_rate: 1e-4, grad_norm: NaN, note: 'x', ok: null }), {
    'train/loss': 1.5, 'eval/loss': 2, 'test/acc': 0.5, 'train/learning_rate': 1e-4,
  });
});

test('report_to none: metrics.jsonl and loss.svg only', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sft-rep-'));
  const lines: string[] = [];
  const r = await Reporters.open({ report_to: ['none'], logging_dir: null }, out, (l) => lines.push(l));
  r.log(1, rec(1, 2));
  r.log(2, rec(2, 1));
  await r.close();
  assert.deepEqual(readdirSync(out).sort(), ['loss.svg', 'metrics.jsonl']);
  assert.equal(readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 2);
  assert.deepEqual(lines, [`Loss plot: ${join(out, 'loss.svg')} (compare runs: sft plot RUN_DIR RUN_DIR ...)`]);
});

test('report_to all: TensorBoard in logging_dir and wandb get every logged step under HF tags', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sft-rep-'));
  const logged: [Record<string, number>, number][] = [];
  const calls: string[] = [];
  const client: WandbClient = {
    init: async (o) => (calls.push(`init ${o.name}`), undefined),
    log: async (m, s) => void logged.push([m, s]),
    finish: async () => void calls.push('finish'),
    kill: () => void calls.push('kill'),
  };
  const lines: string[] = [];
  const tbDir = join(out, 'tb');
  const r = await Reporters.open({ report_to: ['all'], logging_dir: tbDir, run_name: 'exp1' }, out, (l) => lines.push(l), { wandb: { client: () => client, env: { WANDB_API_KEY: 'x' } } });
  r.log(5, rec(5, 2.5));
  r.log(10, rec(10, 1.25));
  r.summary(10, { train_runtime: 12.5, train_loss: 1.875 });
  await r.close();
  await r.close(); // harmless
  assert.deepEqual(calls, ['init exp1', 'finish', 'kill']);
  assert.deepEqual(logged[2], [{ 'train/train_runtime': 12.5, 'train/train_loss': 1.875, 'train/global_step': 10 }, 10]);
  assert.deepEqual(logged[1], [{ 'train/epoch': 1, 'train/loss': 1.25, 'train/learning_rate': 1e-4, 'train/grad_norm': 0.5, 'train/tokens_per_second': 100, 'train/global_step': 10 }, 10]);
  const files = readdirSync(tbDir);
  assert.equal(files.length, 1);
  assert.match(files[0], /^events\.out\.tfevents\./);
  const bytes = readFileSync(join(tbDir, files[0]));
  // 1 file_version record + 5 scalars x 2 steps + 2 summary scalars; each tag's name is in the file.
  let records = 0;
  for (let i = 0; i < bytes.length; records++) i += 12 + Number(bytes.readBigUInt64LE(i)) + 4;
  assert.equal(records, 13);
  for (const tag of ['train/loss', 'train/learning_rate', 'train/grad_norm', 'train/epoch', 'train/train_runtime']) assert.ok(bytes.includes(Buffer.from(tag)), tag);
  assert.ok(lines.some((l) => l.startsWith(`TensorBoard: writing to ${tbDir}`)));
  assert.ok(existsSync(join(out, 'loss.svg')));
  assert.equal(lines.filter((l) => l.startsWith('Loss plot:')).length, 1);
});

test('a logging_dir that cannot be created is a warning; training goes on', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sft-rep-'));
  const lines: string[] = [];
  const r = await Reporters.open({ report_to: ['tensorboard'], logging_dir: join(out, 'metrics.jsonl', 'tb') }, out, (l) => lines.push(l));
  r.log(1, rec(1, 1));
  await r.close();
  assert.match(lines[0], /^TensorBoard: warning: cannot create an event file in .*; TensorBoard logging is off for this run/);
  assert.equal(readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 1);
});

test('report_to tensorboard with no logging_dir: HF default output_dir/runs/<date>_<host>; wandb off without a word', async () => {
  const out = mkdtempSync(join(tmpdir(), 'sft-rep-'));
  const lines: string[] = [];
  const r = await Reporters.open({ report_to: ['tensorboard'], logging_dir: null }, out, (l) => lines.push(l), { wandb: { env: {} } });
  r.log(1, rec(1, 1));
  await r.close();
  const [run] = readdirSync(join(out, 'runs'));
  assert.match(run, /^[A-Z][a-z]{2}\d\d_\d\d-\d\d-\d\d_/);
  assert.equal(lines.filter((l) => l.startsWith('wandb')).length, 0);

  const noKey: string[] = [];
  const r2 = await Reporters.open({ report_to: ['wandb'], logging_dir: null }, mkdtempSync(join(tmpdir(), 'sft-rep-')), (l) => noKey.push(l), { wandb: { env: {} } });
  await r2.close();
  assert.match(noKey[0], /^wandb: off — report_to=wandb but WANDB_API_KEY is not set/);
});
