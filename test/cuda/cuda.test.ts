// Runs the CUDA kernel checks built by cmake-js (CMakeLists.txt, CUDA section):
//  - build/sft_cuda_emu_tests: every CUDA kernel compiled as C++ against the CPU emulator in
//    test/cuda/emu and compared with the CPU backend. Checks the kernels' logic on any machine;
//    it is not a GPU run (no timing, no real intrinsics, no cross-block races).
//  - build/sft_cuda_tests: the same checks on a real GPU; without one it prints SKIP and exits 0,
//    which this test accepts. scripts/gpu-check.sh is what runs it where a GPU exists.
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
