import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MetricsWriter } from '../../src/log/metrics.js';

const lines = (p: string) => readFileSync(p, 'utf8').split('\n');

test('one JSON object per line, on disk as soon as it is written', () => {
  const out = join(mkdtempSync(join(tmpdir(), 'sft-metrics-')), 'nested', 'run');
  const w = new MetricsWriter(out);
  assert.equal(w.path, join(out, 'metrics.jsonl'));
  w.write({ step: 10, epoch: 0.5, loss: 2.25, learning_rate: 1e-4, grad_norm: 0.75, tokens_per_second: 1234.5 });
  // Read back before close: each line must already be in the file.
  assert.deepEqual(lines(w.path), ['{"step":10,"epoch":0.5,"loss":2.25,"learning_rate":0.0001,"grad_norm":0.75,"tokens_per_second":1234.5}', '']);
  w.write({ step: 20, epoch: 1, loss: 1.5, learning_rate: 5e-5, eval_note: 'x' });
  w.close();
  const got = lines(w.path);
  assert.equal(got.length, 3);
  assert.deepEqual(JSON.parse(got[1]), { step: 20, epoch: 1, loss: 1.5, learning_rate: 5e-5, eval_note: 'x' });
});

test('a diverged loss is written as null, undefined fields are left out', () => {
  const w = new MetricsWriter(mkdtempSync(join(tmpdir(), 'sft-metrics-')));
  w.write({ step: 1, epoch: 0.1, loss: NaN, learning_rate: 0, grad_norm: Infinity, tokens_per_second: undefined });
  w.close();
  assert.equal(lines(w.path)[0], '{"step":1,"epoch":0.1,"loss":null,"learning_rate":0,"grad_norm":null}');
});

test('a new writer starts a fresh file; writing after close is a bug', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sft-metrics-'));
  writeFileSync(join(dir, 'metrics.jsonl'), '{"old":true}\n');
  const w = new MetricsWriter(dir);
  w.write({ step: 1, epoch: 1, loss: 1, learning_rate: 1 });
  w.close();
  w.close(); // closing twice is harmless
  assert.deepEqual(lines(w.path), ['{"step":1,"epoch":1,"loss":1,"learning_rate":1}', '']);
  assert.throws(() => w.write({ step: 2, epoch: 1, loss: 1, learning_rate: 1 }), /already closed/);
});
