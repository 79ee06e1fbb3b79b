// What attention keeps for backward on the CPU: each row's logsumexp (B x heads x T floats), never the
// B x heads x T x T probabilities, so a training run's activations grow linearly with the sequence.
// Read from the engine's memory plan (meta models: nothing is allocated).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/native/binding.js';
import type { NativeModelConfig } from '../../src/native/types.js';

const llama: NativeModelConfig = {
  arch: 'llama', vocabSize: 256, hiddenSize: 128, intermediateSize: 256, numLayers: 2, numHeads: 8, numKvHeads: 2,
  ropeTheta: 10000, rmsNormEps: 1e-6, tieWordEmbeddings: false, qkvBias: false, normHead: false, meta: true, device: 'cpu',
};
const bloom: NativeModelConfig = { ...llama, arch: 'bloom', numKvHeads: 8, rmsNormEps: 1e-5, tieWordEmbeddings: true };

function activations(cfg: NativeModelConfig, batch: number, seqLen: number) {
  const m = new (native().Model)(cfg);
  m.addLora({ targets: cfg.arch === 'bloom' ? ['query_key_value'] : ['q_proj', 'v_proj'], rank: 4, alpha: 8, dropout: 0, seed: 1 });
  m.plan({ batch, seqLen, train: true, optimizer: true });
  const kind = m.memoryPlan().kinds.find((k) => k.kind === 'activations')!;
  return kind;
}

for (const cfg of [llama, bloom]) {
  test(`${cfg.arch}: attention saves B x heads x T floats for backward; activations grow linearly with the sequence`, () => {
    const B = 2, heads = cfg.numHeads;
    const a1 = activations(cfg, B, 512), a2 = activations(cfg, B, 1024);
    // Everything else saved per token is linear in B x T; a T^2 term would more than double it.
    assert.ok(a2.bytes <= 2.01 * a1.bytes, `activations at T 1024 ${a2.bytes} B vs ${a1.bytes} B at T 512: more than linear`);
    for (const [a, T] of [[a1, 512], [a2, 1024]] as const) {
      for (const e of a.entries.filter((x) => /attention \(saved\)/.test(x.name))) {
        assert.ok(e.bytes <= B * heads * T * 4 + 256, `${e.name}: ${e.bytes} B, more than B x heads x T fp32 (${B * heads * T * 4} B)`);
      }
    }
  });
}
