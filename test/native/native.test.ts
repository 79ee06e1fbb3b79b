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
