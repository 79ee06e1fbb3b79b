// The deepspeed key turns on ZeRO: zero_optimization.stage from a DeepSpeed config (a file, JSON
// text or an object) sets zero_stage; 2 and 3 run as 1 with a notice; the rest of the DeepSpeed
// config is named as having no effect; a bad file or stage is an error naming the file and key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configFromObject, parseOverrides } from '../../src/config/loader.js';
import { SftError } from '../../src/errors.js';
import { keysHelp } from '../../src/config/key-help.js';

const dir = mkdtempSync(join(tmpdir(), 'sft-ds-'));
const ds = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const BASE = { output_dir: 'out', model_name_or_path: 'm', train_file: 'd.jsonl', max_seq_length: 64 };
const load = (extra: Record<string, unknown>, overrides: string[] = []) => configFromObject({ ...BASE, ...extra }, overrides, 'x.json');
const error = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof SftError, String(err));
    return err.message;
  }
  assert.fail('no error');
};

test('zero_stage defaults to 0; a DeepSpeed file with zero_optimization.stage 1 sets it, silently when that is all it holds', () => {
  assert.equal(load({}).config.zero_stage, 0);
  const { config, notices } = load({ deepspeed: ds('z1.json', '{"zero_optimization": {"stage": 1}}') });
  assert.equal(config.zero_stage, 1);
  assert.deepEqual(notices, []);
  assert.equal(load({ deepspeed: { zero_optimization: { stage: 1 } } }).config.zero_stage, 1, 'an inline object');
  assert.equal(load({}, ['--deepspeed', '{"zero_optimization": {"stage": 1}}']).config.zero_stage, 1, 'JSON text on the command line');
  assert.equal(load({ deepspeed: { train_batch_size: 'auto' } }).config.zero_stage, 0, 'no zero_optimization: stage 0');
  assert.equal(load({ zero_stage: 1 }).config.zero_stage, 1);
  assert.equal(parseOverrides(['--zero_stage', '1']).zero_stage, 1);
});

test('stages 2 and 3 run ZeRO-1 with a one-line notice; the rest of a DeepSpeed config is named as having no effect', () => {
  const two = load({ deepspeed: ds('z2.json', JSON.stringify({ zero_optimization: { stage: 2, overlap_comm: true }, bf16: { enabled: 'auto' }, train_micro_batch_size_per_gpu: 'auto' })) });
  assert.equal(two.config.zero_stage, 2);
  const zeroNotice = two.notices.find((n) => n.startsWith('ZeRO stage 2'));
  assert.equal(zeroNotice, 'ZeRO stage 2: sft runs ZeRO stage 1: the AdamW state is sharded over the ranks, the gradients are not; the training result is the same, only the memory per rank differs');
  const dsNotice = two.notices.find((n) => n.startsWith('deepspeed:'));
  assert.match(dsNotice ?? '', /only zero_optimization\.stage is read from .*z2\.json \(zero_stage 2\); bf16, train_micro_batch_size_per_gpu, zero_optimization\.overlap_comm have no effect/);
  const three = load({ zero_stage: 3 });
  assert.match(three.notices.join('\n'), /ZeRO stage 3: .* the gradients and parameters are not;/);
});

test('a bad DeepSpeed config is an error naming the file and the key', () => {
  assert.match(error(() => load({ deepspeed: join(dir, 'missing.json') })), /x\.json: deepspeed: cannot read the DeepSpeed config .*missing\.json \(no such file\)/);
  assert.match(error(() => load({ deepspeed: ds('bad.json', '{"zero_optimization": {"stage": 1,}}') })), /deepspeed: .*bad\.json:1:\d+: /);
  assert.match(error(() => load({ deepspeed: ds('s4.json', '{"zero_optimization": {"stage": 4}}') })), /deepspeed: .*s4\.json: zero_optimization\.stage = 4 is not allowed; expected 0, 1, 2 or 3/);
  assert.match(error(() => load({ deepspeed: { zero_optimization: { stage: 'auto' } } })), /the deepspeed object: zero_optimization\.stage = "auto" is not allowed/);
  assert.match(error(() => load({ deepspeed: { zero_optimization: 1 } })), /zero_optimization = 1 is not allowed; expected an object/);
  assert.match(error(() => load({ deepspeed: { zero_optimization: { stage: 2 } }, zero_stage: 1 })), /zero_stage 1 and the deepspeed object's zero_optimization\.stage 2 disagree/);
  assert.match(error(() => load({ zero_stage: 4 })), /zero_stage = 4 is not allowed; expected an integer from 0 to 3: 1 shards the AdamW state/);
});

test('train --help documents zero_stage and what deepspeed does', () => {
  const help = keysHelp(200);
  assert.match(help, /zero_stage +0 +an integer from 0 to 3: 1 shards the AdamW state over the data-parallel ranks \(each keeps 1\/N of it\); 2, 3 run as 1; 0 = off/);
  assert.match(help, /deepspeed +null +a DeepSpeed config \(a path, JSON text or an object; its zero_optimization\.stage sets zero_stage\), or null/);
});
