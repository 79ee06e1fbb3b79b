// Thousands of corrupted JSONL lines and JSON array files (byte flips, truncation, odd unicode, BOM, NUL, invalid UTF-8,
// deep nesting, huge numbers, wrong types in every field) through the reader, parser, format
// converter, encoder and prepareDataset (skipBadLines off and on). Every case must end in a result
// or an SftError that names the file and the right line; any other exception, or a case that runs
// past its time limit, fails with the case number (test/fuzz/runner.ts replays it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runFuzz, type FuzzResult } from './watchdog.js';

const SEED = 20261126;

function assertClean(r: FuzzResult, count: number): void {
  assert.equal(r.hung, undefined, `case ${r.hung} ran past its time limit`);
  assert.deepEqual(r.failures, [], JSON.stringify(r.failures, null, 1));
  assert.equal(r.exitCode, 0, r.stderr);
  assert.equal(Object.values(r.counts).reduce((a, b) => a + b, 0), count);
}

test('5,000 corrupted lines: a result or FILE:LINE SftError each, none hangs', async () => {
  const r = await runFuzz('jsonl-lines', SEED, 5000);
  assertClean(r, 5000);
  // The corruption reaches every outcome: usable samples, samples truncated to nothing, line errors.
  for (const outcome of ['ok', 'no-target', 'line-error']) assert.ok((r.counts[outcome] ?? 0) > 200, `${outcome}: ${JSON.stringify(r.counts)}`);
});

test('200 files of good and corrupted lines: prepareDataset blames only corrupted lines, skipBadLines keeps every good one', async () => {
  const r = await runFuzz('jsonl-files', SEED, 200);
  assertClean(r, 200);
  const seen = Object.keys(r.counts).join(' ');
  for (const outcome of ['strict-ok', 'strict-line-error', 'skip-some']) assert.match(seen, new RegExp(outcome), JSON.stringify(r.counts));
});

test('400 damaged JSON array files: the streaming reader agrees with JSON.parse on the whole file, at exact positions', async () => {
  const r = await runFuzz('json-arrays', SEED, 400);
  assertClean(r, 400);
  // The damage reaches both ends: arrays read whole, arrays refused, and prepareDataset's outcomes.
  const seen = Object.keys(r.counts).join(' ');
  for (const outcome of ['valid strict-ok', 'refused strict-error', 'skip-ok', 'large']) assert.match(seen, new RegExp(outcome), JSON.stringify(r.counts));
});
