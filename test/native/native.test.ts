// Runs the C++ checks (test/native/test_grad.cpp, built by cmake-js as build/sft_native_tests):
// finite-difference gradients of every op and of every architecture variant in double precision,
// LoRA == merged weights, KV cache == full forward.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';

test('native finite-difference and consistency checks (double precision)', () => {
  const bin = join(packageRoot, 'build', 'sft_native_tests');
  assert.ok(existsSync(bin), `${bin} is missing: run npm install`);
  const r = spawnSync(bin, [], { encoding: 'utf8' });
  process.stdout.write(r.stdout.split('\n').map((l) => (l ? `# ${l}` : l)).join('\n'));
  assert.equal(r.status, 0, `native checks failed:\n${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /PASSED: 0 failure/);
});

// SFT_CPU_ISA forces the CPU kernels (cpu/isa.h): a path this machine runs is taken, a bad name
// stops the addon from loading with a message naming the variable and what this CPU offers.
test('SFT_CPU_ISA chooses the CPU kernels; a bad value is refused when the addon loads', () => {
  const addon = join(packageRoot, 'build', 'Release', 'sft_native.node');
  const load = (isa: string) =>
    spawnSync(process.execPath, ['-e', 'console.log(JSON.stringify(require(process.argv[1]).cpuKernels()))', addon], {
      encoding: 'utf8',
      env: { ...process.env, SFT_CPU_ISA: isa },
    });
  const auto = load('');
  assert.equal(auto.status, 0, auto.stderr);
  const { isa, available } = JSON.parse(auto.stdout) as { isa: string; available: string[] };
  assert.ok(available.includes('portable') && available.includes(isa), auto.stdout);
  assert.equal(isa, available[available.length - 1], 'the best available path is the default');
  for (const want of available) {
    const r = load(want);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).isa, want);
  }
  const bad = load('sse9');
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /SFT_CPU_ISA=sse9 is not one of portable, avx2, avx512, avx512bf16, amx \(available here: portable/);
});
