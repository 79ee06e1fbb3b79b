// `sft train` under mpirun, and what the data-parallel tests compare: a run's tensors (adapter or
// whole model), its per-step losses. SKIP where mpirun or sft_mpi.so is missing.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { readSafetensorsHeader, readTensorF32 } from '../../src/io/safetensors.js';
import { mpiRunArgs } from '../../src/cli/launch.js';

export const hasMpi = spawnSync('mpirun', ['--version']).status === 0 && existsSync(join(packageRoot, 'build', 'Release', 'sft_mpi.so'));
export const skipWithoutMpi = hasMpi ? false : 'mpirun or build/Release/sft_mpi.so missing: apt-get install openmpi-bin libopenmpi-dev, then rebuild';

/** `sft train` under mpirun with `ranks` ranks, its config written into `root`. */
export function mpiTrain(root: string, ranks: number, cfg: Record<string, unknown>, extra: string[] = []) {
  const file = join(root, `cfg-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(cfg));
  const args = [...mpiRunArgs(ranks), process.execPath, '--import', 'tsx', join(packageRoot, 'test', 'helpers', 'sft-entry.ts'), 'train', '--config', file, ...extra];
  const child = spawn('mpirun', args, { cwd: packageRoot, env: { ...process.env, OMP_NUM_THREADS: '1' } });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const done = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  return { child, done, output: () => out };
}

/** Every tensor of a safetensors file, as fp32. */
export function tensors(file: string): Map<string, Float32Array> {
  const h = readSafetensorsHeader(file);
  // h.tensors is a Map: Object.keys of it is [] (which once made every comparison here vacuous).
  return new Map([...h.tensors.keys()].map((n) => [n, readTensorF32(file, h, n)]));
}

export const adapter = (dir: string) => tensors(join(dir, 'adapter_model.safetensors'));

export function maxDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  assert.ok(a.size > 0, 'no tensors to compare');
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  let d = 0;
  for (const [n, x] of a) x.forEach((v, i) => (d = Math.max(d, Math.abs(v - b.get(n)![i]))));
  return d;
}

/** A checkpoint's per-step losses (full precision, unlike metrics.jsonl's 4 decimals). */
export const losses = (ckpt: string) => (JSON.parse(readFileSync(join(ckpt, 'trainer_state.json'), 'utf8')) as { losses: number[] }).losses;
export const metricLosses = (out: string) => readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => 'loss' in r).map((r) => r.loss as number);
