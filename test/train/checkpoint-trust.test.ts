// Nothing forged: a checkpoint is proved before a resume uses it. Each damage below (as a user,
// a disk or a bad copy would do it) ends in an SftError that names the file and offers the newest
// good checkpoint, and leaves output_dir byte for byte as it was: no half-applied resume, no
// truncated metrics.jsonl, no final adapter written from a wrong state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { createHash } from 'node:crypto';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { readSafetensorsHeader, readTensorBytes, writeSafetensors, type TensorToWrite } from '../../src/io/safetensors.js';
import { writeManifest, MANIFEST } from '../../src/train/manifest.js';
import { sink } from '../helpers/sink.js';
import { runCli } from '../helpers/cli.js';

const root = mkdtempSync(join(tmpdir(), 'sft-trust-'));
const modelDir = join(root, 'model');
initModel({ arch: 'llama', outDir: modelDir, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48, vocab: 300, seed: 3, maxPosition: 64, force: true });
const dataFile = join(root, 'data.jsonl');
writeFileSync(dataFile, Array.from({ length: 8 }, (_, i) => JSON.stringify({ conversation: [{ human: `q ${i}?`, assistant: `a ${i * 3}.` }] })).join('\n') + '\n');

const base = {
  model_name_or_path: modelDir, train_file: dataFile, template_name: 'default', train_mode: 'lora', max_seq_length: 32,
  per_device_train_batch_size: 2, gradient_accumulation_steps: 2, max_steps: 12, learning_rate: 1e-3,
  lora_rank: 4, lora_alpha: 8, logging_steps: 1, save_steps: 4, seed: 5, disable_tqdm: true,
};
const cfgOf = (dir: string) => configFromObject({ ...base, output_dir: dir }).config;

// One run stopped after step 9: checkpoint-4, checkpoint-8 and checkpoint-9 (the interrupted one).
const pristine = join(root, 'pristine');
let stopped = 0;
await train(cfgOf(pristine), { print: () => {}, stream: sink(), shouldStop: () => ++stopped >= 9 });
assert.deepEqual(readdirSync(pristine).filter((d) => d.startsWith('checkpoint-')).sort(), ['checkpoint-4', 'checkpoint-8', 'checkpoint-9']);

let n = 0;
/** A copy of the stopped run's output_dir, with `damage` done to its checkpoint-9. */
function damaged(damage: (ck: string) => void): string {
  const dir = join(root, `case-${n++}`);
  cpSync(pristine, dir, { recursive: true });
  damage(join(dir, 'checkpoint-9'));
  return dir;
}

/** Every file under dir (but the data cache) with its hash: what "nothing changed" compares. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (e === '.sft-cache') continue;
      if (statSync(p).isDirectory()) walk(p);
      else out[relative(dir, p)] = createHash('sha256').update(readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

/** Resume must fail with `message`, name `checkpoint-8` as the one to use, and change nothing. */
async function refused(dir: string, message: RegExp, which = 'latest'): Promise<string> {
  const before = snapshot(dir);
  let text = '';
  await assert.rejects(train(cfgOf(dir), { print: () => {}, stream: sink(), resume: which }), (err: Error) => {
    text = err.message;
    assert.equal(err.name, 'SftError', err.stack);
    assert.match(err.message, message);
    assert.match(err.message, /Nothing was changed\. The newest earlier checkpoint that passes every check is .*checkpoint-8: resume from it with --resume checkpoint-8/);
    return true;
  });
  assert.deepEqual(snapshot(dir), before, 'output_dir changed');
  return text;
}

const editJson = (file: string, edit: (v: Record<string, unknown>) => unknown) => writeFileSync(file, JSON.stringify(edit(JSON.parse(readFileSync(file, 'utf8')))));
/** An edit made with the manifest rewritten to match: what the schema checks alone must catch. */
const forged = (edit: (ck: string) => void) => (ck: string) => {
  edit(ck);
  writeManifest(ck);
};

const TS = 'trainer_state.json';
test('trainer_state.json [] (and other shapes) is refused by name before anything changes', async () => {
  await refused(damaged(forged((ck) => writeFileSync(join(ck, TS), '[]'))), /checkpoint-9\/trainer_state\.json:1:1: .*expected a JSON object/);
  await refused(damaged(forged((ck) => editJson(join(ck, TS), (v) => ({ ...v, global_step: 100000 })))), /trainer_state\.json: "global_step" is 100000; expected 9, the step in the folder's name/);
  await refused(damaged(forged((ck) => editJson(join(ck, TS), (v) => ({ ...v, global_step: -5 })))), /"global_step" is -5; expected an integer >= 0/);
  await refused(damaged(forged((ck) => editJson(join(ck, TS), (v) => ({ ...v, micro_batches: 'abc' })))), /"micro_batches" is "abc"; expected an integer >= 0/);
  await refused(damaged(forged((ck) => editJson(join(ck, TS), (v) => ({ ...v, micro_batches: 17 })))), /"micro_batches" is 17; expected 18 \(global_step 9 x gradient_accumulation_steps 2\)/);
  await refused(damaged(forged((ck) => editJson(join(ck, TS), (v) => ({ ...v, losses: undefined })))), /"losses" is missing; expected a list of 9 finite numbers/);
});

test('a checkpoint beyond the run\'s steps is refused, not "resumed" with no training', async () => {
  const dir = damaged(() => {});
  const before = snapshot(dir);
  const cfg = configFromObject({ ...base, output_dir: dir, max_steps: 8 }).config;
  await assert.rejects(train(cfg, { print: () => {}, stream: sink(), resume: 'latest' }), /the checkpoint is at step 9, but this run has 8 steps in all.*resume from it with --resume checkpoint-8/);
  assert.deepEqual(snapshot(dir), before);
});

test('optimizer.safetensors: a missing moment or a step of 0 is refused (moments and bias correction would restart)', async () => {
  const rewrite = (ck: string, keep: (name: string) => boolean, step?: string) => {
    const file = join(ck, 'optimizer.safetensors');
    const h = readSafetensorsHeader(file);
    const tensors: TensorToWrite[] = [...h.tensors].filter(([k]) => keep(k)).map(([name, t]) => ({ name, dtype: t.dtype as 'F32', shape: t.shape, data: Buffer.from(readTensorBytes(file, h, name)) }));
    writeSafetensors(file, tensors, { format: 'pt', step: step ?? h.metadata!.step });
  };
  let dropped = '';
  await refused(damaged(forged((ck) => rewrite(ck, (k) => !(dropped === '' && k.endsWith('.exp_avg_sq') && (dropped = k))))), /optimizer\.safetensors: no tensor .*exp_avg_sq: the moments of .* are missing \(they would restart from zero\)/);
  await refused(damaged(forged((ck) => rewrite(ck, () => true, '0'))), /optimizer\.safetensors: the optimizer step in its metadata is "0", but trainer_state\.json is at step 9/);
});

test('flipped bits anywhere are found by the manifest; a truncated or missing file is named', async () => {
  for (const f of ['adapter_model.safetensors', 'optimizer.safetensors', TS, 'sft_config.json']) {
    await refused(damaged((ck) => {
      const b = readFileSync(join(ck, f));
      b[b.length - 3] ^= 0x10;
      writeFileSync(join(ck, f), b);
    }), new RegExp(`checkpoint-9/${f.replace('.', '\\.')}: its SHA-256 differs from the one in sft_manifest\\.json`));
  }
  await refused(damaged(forged((ck) => writeFileSync(join(ck, TS), readFileSync(join(ck, TS), 'utf8').slice(0, 30)))), /checkpoint-9\/trainer_state\.json:1:\d+: not valid JSON/);
  await refused(damaged(forged((ck) => writeFileSync(join(ck, 'sft_config.json'), readFileSync(join(ck, 'sft_config.json'), 'utf8').slice(0, 200)))), /checkpoint-9\/sft_config\.json:\d+:\d+: not valid JSON/);
  await refused(damaged(forged((ck) => rmSync(join(ck, 'sft_config.json')))), /checkpoint-9\/sft_config\.json is missing: the checkpoint is incomplete/);
  await refused(damaged((ck) => rmSync(join(ck, TS))), /checkpoint-9\/trainer_state\.json is missing/, 'checkpoint-9');
});

test('a checkpoint written before manifests resumes, saying its checksums could not be checked', async () => {
  const dir = damaged((ck) => rmSync(join(ck, MANIFEST)));
  const lines: string[] = [];
  const r = await train(cfgOf(dir), { print: (l) => lines.push(l), stream: sink(), resume: 'latest' });
  assert.equal(r.steps, 12);
  assert.ok(lines.some((l) => /has no checksums \(written by an earlier sft\)/.test(l)), lines.join('\n'));
  assert.ok(existsSync(join(dir, MANIFEST)), 'the final output has its manifest');
});

test('sft verify: every folder passes on a good run; a damaged one is named, with the newest good one', () => {
  const good = runCli(['verify', pristine]);
  assert.equal(good.status, 0, good.stderr);
  assert.match(good.stdout, /ok {6}.*checkpoint-9: step 9, \d+ files match their SHA-256/);
  assert.match(good.stdout, /newest checkpoint that passes: checkpoint-9/);
  const dir = damaged(forged((ck) => editJson(join(ck, TS), (v) => ({ ...v, losses: [] }))));
  const bad = runCli(['verify', dir]);
  assert.equal(bad.status, 1, bad.stdout + bad.stderr);
  assert.match(bad.stdout, /FAILED {2}.*checkpoint-9: .*trainer_state\.json: "losses"/);
  assert.match(bad.stdout, /newest checkpoint that passes: checkpoint-8/);
  const one = runCli(['verify', join(dir, 'checkpoint-8')]);
  assert.equal(one.status, 0, one.stdout + one.stderr);
  const none = runCli(['verify', modelDir]);
  assert.equal(none.status, 1);
  assert.match(none.stderr, /holds no sft output to verify/);
});
