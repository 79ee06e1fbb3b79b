// The engine against transformers + peft (fp32, CPU), one tiny random model per architecture
// variant: llama (GQA), qwen2 (q/k/v bias, tied head, rope_theta 1e6), baichuan (W_pack),
// baichuan2 (W_pack + NormHead), bloom (ALiBi over 6 heads, LayerNorm, GELU, interleaved
// query_key_value, tied head). Fixtures in test/fixtures/reference/<arch>/ come from
// scripts/reference/make_fixtures.py; see its header for what each number is and how to remake them.
//
// Error measure, everywhere: max_i |sft_i - ref_i| / max_i |ref_i| over the whole tensor (relative
// to the tensor's scale, so near-zero entries do not blow it up); losses: |sft - ref| / |ref|.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { native, packageRoot } from '../../src/native/binding.js';
import { applyLoraAdapter, loadBase } from '../../src/model/load.js';
import { readHfConfig } from '../../src/model/hfconfig.js';
import { listCheckpointTensors } from '../../src/model/weights.js';
import { readSafetensorsHeader, readTensorF32 } from '../../src/io/safetensors.js';
import { shiftLabels } from '../../src/train/recipe.js';

const ARCHS = ['llama', 'qwen2', 'baichuan', 'baichuan2', 'bloom'] as const;
const LOGITS_TOL = 1e-5;
const LOSS_TOL = 1e-5;
const GRAD_TOL = 1e-4;

interface Expected {
  ids: number[][];
  labels: number[][];
  loss_base: number;
  loss_peft: number;
  loss_sft: number;
  tensor(name: string): Float32Array;
  names: string[];
}

function readExpected(dir: string): Expected {
  const json = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8'));
  const file = join(dir, 'expected.safetensors');
  const header = readSafetensorsHeader(file);
  return { ...json, names: [...header.tensors.keys()], tensor: (name: string) => readTensorF32(file, header, name) };
}

function relErr(got: Float32Array, want: Float32Array): number {
  assert.equal(got.length, want.length, 'length');
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  assert.ok(scale > 0, 'reference tensor is all zeros');
  return diff / scale;
}

for (const arch of ARCHS) {
  const dir = join(packageRoot, 'test', 'fixtures', 'reference', arch);
  const ref = readExpected(dir);
  const [batch, seqLen] = [ref.ids.length, ref.ids[0].length];
  const ids = Int32Array.from(ref.ids.flat());
  const labels = shiftLabels(Int32Array.from(ref.labels.flat()), batch, seqLen);
  const tokens = labels.filter((l) => l >= 0).length;

  test(`${arch}: base logits equal transformers'`, async (t) => {
    const { model } = await loadBase(dir);
    const e = relErr(await model.logits(ids, batch, seqLen), ref.tensor('logits.base'));
    t.diagnostic(`logits rel err ${e.toExponential(2)}`);
    assert.ok(e < LOGITS_TOL, `logits rel err ${e}`);
  });

  test(`${arch}: peft's adapter gives peft's logits, loss and LoRA gradients`, async (t) => {
    const { model } = await loadBase(dir);
    applyLoraAdapter(model, join(dir, 'peft-adapter'));
    const le = relErr(await model.logits(ids, batch, seqLen), ref.tensor('logits.peft'));
    t.diagnostic(`logits rel err ${le.toExponential(2)}`);
    assert.ok(le < LOGITS_TOL, `logits rel err ${le}`);

    model.zeroGrad();
    const r = await model.forwardBackward(ids, labels, batch, seqLen, 1 / tokens, 0);
    assert.equal(r.tokens, tokens);
    const lossErr = Math.abs(r.lossSum / r.tokens - ref.loss_peft) / Math.abs(ref.loss_peft);
    t.diagnostic(`loss ${r.lossSum / r.tokens} vs ${ref.loss_peft}: rel err ${lossErr.toExponential(2)}`);
    assert.ok(lossErr < LOSS_TOL, `loss rel err ${lossErr}`);

    // Same LoRA tensors on both sides (sft names are peft's without "base_model.model.").
    const gradNames = ref.names.filter((n) => n.startsWith('grad.')).map((n) => n.slice('grad.'.length)).sort();
    assert.deepEqual(model.trainableParams().map((p) => p.name).sort(), gradNames);
    let worst = { e: 0, name: '' };
    for (const name of gradNames) {
      const e = relErr(model.getGrad(name), ref.tensor('grad.' + name));
      if (e > worst.e) worst = { e, name };
      assert.ok(e < GRAD_TOL, `${name}: grad rel err ${e}`);
    }
    t.diagnostic(`${gradNames.length} grads, max rel err ${worst.e.toExponential(2)} (${worst.name})`);
  });

  test(`${arch}: base loss through forwardBackward equals transformers' shifted mean loss`, async (t) => {
    const { model } = await loadBase(dir);
    const r = await model.forwardBackward(ids, labels, batch, seqLen, 1 / tokens, 0);
    const e = Math.abs(r.lossSum / r.tokens - ref.loss_base) / Math.abs(ref.loss_base);
    t.diagnostic(`loss ${r.lossSum / r.tokens} vs ${ref.loss_base}: rel err ${e.toExponential(2)}`);
    assert.ok(e < LOSS_TOL, `loss rel err ${e}`);
  });

  test(`${arch}: an adapter sft wrote, as peft loads it, gives peft's logits`, async (t) => {
    const { model } = await loadBase(dir);
    applyLoraAdapter(model, join(dir, 'sft-adapter'));
    const e = relErr(await model.logits(ids, batch, seqLen), ref.tensor('logits.sft'));
    t.diagnostic(`logits rel err ${e.toExponential(2)}`);
    assert.ok(e < LOGITS_TOL, `logits rel err ${e}`);
    const r = await model.forwardBackward(ids, labels, batch, seqLen, 1 / tokens, 0);
    const le = Math.abs(r.lossSum / r.tokens - ref.loss_sft) / Math.abs(ref.loss_sft);
    assert.ok(le < LOSS_TOL, `loss rel err ${le}`);
  });
}

// BloomModel.save_pretrained writes the same tensors without the "transformer." prefix; the engine
// takes either spelling (transformers' from_pretrained does too).
test('bloom: a checkpoint whose names lack "transformer." loads into the engine and gives the same logits', async (t) => {
  const dir = join(packageRoot, 'test', 'fixtures', 'reference', 'bloom');
  const ref = readExpected(dir);
  const [batch, seqLen] = [ref.ids.length, ref.ids[0].length];
  const model = new (native().Model)({ ...readHfConfig(dir).native, dtype: 'f32' });
  const sources = listCheckpointTensors(dir).map((s) => ({ ...s, name: s.name.replace(/^transformer\./, '') }));
  assert.ok(sources.every((s) => !s.name.startsWith('transformer.')) && sources.length === model.baseParams().length);
  await model.loadWeights(sources);
  const e = relErr(await model.logits(Int32Array.from(ref.ids.flat()), batch, seqLen), ref.tensor('logits.base'));
  t.diagnostic(`logits rel err ${e.toExponential(2)}`);
  assert.ok(e < LOGITS_TOL, `logits rel err ${e}`);
});
