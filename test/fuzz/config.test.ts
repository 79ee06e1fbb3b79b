// Thousands of corrupted config files (from the real configs/*.json: wrong types, odd values,
// misspelled keys, byte damage, BOM, NUL, deep nesting) through loadConfig, and of command-line
// override lists through parseOverrides: every one ends in a config or an SftError that names the
// file (or the command line), never another exception or a hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runFuzz } from './watchdog.js';

const SEED = 20261126;

test('5,000 corrupted config files: a config or an SftError naming the file', async () => {
  const r = await runFuzz('config', SEED, 5000);
  assert.equal(r.hung, undefined, `case ${r.hung} ran past its time limit`);
  assert.deepEqual(r.failures, [], JSON.stringify(r.failures, null, 1));
  assert.equal(r.exitCode, 0, r.stderr);
  assert.equal((r.counts.ok ?? 0) + (r.counts['error-at-line'] ?? 0) + (r.counts.error ?? 0), 5000);
  assert.ok(r.counts.ok > 100 && r.counts['error-at-line'] > 1000, JSON.stringify(r.counts));
});

test('5,000 corrupted override lists: a config or an SftError naming the command line', async () => {
  const r = await runFuzz('overrides', SEED, 5000);
  assert.equal(r.hung, undefined, `case ${r.hung} ran past its time limit`);
  assert.deepEqual(r.failures, [], JSON.stringify(r.failures, null, 1));
  assert.equal(r.exitCode, 0, r.stderr);
  assert.equal((r.counts.ok ?? 0) + (r.counts.error ?? 0), 5000);
  assert.ok(r.counts.ok > 50, JSON.stringify(r.counts));
});

test('the watchdog reports a wrong exception and a hang by case number', async () => {
  const r = await runFuzz('self-check', 1, 5, 500);
  assert.equal(r.hung, 2);
  assert.equal(r.failures.length, 1);
  assert.equal(r.failures[0].case, 1);
  assert.equal(r.failures[0].type, 'TypeError');
  assert.match(r.failures[0].stack ?? '', /runner\.ts/);
});
