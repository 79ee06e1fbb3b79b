// Bad input through the real CLI: each class ends in a clear message naming the file, line or key
// (and what to do), never a crash; --skip-bad-lines counts and reports instead of stopping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { runCli } from '../helpers/cli.js';

const root = mkdtempSync(join(tmpdir(), 'sft-bad-'));
const modelDir = join(root, 'model');
initModel({ arch: 'llama', outDir: modelDir, hidden: 32, layers: 1, heads: 2, kvHeads: 1, intermediate: 48, vocab: 300, seed: 1, maxPosition: 128, force: true });
const good = '{"conversation":[{"human":"hi","assistant":"hello"}]}';

function data(name: string, lines: (string | Buffer)[]): string {
  const f = join(root, name);
  writeFileSync(f, Buffer.concat(lines.map((l) => Buffer.concat([typeof l === 'string' ? Buffer.from(l) : l, Buffer.from('\n')]))));
  return f;
}

function train(file: string, extra: string[] = [], cfg: Record<string, unknown> = {}) {
  const config = join(root, `cfg-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(config, JSON.stringify({
    output_dir: join(root, `out-${Math.random().toString(36).slice(2)}`), model_name_or_path: modelDir, train_file: file,
    template_name: 'default', train_mode: 'lora', max_seq_length: 64, per_device_train_batch_size: 2, max_steps: 2, save_strategy: 'no', disable_tqdm: true, ...cfg,
  }));
  return runCli(['train', '--config', config, ...extra]);
}

const cases: [string, (string | Buffer)[], RegExp][] = [
  ['malformed.jsonl', [good, '{"conversation": [', good], /malformed\.jsonl:2: malformed JSON .*fix or delete the line/],
  ['gbk.jsonl', [good, Buffer.from([0x7b, 0xc4, 0xe3, 0x7d])], /gbk\.jsonl:2: the line is not valid UTF-8 .*iconv/],
  ['empty.jsonl', [good, '{"conversation": []}'], /empty\.jsonl:2: empty conversation/],
  ['user-last.jsonl', [good, '{"messages":[{"role":"user","content":"hi"}]}'], /user-last\.jsonl:2: the conversation ends on a user turn/],
  ['unknown.jsonl', ['{"prompt":"a","completion":"b"}'], /unknown\.jsonl:1: unknown record format/],
];

for (const [name, lines, message] of cases) {
  test(`${name}: stops with ${message}`, () => {
    const r = train(data(name, lines));
    assert.equal(r.status, 1, r.stdout);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });
}

test('--skip-bad-lines skips, counts and reports bad lines, then trains', () => {
  const f = data('mixed-bad.jsonl', [good, '{"conversation": [', Buffer.from([0x7b, 0xc4, 0xe3, 0x7d]), good]);
  const r = train(f, ['--skip-bad-lines']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /2 bad line\(s\) skipped/);
  assert.match(r.stdout, /skipped: .*mixed-bad\.jsonl:2: malformed JSON/);
});

// LLaMA-Factory's layout: one JSON array of alpaca records, pretty-printed, in a .json file.
test('a JSON array train_file trains as it is; a bad record names FILE:LINE:COLUMN and the record; --skip-bad-lines skips it', () => {
  const rec = (q: string) => `  {\n    "instruction": "${q}",\n    "input": "",\n    "output": "hello"\n  }`;
  const ok = join(root, 'alpaca.json');
  writeFileSync(ok, `[\n${rec('hi')},\n${rec('yo')}\n]\n`);
  const r = train(ok);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /Reading .*alpaca\.json \(a JSON array;/);
  assert.match(r.stdout, /2 samples/);
  const bad = join(root, 'alpaca-bad.json');
  writeFileSync(bad, `[\n${rec('hi')},\n  {"instruction": "x", "output": 3},\n${rec('yo')}\n]\n`);
  const stopped = train(bad);
  assert.equal(stopped.status, 1, stopped.stdout);
  assert.match(stopped.stderr, /alpaca-bad\.json:7:3 \(record 2, \.\[1\]\): "output" must be a string/);
  const skipped = train(bad, ['--skip-bad-lines']);
  assert.equal(skipped.status, 0, skipped.stderr);
  assert.match(skipped.stdout, /1 bad record\(s\) skipped/);
});

test('a .json holding one object over several lines is told how to write its data', () => {
  const f = join(root, 'one-object.json');
  writeFileSync(f, '{\n  "instruction": "hi",\n  "output": "hello"\n}\n');
  const r = train(f);
  assert.equal(r.status, 1, r.stdout);
  assert.match(r.stderr, /one-object\.json:1: malformed JSON .*JSON written over several lines: JSON Lines holds one record per line/);
});

test('a config value of the wrong type or range names the key', () => {
  const f = data('ok.jsonl', [good]);
  assert.match(train(f, ['--learning_rate', 'fast']).stderr, /learning_rate/);
  assert.match(train(f, [], { lora_dropout: 1.5 }).stderr, /lora_dropout/);
  assert.match(train(f, [], { per_device_train_batch_size: 'two' }).stderr, /per_device_train_batch_size/);
});

test('a loss that becomes NaN/Inf stops the run and names the step', () => {
  const f = data('ok2.jsonl', [good, good]);
  // The largest learning rate and weight decay allowed: 1 - lr * wd = -99 grows the weights 99x a step.
  const r = train(f, ['--learning_rate', '10', '--weight_decay', '10', '--max_steps', '20', '--max_grad_norm', '0']);
  assert.equal(r.status, 1, r.stdout);
  assert.match(r.stderr, /step \d+: the (loss|gradient norm) became (NaN|Infinity|-Infinity) — the weights were not updated/);
});
