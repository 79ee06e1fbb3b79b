// Thousands of damaged files of each kind users hand us, through the readers (test/fuzz/files-runner.ts):
// safetensors (header length fields, dtype/shape/offset lies, duplicate and non-UTF-8 names, deep
// nesting, truncation), PyTorch .bin (zip fields, entries, pickles; generated state dicts checked
// exactly), config.json, shard indexes (paths out of the folder, symlinks, the HF cache layout) and
// C-Eval/MMLU CSV (quotes, BOM, CRLF, columns, huge fields, non-UTF-8; the real C-Eval files as
// seeds when ../shared/ceval is there). Every case ends in a checked result or an SftError naming
// the file; none throws another error, hangs (a watchdog kills the child and names the case),
// allocates more than its input or grows the child's memory without bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { watchRunner } from './watchdog.js';
import { fuzzCount } from './scale.js';

const SEED = 20261204;
const PER_CASE_MS = 5000;
/** The runner loads tsx and builds its seeds before case 0. */
const STARTUP_MS = 30_000;
/** Megabyte strings (huge CSV fields, 100,000-long shapes) come and go; growth past this is a leak or a blow-up. */
const RSS_GROWTH_MB = 400;

interface Run {
  counts: Record<string, number>;
  failures: unknown[];
  memory?: { rssStartMB: number; rssPeakMB: number; worstAlloc: unknown; realCeval: number };
  hung?: number;
  exitCode: number | null;
  stderr: string;
}

function runFiles(kind: string, seed: number, count: number, perCaseMs = PER_CASE_MS): Promise<Run> {
  const runner = join(packageRoot, 'test', 'fuzz', 'files-runner.ts');
  // A bounded heap: a reader that builds something huge kills the child (a failure), not the machine.
  return watchRunner(runner, [kind, String(seed), String(count)], { perCaseMs, startupMs: STARTUP_MS, nodeFlags: ['--max-old-space-size=1024'] }) as Promise<Run>;
}

function assertClean(r: Run, count: number, kind: string): void {
  assert.equal(r.hung, undefined, `${kind}: case ${r.hung} ran past ${PER_CASE_MS} ms (replay: node --import tsx test/fuzz/files-runner.ts ${kind} ${SEED} ${count} --case ${r.hung})`);
  assert.deepEqual(r.failures, [], JSON.stringify(r.failures, null, 1));
  assert.equal(r.exitCode, 0, r.stderr.slice(-2000));
  assert.equal(Object.values(r.counts).reduce((a, b) => a + b, 0), count, JSON.stringify(r.counts));
  assert.ok(r.memory, 'the runner reports its memory');
  assert.ok(r.memory.rssPeakMB - r.memory.rssStartMB < RSS_GROWTH_MB, `RSS grew from ${r.memory.rssStartMB} to ${r.memory.rssPeakMB} MiB`);
  // Both outcomes are reached: the damage is neither always fatal nor always harmless.
  assert.ok((r.counts.ok ?? 0) > count / 50 && (r.counts.error ?? 0) > count / 4, JSON.stringify(r.counts));
}

const KINDS: [string, number][] = ([['safetensors', 3000], ['torch-bin', 3000], ['hf-config', 2000], ['shard-index', 2000], ['ceval-csv', 2000]] as [string, number][]).map(([k, n]) => [k, fuzzCount(n)]);

const REAL_CEVAL = existsSync(join(packageRoot, '..', 'shared', 'ceval', 'val'));

for (const [kind, count] of KINDS) {
  test(`${count} damaged ${kind} inputs: a checked result or an SftError naming the file, bounded memory, no hang`, async (t) => {
    const r = await runFiles(kind, SEED, count);
    t.diagnostic(`${kind}: ${JSON.stringify(r.counts)} memory ${JSON.stringify(r.memory)}`);
    assertClean(r, count, kind);
    if (kind !== 'ceval-csv') return;
    // The generated seeds always run; the published C-Eval files join them when ../shared/ceval is there.
    if (REAL_CEVAL) assert.ok((r.memory?.realCeval ?? 0) > 0, 'the real C-Eval files were not used as seeds');
    else t.diagnostic('../shared/ceval is absent: the CSV cases ran on the generated seeds only');
  });
}

test('the files watchdog reports a wrong exception and a hang by case number', async () => {
  const r = await runFiles('self-check', 1, 5, 500);
  assert.equal(r.hung, 2);
  assert.equal(r.failures.length, 1);
  assert.equal((r.failures[0] as { case: number; type: string }).case, 1);
  assert.equal((r.failures[0] as { type: string }).type, 'TypeError');
});
