// Runs the CUDA kernel checks built by cmake-js (CMakeLists.txt, CUDA section):
//  - build/sft_cuda_emu_tests: every CUDA kernel compiled as C++ against the CPU emulator in
//    test/cuda/emu and compared with the CPU backend. Checks the kernels' logic on any machine;
//    it is not a GPU run (no timing, no real intrinsics, no cross-block races).
//  - build/sft_cuda_tests: the same checks on a real GPU; without one it prints SKIP and exits 0,
//    which this test accepts. scripts/gpu-check.sh is what runs it where a GPU exists.
//  - build/sft_cuda_emu_selftest: proves that each of the emulator's memory and launch checks fires
//    (test/cuda/emu/selftest.cpp: one mode per bug), so that a clean emulated run means something.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';

function run(bin: string, args: string[] = []) {
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 120_000 });
  process.stdout.write(r.stdout.split('\n').map((l) => (l ? `# ${l}` : l)).join('\n'));
  return r;
}

test('CUDA kernels under the CPU emulator match the CPU backend', (t) => {
  const bin = join(packageRoot, 'build', 'sft_cuda_emu_tests');
  if (!existsSync(bin)) {
    t.skip(`${bin} is missing (SFT_CUDA_EMU_TESTS=OFF, or the addon was not built with npm install)`);
    return;
  }
  const r = run(bin);
  assert.equal(r.status, 0, `emulated CUDA checks failed:\n${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /PASSED: 0 failure/);
});

test('CUDA kernel checks on the GPU, or SKIP without one', (t) => {
  const bin = join(packageRoot, 'build', 'sft_cuda_tests');
  if (!existsSync(bin)) {
    t.skip(`${bin} is missing: this build has no CUDA backend (no nvcc, or SFT_CUDA=off)`);
    return;
  }
  const r = run(bin);
  assert.equal(r.status, 0, `CUDA checks failed:\n${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /^SKIP: no CUDA device|PASSED: 0 failure/m);
});

// Each mode of the selftest makes one mistake. Violations must stop the program (an abort, or exit
// status 3 from the leak check) with a message naming the problem; `outcome` modes exit 0 and print
// what the mistake led to (a NaN result, an error code).
const selftestModes: { mode: string; outcome?: boolean; status?: number; env?: Record<string, string>; message: RegExp }[] = [
  { mode: 'ok', outcome: true, message: /^selftest ok$/m },
  { mode: 'host-pointer', message: /argument 2 of kernel axpy_kernel is a host pointer 0x[0-9a-f]+/ },
  { mode: 'pinned-arg', message: /argument 2 of kernel axpy_kernel is pinned host memory .*from cudaMallocHost/ },
  { mode: 'freed-arg', message: /argument 2 of kernel axpy_kernel points into freed memory \(use after free\)/ },
  {
    mode: 'oob-read',
    message:
      /kernel shift_read_kernel \(block 0,0,0 thread 63,0,0\) (read|accessed) 0x[0-9a-f]+, 0 bytes past the end of the 256-byte device allocation #1 \(from cudaMalloc, base 0x[0-9a-f]+\) \(offset 256\)/,
  },
  { mode: 'oob-write', message: /kernel write_upto_kernel wrote past the end of a 400-byte allocation/ },
  { mode: 'underflow', message: /kernel write_shifted_kernel wrote before the start of a 400-byte allocation/ },
  {
    mode: 'use-after-free',
    message: /kernel gather_kernel .* (read|accessed) freed memory at 0x[0-9a-f]+ \(use after free\): offset 0 of the 400-byte device allocation/,
  },
  { mode: 'double-free', message: /cudaFree\(0x[0-9a-f]+\): double free of the 400-byte device allocation #1/ },
  { mode: 'bad-free', message: /cudaFree\(0x[0-9a-f]+\): not a pointer that cudaMalloc or cudaMallocAsync returned/ },
  { mode: 'free-pinned', message: /cudaFree\(0x[0-9a-f]+\) of the 400-byte pinned host allocation .*free it with cudaFreeHost/ },
  {
    mode: 'leak',
    status: 3,
    message: /2 device allocation\(s\) leaked: 1400 bytes: #1 \(400 bytes\), #2 \(1000 bytes\); 1 pinned host allocation\(s\) leaked/,
  },
  { mode: 'uninitialized', outcome: true, message: /acc\[0\] = -?nan .*100\/100 fp32 and 100\/100 bf16 elements are NaN/ },
  {
    mode: 'bad-memcpy',
    message:
      /cudaMemcpy\(dst 0x[0-9a-f]+, src 0x[0-9a-f]+, 800 bytes, cudaMemcpyHostToDevice\): the destination \[offset 0, \+800 bytes\) is not inside the 400-byte device allocation/,
  },
  { mode: 'bad-memcpy-kind', message: /cudaMemcpyDeviceToHost\): the source 0x[0-9a-f]+ is not device memory/ },
  { mode: 'bad-stream', message: /cudaMemcpyAsync: stream 0x[0-9a-f]+ is not a live stream/ },
  { mode: 'host-access', message: /host code (read|accessed) device memory at 0x[0-9a-f]+ \(offset 12 of the 400-byte device allocation/ },
  {
    mode: 'smem-overflow',
    message: /kernel smem_write_kernel .* (wrote|accessed) 0x[0-9a-f]+, 0 bytes past the end of its 1024 bytes of dynamic shared memory/,
  },
  { mode: 'smem-limit', outcome: true, message: /no cudaFuncSetAttribute: cudaErrorInvalidValue/ },
  {
    mode: 'oom',
    outcome: true,
    env: { SFT_EMU_DEVICE_MEMORY: '64M' },
    message: /oom: cudaMalloc of 32 MiB with 48 MiB of 64 MiB in use: cudaErrorMemoryAllocation \(out of memory\)/,
  },
  {
    mode: 'mma-exited-lane',
    message: /kernel mma_kernel: lane 5 of the warp has exited before a warp-wide matrix instruction \(mma\/ldmatrix\), which needs all 32 lanes/,
  },
  { mode: 'mma-divergent', message: /kernel mma_kernel: the lanes of a warp wait at different warp-wide instructions/ },
  {
    mode: 'ldmatrix-global',
    message: /kernel ldmatrix_global_kernel: ldmatrix row address is not inside the launch's dynamic shared memory/,
  },
  { mode: 'cp-async-no-wait', outcome: true, message: /cp-async-no-wait: out\[0\] = -?nan; 32\/32 reads before the wait are NaN/ },
];

test('the CUDA emulator catches each memory and launch bug (sft_cuda_emu_selftest)', async (t) => {
  const bin = join(packageRoot, 'build', 'sft_cuda_emu_selftest');
  if (!existsSync(bin)) {
    t.skip(`${bin} is missing (SFT_CUDA_EMU_TESTS=OFF, or the addon was not built with npm install)`);
    return;
  }
  for (const m of selftestModes) {
    await t.test(m.mode, () => {
      const r = spawnSync(bin, [m.mode], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...m.env } });
      const out = `${r.stdout}${r.stderr}`;
      if (m.outcome) {
        assert.equal(r.status, 0, `selftest ${m.mode} should exit 0:\n${out}`);
        assert.doesNotMatch(out, /leaked/, `selftest ${m.mode} leaked:\n${out}`);
      } else if (m.status !== undefined) {
        assert.equal(r.status, m.status, `selftest ${m.mode} should exit ${m.status}:\n${out}`);
      } else {
        assert.notEqual(r.status, 0, `selftest ${m.mode} was not stopped:\n${out}`);
        assert.doesNotMatch(out, /not caught|was not stopped/, `selftest ${m.mode} ran past the bug:\n${out}`);
      }
      assert.match(out, m.message);
    });
  }
});
