// Writes a LoRA adapter exactly as sft saves one (src/io/peft.ts writeLoraAdapter, tensor names from
// the engine's addLora, as src/train/recipe.ts saveAdapter does), filled with seeded random values so
// that it changes the model's output. make_fixtures.py then loads it with peft's
// PeftModel.from_pretrained and records peft's logits for test/model/reference.test.ts.
//
//   node --import tsx scripts/reference/write_sft_adapter.ts MODEL_DIR OUT_DIR SEED
import { loadBase } from '../../src/model/load.js';
import { writeLoraAdapter } from '../../src/io/peft.js';
import { loraModulesOf } from '../../src/model/modules.js';

// Deliberately not the rank/alpha of the peft-made adapter (r 4, alpha 8): scale = alpha/r = 0.5 here.
const RANK = 8;
const ALPHA = 4;

const [modelDir, outDir, seedArg] = process.argv.slice(2);
if (!modelDir || !outDir || !seedArg) {
  console.error('usage: node --import tsx scripts/reference/write_sft_adapter.ts MODEL_DIR OUT_DIR SEED');
  process.exit(2);
}

const { model, native: cfg } = await loadBase(modelDir, { threads: 1 });
const targets = loraModulesOf(cfg.arch);  // every linear layer of the family
const params = model.addLora({ targets, rank: RANK, alpha: ALPHA, dropout: 0, seed: 0 });

// Both A and B random, N(0, 1/fan_in), so the adapter's contribution is of the base's order.
const normal = normalSampler(1000 + Number(seedArg));
const tensors = params.map((p) => {
  const data = new Float32Array(p.shape[0] * p.shape[1]);
  for (let i = 0; i < data.length; i++) data[i] = normal() / Math.sqrt(p.shape[1]);
  return { name: p.name, shape: p.shape, data };
});
writeLoraAdapter(outDir, { tensors, config: { baseModel: modelDir, r: RANK, loraAlpha: ALPHA, loraDropout: 0, targetModules: targets } });
console.log(`${outDir}: ${tensors.length} tensors, targets ${targets.join(',')}`);

/** Standard normal samples from a seeded mulberry32 stream (Box-Muller). */
function normalSampler(seed: number): () => number {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}
