// A torchrun-style environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) without MPI: on the CPU
// the world cannot form (CPU processes exchange gradients through MPI only) and says how to launch
// instead; on CUDA it needs MASTER_ADDR. The bootstrap itself (rank 0's NCCL id reaching every rank
// over TCP) is checked across forked processes in test/native/test_tcp_bootstrap.cpp.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { packageRoot } from '../../src/native/binding.js';

function join(device: 'cpu' | 'cuda', env: Record<string, string>): string {
  const script = `import { joinWorld } from './src/train/world.ts';
try { joinWorld(${JSON.stringify(device)}); console.log('joined'); } catch (e) { console.log(e.message); }`;
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(OMPI_|PMIX_|PMI_|SLURM_|RANK$|WORLD_SIZE$|MASTER_|LOCAL_RANK$)/.test(k)));
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: packageRoot,
    env: { ...clean, ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return r.stdout + r.stderr;
}

test('torchrun environment on the CPU: refused, naming mpirun and --nproc-per-node', () => {
  const out = join('cpu', { RANK: '1', WORLD_SIZE: '2', LOCAL_RANK: '1', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500' });
  assert.match(out, /data parallel: a torchrun-style launch \(RANK\/WORLD_SIZE\) on the CPU: CPU processes exchange gradients through MPI/);
  assert.match(out, /mpirun -np N/);
  assert.match(out, /--nproc-per-node N/);
});

test('torchrun environment on CUDA without MASTER_ADDR: says what to set', () => {
  const out = join('cuda', { RANK: '0', WORLD_SIZE: '2', MASTER_PORT: '29500' });
  assert.match(out, /MASTER_ADDR is not: set MASTER_ADDR/);
});

test('world size 1 under torchrun is a single process', () => {
  assert.match(join('cpu', { RANK: '0', WORLD_SIZE: '1', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '29500' }), /joined/);
});
