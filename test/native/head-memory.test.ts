// lm_head and the loss run over chunks of rows (native/model/decoder.h, head_loss): no buffer holds
// the logits of the whole batch, [B*T, V] (1 GiB fp32 for a 32,000-word vocabulary at 8 x 1024
// tokens; 4.6 GiB for Qwen2's 151,936). Read from the engine's memory plan (meta models: nothing is
// allocated, and a cuda one plans without a GPU): what the activations and workspace need beyond a
// tiny vocabulary's is the one chunk, on both backends, in fp32 and bf16.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/native/binding.js';
import type { MemoryPlan, NativeModelConfig } from '../../src/native/types.js';

const llama: NativeModelConfig = {
  arch: 'llama', vocabSize: 32000, hiddenSize: 128, intermediateSize: 256, numLayers: 2, numHeads: 8, numKvHeads: 2,
  ropeTheta: 10000, rmsNormEps: 1e-6, tieWordEmbeddings: false, qkvBias: false, normHead: false, meta: true, device: 'cpu',
};
const qwen2: NativeModelConfig = { ...llama, arch: 'qwen2', vocabSize: 151936, qkvBias: true, tieWordEmbeddings: true };
const baichuan2: NativeModelConfig = { ...llama, arch: 'baichuan2', vocabSize: 125696, normHead: true };

function plan(cfg: NativeModelConfig, batch: number, seqLen: number, train: boolean, full: boolean): MemoryPlan {
  const m = new (native().Model)(cfg);
  if (full) m.setBaseTrainable(true);
  else m.addLora({ targets: cfg.arch.startsWith('baichuan') ? ['W_pack'] : ['q_proj', 'v_proj'], rank: 4, alpha: 8, dropout: 0, seed: 1 });
  m.plan({ batch, seqLen, train, optimizer: train });
  return m.memoryPlan();
}
const bytes = (p: MemoryPlan, kind: string) => p.kinds.find((k) => k.kind === kind)?.bytes ?? 0;
const perStep = (p: MemoryPlan) => bytes(p, 'activations') + bytes(p, 'workspace');
const MiB = 2 ** 20;

const modes = [['LoRA training', true, false], ['full fine-tuning', true, true], ['evaluation', false, false]] as const;
for (const base of [llama, qwen2, baichuan2]) {
  for (const [device, dtype] of [['cpu', 'f32'], ['cpu', 'bf16'], ['cuda', 'f32'], ['cuda', 'bf16']] as const) {
    for (const [what, train, full] of modes) {
      const cfg: NativeModelConfig = { ...base, device, dtype };
      test(`${cfg.arch} (vocab ${cfg.vocabSize}) ${device} ${dtype}, ${what} at 8 x 1024: lm_head's logits are one chunk, not [B*T, V]`, () => {
        const B = 8, T = 1024, V = cfg.vocabSize, size = dtype === 'bf16' ? 2 : 4;
        const big = plan(cfg, B, T, train, full), tiny = plan({ ...cfg, vocabSize: 256 }, B, T, train, full);
        const chunk = big.kinds.flatMap((k) => k.entries).find((e) => /^logits \(lm_head chunk of \d+ rows\)/.test(e.name));
        assert.ok(chunk, `the plan names the logits chunk: ${JSON.stringify(big.kinds.map((k) => k.entries.map((e) => e.name)))}`);
        const rows = Number(/of (\d+) rows/.exec(chunk.name)![1]);
        // At most 128 MiB and 1024 rows; as many rows as fit (the head's GEMMs stay wide).
        assert.equal(rows, Math.min(1024, Math.floor((128 * MiB) / (V * size))), `${chunk.name} for ${V} words of ${size} B`);
        assert.ok(chunk.bytes >= rows * V * size && chunk.bytes <= rows * V * size + 256, `${chunk.name}: ${chunk.bytes} B is not ${rows} rows of ${V} ${dtype} logits`);
        // Nothing else per step grows with the vocabulary but, when NormHead's lm_head is trained, the
        // gradient of its normalised rows ([V, H] fp32, "d lm_head (normalised rows)": one, whatever B x T).
        const dWn = cfg.normHead && full ? (V - 256) * cfg.hiddenSize * 4 : 0;
        const growth = perStep(big) - perStep(tiny);
        assert.ok(growth <= chunk.bytes + dWn, `activations + workspace grow by ${growth} B with the vocabulary, more than the ${chunk.bytes} B chunk (+ ${dWn} B)`);
        assert.ok(growth < (B * T * V * size) / 8, `growth ${growth} B is not far below [B*T, V] (${B * T * V * size} B)`);
      });
    }
  }
}

test('a batch smaller than a chunk plans only its own rows of logits', () => {
  const p = plan(llama, 2, 8, true, false);
  const chunk = p.kinds.flatMap((k) => k.entries).find((e) => /^logits \(lm_head chunk/.test(e.name));
  assert.equal(chunk?.name, 'logits (lm_head chunk of 16 rows)');
  assert.equal(chunk.bytes, 16 * llama.vocabSize * 4);
});
