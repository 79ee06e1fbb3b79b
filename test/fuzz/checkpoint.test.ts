// Thousands of damaged checkpoints (trainer_state.json, sft_config.json, adapter, optimizer,
// manifest), LoRA and full fine-tuning: every one is a checked result or an SftError that names
// the checkpoint's file, never a TypeError or RangeError, in bounded memory. Half the cases rewrite
// the manifest after the damage (a forged checkpoint), so that the schema checks alone must hold;
// in the other half any changed byte must be caught by its checksum. A sample goes through a whole
// `train --resume`, which must leave output_dir byte for byte as it was.
//
// Replay one case: FUZZ_CASE=N node --import tsx --test test/fuzz/checkpoint.test.ts
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { checkCheckpoint, type RunShape } from '../../src/train/resume.js';
import { writeManifest, MANIFEST } from '../../src/train/manifest.js';
import type { TrainConfig } from '../../src/config/schema.js';
import { SftError } from '../../src/errors.js';
import { rng, type Rand } from './corrupt.js';
import { RAW_VALUES, deepJson, mutateBytes, withRawValue } from './files-mutate.js';
import { sink } from '../helpers/sink.js';
import { countText, fuzzCount } from './scale.js';

const root = mkdtempSync(join(tmpdir(), 'sft-fuzz-ckpt-'));
const modelDir = join(root, 'model');
initModel({ arch: 'qwen2', outDir: modelDir, hidden: 32, layers: 1, heads: 4, kvHeads: 2, intermediate: 48, vocab: 300, seed: 8, maxPosition: 64, force: true });
const dataFile = join(root, 'data.jsonl');
writeFileSync(dataFile, Array.from({ length: 6 }, (_, i) => JSON.stringify({ conversation: [{ human: `q ${i}?`, assistant: `a ${i}.` }] })).join('\n') + '\n');
const base = {
  model_name_or_path: modelDir, train_file: dataFile, template_name: 'default', train_mode: 'lora', max_seq_length: 24, per_device_train_batch_size: 2,
  gradient_accumulation_steps: 2, max_steps: 8, learning_rate: 1e-3, lora_rank: 2, lora_alpha: 4, save_steps: 100, seed: 2, disable_tqdm: true,
};

interface Subject { name: string; cfg: TrainConfig; ck: string; run: RunShape }

/** A checkpoint-3 of a stopped run, with the run shape a resume would bring. */
async function subject(name: string, over: Record<string, unknown>): Promise<Subject> {
  const cfg = configFromObject({ ...base, ...over, output_dir: join(root, name) }).config;
  let n = 0;
  const r = await train(cfg, { print: () => {}, stream: sink(), shouldStop: () => ++n >= 3 });
  const shapes = (ps: { name: string; shape: number[] }[]) => ps.map((p) => ({ name: p.name, shape: p.shape }));
  return { name, cfg, ck: join(cfg.output_dir, 'checkpoint-3'), run: { trainable: shapes(r.model!.trainableParams()), base: shapes(r.model!.baseParams()), totalSteps: 8 } };
}

const JSON_FILES = ['trainer_state.json', 'sft_config.json', 'adapter_config.json', MANIFEST];
const KEYS_OF: Record<string, string[]> = {
  'trainer_state.json': ['global_step', 'micro_batches', 'losses', 'log_loss_sum', 'log_steps', 'tokens_seen', 'total_steps', 'extra', '__proto__'],
  'sft_config.json': ['max_seq_length', 'lora_rank', 'seed', 'train_mode', 'optim', 'gradient_accumulation_steps', 'report_to', 'lora_target_modules', 'nonsense'],
  'adapter_config.json': ['peft_type', 'r', 'lora_alpha', 'target_modules', 'bias', 'use_dora'],
  [MANIFEST]: ['format', 'version', 'files'],
};

/** One damage to one file of the checkpoint; returns the new bytes. */
function damage(file: string, bytes: Buffer, r: Rand): Buffer {
  const name = file.slice(file.lastIndexOf('/') + 1);
  if (JSON_FILES.includes(name) && r.chance(0.7)) {
    const obj = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    const roll = r.int(4);
    if (roll === 0) return Buffer.from(deepJson(r));
    if (roll === 1) {
      const k = r.pick(Object.keys(obj));
      delete obj[k];
      return Buffer.from(JSON.stringify(obj));
    }
    const key = r.pick(KEYS_OF[name]);
    // A value of the right kind but wrong (off by one, negative, a list element changed), or any raw text.
    const near = typeof obj[key] === 'number' ? String(r.pick([(obj[key] as number) + 1, (obj[key] as number) - 1, -(obj[key] as number), 0, 1e9])) : undefined;
    const raw = near !== undefined && r.chance(0.5) ? near : r.pick(RAW_VALUES)[0];
    if (name === MANIFEST && r.chance(0.5)) {
      const files = Object.keys(obj.files as object);
      return Buffer.from(withRawValue(obj, ['files', r.pick(files), r.pick(['bytes', 'sha256'])], raw));
    }
    return Buffer.from(withRawValue(obj, [key], raw));
  }
  // safetensors: aim at the header (length field + JSON) most of the time.
  const headerEnd = name.endsWith('.safetensors') ? 8 + Number(bytes.readBigUInt64LE(0)) : bytes.length;
  let b = bytes;
  for (let k = 1 + r.int(2); k > 0; k--) b = mutateBytes(b, r, 0, r.chance(0.7) ? Math.min(b.length, headerEnd) : b.length).bytes;
  return b;
}

function filesOf(ck: string): string[] {
  return readdirSync(ck).filter((f) => statSync(join(ck, f)).isFile()).sort();
}

async function fuzz(s: Subject, cases: number, seed: number): Promise<Record<string, number>> {
  const files = filesOf(s.ck).filter((f) => !/^tokenizer|special_tokens|generation_config/.test(f));
  const original = new Map(files.map((f) => [f, readFileSync(join(s.ck, f))]));
  const manifest = readFileSync(join(s.ck, MANIFEST));
  const outcomes: Record<string, number> = {};
  const only = process.env.FUZZ_CASE === undefined ? undefined : Number(process.env.FUZZ_CASE);
  const rss0 = process.memoryUsage().rss;
  for (let i = 0; i < cases; i++) {
    if (only !== undefined && i !== only) continue;
    const r = rng(seed * 7919 + i);
    const file = r.pick(files);
    const forge = file !== MANIFEST && r.chance(0.5);
    const before = original.get(file)!;
    const after = damage(join(s.ck, file), before, r);
    writeFileSync(join(s.ck, file), after);
    if (forge) writeManifest(s.ck);
    const t0 = Date.now();
    let outcome: string;
    try {
      checkCheckpoint(s.ck, s.cfg, s.run);
      outcome = 'accepted';
      assert.ok(forge || after.equals(before) || file === MANIFEST, `case ${i} (${s.name}): ${file} changed and the manifest was not rewritten, yet the checkpoint passed`);
    } catch (err) {
      if (!(err instanceof SftError)) throw new Error(`case ${i} (${s.name}, ${file}${forge ? ', forged' : ''}): ${(err as Error).name}: ${(err as Error).message}\n${(err as Error).stack}`);
      assert.ok(err.message.includes(s.ck), `case ${i}: the message names no file of ${s.ck}: ${err.message.slice(0, 300)}`);
      assert.ok(err.message.length < 2000, `case ${i}: a message of ${err.message.length} characters`);
      outcome = forge ? 'refused (forged)' : 'refused';
    }
    assert.ok(Date.now() - t0 < 5000, `case ${i} took ${Date.now() - t0} ms`);
    outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    writeFileSync(join(s.ck, file), before);
    writeFileSync(join(s.ck, MANIFEST), manifest);
  }
  const grown = (process.memoryUsage().rss - rss0) / 2 ** 20;
  assert.ok(grown < 400, `RSS grew by ${grown.toFixed(0)} MiB`);
  return outcomes;
}

const LORA_CASES = fuzzCount(2400);
const FULL_CASES = fuzzCount(1000);

test(`${countText(LORA_CASES)} damaged LoRA checkpoints and ${countText(FULL_CASES)} full fine-tuning ones: a result or an SftError naming the file each`, async () => {
  const lora = await subject('lora', {});
  const full = await subject('full', { train_mode: 'full' });
  const a = await fuzz(lora, LORA_CASES, 1);
  const b = await fuzz(full, FULL_CASES, 2);
  if (process.env.FUZZ_CASE !== undefined) return;
  for (const o of [a, b]) {
    const n = Object.values(o).reduce((a, b) => a + b, 0);
    assert.ok((o['refused'] ?? 0) > n / 25 && (o['refused (forged)'] ?? 0) > n / 25, JSON.stringify(o));
  }
  // The subjects are intact again after the cases.
  checkCheckpoint(lora.ck, lora.cfg, lora.run);
  checkCheckpoint(full.ck, full.cfg, full.run);
});

test('forged checkpoints through a whole `train --resume`: refused, output_dir unchanged', async () => {
  const s = await subject('whole', {});
  const snapshot = () => {
    const out: Record<string, string> = {};
    const walk = (d: string) => {
      for (const e of readdirSync(d)) {
        if (e === '.sft-cache') continue;
        const p = join(d, e);
        if (statSync(p).isDirectory()) walk(p);
        else out[relative(s.cfg.output_dir, p)] = createHash('sha256').update(readFileSync(p)).digest('hex');
      }
    };
    walk(s.cfg.output_dir);
    return out;
  };
  const files = ['trainer_state.json', 'sft_config.json', 'optimizer.safetensors', 'adapter_model.safetensors'];
  let refused = 0;
  for (let i = 0; i < 24; i++) {
    const r = rng(991 + i);
    const file = files[i % files.length];
    const path = join(s.ck, file);
    const before = readFileSync(path), manifest = readFileSync(join(s.ck, MANIFEST));
    writeFileSync(path, damage(path, before, r));
    if (r.chance(0.5)) writeManifest(s.ck);
    const snap = snapshot();
    try {
      await train(s.cfg, { print: () => {}, stream: sink(), resume: 'checkpoint-3', shouldStop: () => true });
    } catch (err) {
      if (!(err instanceof SftError)) throw err;
      refused++;
      assert.deepEqual(snapshot(), snap, `case ${i}: output_dir changed by a refused resume: ${err.message.slice(0, 200)}`);
    }
    writeFileSync(path, before);
    writeFileSync(join(s.ck, MANIFEST), manifest);
  }
  assert.ok(refused >= 12, `${refused} of 24 refused`);
});
