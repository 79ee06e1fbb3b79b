// Outputs never clobber: a full disk at the final save leaves the earlier files whole and names the
// file and the space; output_dir may not be the model; --overwrite_output_dir moves the earlier run
// aside instead of mixing two runs; merge --force leaves no old shard; links are replaced, never
// written through.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { listCheckpointTensors } from '../../src/model/weights.js';
import { packageRoot } from '../../src/native/binding.js';
import { sink } from '../helpers/sink.js';
import { runCli } from '../helpers/cli.js';

const root = mkdtempSync(join(tmpdir(), 'sft-outputs-'));
const modelDir = join(root, 'models', 'base');
initModel({ arch: 'llama', outDir: modelDir, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48, vocab: 300, seed: 4, maxPosition: 64, force: true });
const dataFile = join(root, 'data.jsonl');
writeFileSync(dataFile, Array.from({ length: 8 }, (_, i) => JSON.stringify({ conversation: [{ human: `q ${i}?`, assistant: `a ${i * 3}.` }] })).join('\n') + '\n');
const base = {
  model_name_or_path: modelDir, train_file: dataFile, template_name: 'default', train_mode: 'lora', max_seq_length: 32, per_device_train_batch_size: 2,
  max_steps: 6, learning_rate: 1e-3, lora_rank: 4, lora_alpha: 8, logging_steps: 1, save_steps: 2, seed: 5, disable_tqdm: true,
};
async function run(over: Record<string, unknown>, opts: { resume?: string; stopAfter?: number; print?: (l: string) => void } = {}) {
  let n = 0;
  return train(configFromObject({ ...base, ...over }).config, {
    print: opts.print ?? (() => {}), stream: sink(), resume: opts.resume, shouldStop: () => opts.stopAfter !== undefined && ++n >= opts.stopAfter,
  });
}
const bytes = (f: string) => readFileSync(f);

test('output_dir that is (or holds, or links to) the model folder is refused, and the base weights stay', async () => {
  const weights = bytes(join(modelDir, 'model.safetensors'));
  const link = join(root, 'link-to-model');
  symlinkSync(modelDir, link);
  for (const out of [modelDir, dirname(modelDir), link]) {
    await assert.rejects(run({ output_dir: out, train_mode: 'full', overwrite_output_dir: true }), /output_dir .* (is|holds) the model folder .*: the run would write over the base model/);
  }
  assert.deepEqual(bytes(join(modelDir, 'model.safetensors')), weights);
  assert.deepEqual(readdirSync(modelDir).sort(), readdirSync(modelDir).sort().filter((f) => !f.startsWith('.sft')));
});

test('--overwrite_output_dir moves the earlier run aside: rotation and --resume latest see only the new run', async () => {
  const out = join(root, 'overwrite');
  await run({ output_dir: out, max_steps: 12, save_steps: 4 });  // the earlier run: checkpoint-4, checkpoint-8, final adapter
  const lines: string[] = [];
  const second = await run({ output_dir: out, overwrite_output_dir: true, save_total_limit: 2 }, { stopAfter: 3, print: (l) => lines.push(l) });
  assert.equal(second.interrupted, true);
  const moved = lines.find((l) => /--overwrite_output_dir: the previous run in .* was moved to /.test(l));
  assert.ok(moved, lines.join('\n'));
  const aside = /was moved to (\S+)/.exec(moved)![1];
  assert.ok(existsSync(join(aside, 'checkpoint-8')) && existsSync(join(aside, 'adapter_model.safetensors')), 'the earlier run is kept whole');
  assert.deepEqual(readdirSync(out).filter((d) => d.startsWith('checkpoint-')).sort(), ['checkpoint-2', 'checkpoint-3'], 'the new run\'s checkpoints survive rotation');
  const resumed: string[] = [];
  const r = await run({ output_dir: out, overwrite_output_dir: true, save_total_limit: 2 }, { resume: 'latest', print: (l) => resumed.push(l) });
  assert.equal(r.steps, 6);
  assert.ok(resumed.some((l) => /Resuming from .*checkpoint-3: step 3 of 6/.test(l)), resumed.join('\n'));
  const steps = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
  assert.deepEqual(steps, [1, 2, 3, 4, 5, 6], 'metrics of the new run only');
});

test('--overwrite_output_dir with train_file inside output_dir is refused (it would move the data away)', async () => {
  const out = join(root, 'data-inside');
  await run({ output_dir: out, max_steps: 2 });
  const inner = join(out, 'data.jsonl');
  writeFileSync(inner, readFileSync(dataFile));
  await assert.rejects(run({ output_dir: out, train_file: inner, overwrite_output_dir: true }), /would move the previous run .* aside, and train_file .* with it/);
  assert.ok(existsSync(inner));
});

test('links in output_dir: metrics.jsonl as a link is refused; the final adapter replaces a link, never writes through it', async () => {
  const victim = join(root, 'victim.bin');
  writeFileSync(victim, 'precious');
  const out = join(root, 'links');
  await run({ output_dir: out }, { stopAfter: 2 });
  symlinkSync(victim, join(out, 'adapter_model.safetensors'));
  await run({ output_dir: out }, { resume: 'latest' });
  assert.equal(readFileSync(victim, 'utf8'), 'precious');
  assert.ok(!lstatSync(join(out, 'adapter_model.safetensors')).isSymbolicLink());
  const out2 = join(root, 'links-metrics');
  mkdirSync(out2);
  symlinkSync(victim, join(out2, 'metrics.jsonl'));
  await assert.rejects(run({ output_dir: out2 }), /metrics\.jsonl is a symbolic link: sft does not write through links in output_dir/);
  assert.equal(readFileSync(victim, 'utf8'), 'precious');
});

test('merge --force over an earlier merge leaves no old shard; a link in --out is replaced, not written through; --out = --model is refused', async () => {
  const adapterDir = join(root, 'adapter');
  await run({ output_dir: adapterDir, max_steps: 2 });
  const out = join(root, 'merged');
  let r = runCli(['merge', '--model', modelDir, '--adapter', adapterDir, '--out', out, '--max-shard-size', '20KB']);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(readdirSync(out).filter((f) => /^model-\d+-of-\d+\.safetensors$/.test(f)).length > 1, 'first merge is sharded');
  // A later merge, single-file, into the same folder; model.safetensors there is a link to the base.
  symlinkSync(join(modelDir, 'model.safetensors'), join(out, 'model.safetensors'));
  const baseWeights = bytes(join(modelDir, 'model.safetensors'));
  r = runCli(['merge', '--model', modelDir, '--adapter', adapterDir, '--out', out, '--force']);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(readdirSync(out).filter((f) => /safetensors/.test(f)), ['model.safetensors'], 'old shards and index removed');
  assert.ok(!lstatSync(join(out, 'model.safetensors')).isSymbolicLink());
  assert.deepEqual(bytes(join(modelDir, 'model.safetensors')), baseWeights, 'the base model was not written through the link');
  assert.equal(new Set(listCheckpointTensors(out).map((t) => t.file)).size, 1);
  r = runCli(['merge', '--model', modelDir, '--adapter', adapterDir, '--out', modelDir, '--force']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /--out .* is the --model folder: merging would write over it/);
});

// A real full disk: a 256 KiB tmpfs in a private mount namespace (unshare), where the final adapter
// cannot fit. The child writes a small adapter first, then a large one into the same folder.
const unshareWorks = spawnSync('unshare', ['-rm', 'true']).status === 0;
test('disk full at the final save: the earlier adapter stays whole; the message names the file, the space needed and free', { skip: !unshareWorks && 'unshare -rm (user + mount namespaces) is not available here' }, () => {
  const mnt = join(root, 'small-disk');
  mkdirSync(mnt);
  const script = join(packageRoot, 'test', 'train', 'fixtures', 'full-disk.ts');
  const r = spawnSync('unshare', ['-rm', 'sh', '-c', `mount -t tmpfs -o size=256k tmpfs "$1" && exec "$2" --import tsx "$3" "$1" "$4"`, 'sh', mnt, process.execPath, script, modelDir], { encoding: 'utf8', cwd: packageRoot });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as { message: string; first: string; after: string; files: string[] };
  assert.match(got.message, /^could not write .*\/out\/adapter_model\.safetensors: no space left on the device; this output needs [\d.]+ MiB, [\d.]+ MiB free on that filesystem\. Nothing in .*out was replaced/);
  assert.equal(got.after, got.first, 'the earlier adapter is byte for byte the same');
  assert.deepEqual(got.files, ['adapter_config.json', 'adapter_model.safetensors', 'sft_config.json', 'sft_manifest.json'], 'no temporary left');
});
