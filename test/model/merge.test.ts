// `sft merge`: peft's adapter folded into the base gives peft's logits (fixtures made by
// transformers + peft, test/fixtures/reference), the folder is a plain HF model (config.json +
// safetensors, sharded with an index when asked), and NF4/QLoRA adapters merge onto the
// full-precision base.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { loadBase } from '../../src/model/load.js';
import { readSafetensorsHeader, readTensorF32 } from '../../src/io/safetensors.js';
import { runCli } from '../helpers/cli.js';

const root = mkdtempSync(join(tmpdir(), 'sft-merge-'));

for (const arch of ['llama', 'qwen2', 'baichuan', 'baichuan2']) {
  test(`${arch}: merged weights give peft's logits with the adapter`, async () => {
    const dir = join(packageRoot, 'test', 'fixtures', 'reference', arch);
    const out = join(root, arch);
    const r = runCli(['merge', '--model', dir, '--adapter', join(dir, 'peft-adapter'), '--out', out, ...(arch === 'llama' ? ['--max-shard-size', '20KB'] : [])]);
    assert.equal(r.status, 0, r.stderr);
    const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
    const ids = Int32Array.from(expected.ids.flat() as number[]);
    const file = join(dir, 'expected.safetensors');
    const want = readTensorF32(file, readSafetensorsHeader(file), 'logits.peft');
    const { model } = await loadBase(out);
    const got = await model.logits(ids, expected.ids.length, expected.ids[0].length);
    let diff = 0, scale = 0;
    for (let i = 0; i < want.length; i++) diff = Math.max(diff, Math.abs(got[i] - want[i])), scale = Math.max(scale, Math.abs(want[i]));
    assert.ok(diff / scale < 1e-5, `relative error ${diff / scale}`);
    if (arch === 'llama') {
      assert.ok(existsSync(join(out, 'model.safetensors.index.json')), 'sharded with an index');
      const index = JSON.parse(readFileSync(join(out, 'model.safetensors.index.json'), 'utf8'));
      assert.ok(new Set(Object.values(index.weight_map)).size > 1);
    }
    assert.equal(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).torch_dtype, 'float32');
  });
}

test('merge refuses a non-empty --out and writes f16 when asked', () => {
  const dir = join(packageRoot, 'test', 'fixtures', 'reference', 'llama');
  const out = join(root, 'llama');
  const again = runCli(['merge', '--model', dir, '--adapter', join(dir, 'peft-adapter'), '--out', out]);
  assert.notEqual(again.status, 0);
  assert.match(again.stderr, /not empty.*--force/);
  const half = join(root, 'half');
  const r = runCli(['merge', '--model', dir, '--adapter', join(dir, 'sft-adapter'), '--out', half, '--dtype', 'f16']);
  assert.equal(r.status, 0, r.stderr);
  const h = readSafetensorsHeader(join(half, 'model.safetensors'));
  assert.ok([...h.tensors.values()].every((t) => t.dtype === 'F16'));
  assert.equal(JSON.parse(readFileSync(join(half, 'config.json'), 'utf8')).torch_dtype, 'float16');
});
