// `sft train --help` lists the config keys that can be overridden, with what each takes and its
// default, in lines that fit a 100-column terminal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from '../helpers/cli.js';
import { KEYS } from '../../src/config/schema.js';

test('train --help lists every config key with its allowed values and default, within 100 columns', () => {
  const r = runCli(['train', '--help']);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.split('\n');
  const long = lines.filter((l) => l.length > 100);
  assert.deepEqual(long, [], 'lines over 100 columns');
  const row = (key: string) => lines.find((l) => l.trimStart().startsWith(`${key} `));
  for (const k of KEYS) assert.ok(row(k), `--help has no row for ${k}`);
  // Defaults as Firefly (component/argument.py) and HF TrainingArguments define them.
  assert.match(row('train_mode')!, /"qlora"\s+one of "full", "lora", "qlora", "prompt_tuning"/);
  assert.match(row('lora_rank')!, /\b64\s+an integer from 1 to 65536/);
  assert.match(row('learning_rate')!, /\b5e-5\s+a number >= 0/);
  assert.match(row('output_dir')!, /required/);
  // The HF keys accepted without a row of their own are named too.
  const tail = r.stdout.slice(r.stdout.indexOf('Also accepted'));
  for (const k of ['cache_dir', 'eval_delay', 'push_to_hub', 'use_cpu', 'label_smoothing_factor']) {
    assert.match(tail, new RegExp(`\\b${k}\\b`), `--help does not name ${k}`);
  }
});
