// Thousands of mutated prompts (special-token strings, huge strings, lone surrogates, NUL, RTL marks,
// combining characters, odd request shapes) through training-data encoding, serve's chat request
// parsing and chat sessions, on every tokenizer the project reads (test/fuzz/prompts-runner.ts). Each
// case ends in a result or a proper SftError / ApiError 4xx, never a TypeError, RangeError or stack
// overflow; results carry only the template's special tokens and text decodes back. The child is
// killed, naming the case, when one runs past its time limit; its memory is measured and bounded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { watchRunner } from './watchdog.js';
import { fuzzCount } from './scale.js';

const SEED = 20261203;
const COUNT = fuzzCount(3000);
const PER_CASE_MS = 5000;
/** The child's RSS may grow this much over its start (tokenizers loaded): megabyte strings come and go. */
const RSS_GROWTH_MB = 600;

interface Run {
  counts: Record<string, number>;
  failures: unknown[];
  memory?: { rssStartMB: number; rssPeakMB: number; subjects: string[] };
  hung?: number;
  exitCode: number | null;
  stderr: string;
}

function runPrompts(seed: number, count: number): Promise<Run> {
  // Loading the tokenizers (and building the tiny ones) comes before case 0.
  return watchRunner(join(packageRoot, 'test', 'fuzz', 'prompts-runner.ts'), [String(seed), String(count)], { perCaseMs: PER_CASE_MS, startupMs: 60_000 }) as Promise<Run>;
}

test(`${COUNT} mutated prompts through data, serve and chat encoding: a result or a proper error each`, async (t) => {
  const t0 = Date.now();
  const r = await runPrompts(SEED, COUNT);
  t.diagnostic(`${((Date.now() - t0) / 1000).toFixed(1)} s, ${JSON.stringify(r.memory)}, ${JSON.stringify(r.counts)}`);
  assert.deepEqual(r.failures, [], JSON.stringify(r.failures, null, 1));
  assert.equal(r.hung, undefined, `case ${r.hung} ran past ${PER_CASE_MS} ms (replay: node --import tsx test/fuzz/prompts-runner.ts ${SEED} ${COUNT} --case ${r.hung})`);
  assert.equal(r.exitCode, 0, r.stderr);
  assert.equal(Object.values(r.counts).reduce((a, b) => a + b, 0), COUNT);
  // The mutations reach every kind of outcome. The floor is 1 in 300 cases: at npm test's quarter count
  // without ../shared's tokenizers, 'data truncated' lands on 5 of 750 (a floor of > 750/150 failed there).
  for (const outcome of ['data ok', 'data truncated', 'serve ok', 'serve too-long', 'serve bad-request', 'chat ok', 'chat too-long']) {
    assert.ok((r.counts[outcome] ?? 0) >= Math.max(1, Math.floor(COUNT / 300)), `${outcome}: ${JSON.stringify(r.counts)}`);
  }
  assert.ok(r.memory, 'the child reports its memory');
  assert.ok(r.memory.rssPeakMB - r.memory.rssStartMB < RSS_GROWTH_MB, `RSS grew from ${r.memory.rssStartMB} to ${r.memory.rssPeakMB} MB`);
});
