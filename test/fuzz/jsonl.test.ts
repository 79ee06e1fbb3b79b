// Thousands of corrupted JSONL lines and JSON array files (byte flips, truncation, odd unicode, BOM, NUL, invalid UTF-8,
// deep nesting, huge numbers, wrong types in every field) through the reader, parser, format
// converter, encoder and prepareDataset (skipBadLines off and on). Every case must end in a result
// or an SftError that names the file and the right line; any other exception, or a case that runs
// past its time limit, fails with the case number (test/fuzz/runner.ts replays it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runFuzz, type FuzzResult } from './watchdog.js';
import { countText, fuzzCount } from './scale.js';

const SEED = 20261126;
const LINES = fuzzCount(5000);
const FILES = fuzzCount(200);
const ARRAYS = fuzzCount(400, 100);

function assertClean(r: FuzzResult, count: number): void {
  assert.equal(r.hung, undefined, `case ${r.hung} ran past its time limit`);
  assert.deepEqual(r.failures, [], JSON.stringify(r.failures, null, 1));
  assert.equal(r.exitCode, 0, r.stderr);
  assert.equal(Object.values(r.counts).reduce((a, b) => a + b, 0), count);
}

test(`${countText(LINES)} corrupted lines: a result or FILE:LINE SftError each, none hangs`, async () => {
  const r = await runFuzz('jsonl-lines', SEED, LINES);
  assertClean(r, LINES);
  // The corruption reaches every outcome: usable samples, samples truncated to nothing, line errors.
  for (const outcome of ['ok', 'no-target', 'line-error']) assert.ok((r.counts[outcome] ?? 0) > LINES / 25, `${outcome}: ${JSON.stringify(r.counts)}`);
});

test(`${FILES} files of good and corrupted lines: prepareDataset blames only corrupted lines, skipBadLines keeps every good one`, async () => {
  const r = await runFuzz('jsonl-files', SEED, FILES);
  assertClean(r, FILES);
  const seen = Object.keys(r.counts).join(' ');
  for (const outcome of ['strict-ok', 'strict-line-error', 'skip-some']) assert.match(seen, new RegExp(outcome), JSON.stringify(r.counts));
});

test(`${ARRAYS} damaged JSON array files: the streaming reader agrees with JSON.parse on the whole file, at exact positions`, async () => {
  const r = await runFuzz('json-arrays', SEED, ARRAYS);
  assertClean(r, ARRAYS);
  // The damage reaches both ends: arrays read whole, arrays refused, and prepareDataset's outcomes.
  const seen = Object.keys(r.counts).join(' ');
  for (const outcome of ['valid strict-ok', 'refused strict-error', 'skip-ok', 'large']) assert.match(seen, new RegExp(outcome), JSON.stringify(r.counts));
});
