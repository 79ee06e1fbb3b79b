// One measurement with sft's engine, in a process of its own (so the peak RSS is this workload's):
//   node --import tsx bench/cpu-vs-torch/sft-worker.ts '<json job>'
// The job names the model folder, the workload, the ids file, the threads and the step counts; the
// last line printed is a JSON result. torch-worker.py is the same job for PyTorch + peft.
import { readFileSync } from 'node:fs';
import { loadBase } from '../../src/model/load.js';
import { native } from '../../src/native/binding.js';
import { shiftLabels } from '../../src/train/recipe.js';
import type { Workload } from './workloads.js';

export interface Job { modelDir: string; workload: Workload; idsFile: string; threads: number; warmup: number; units: number }
export interface Result { seconds: number; units: number; tokensPerSecond: number; rssMiB: number; firstLoss?: number; greedy?: number[] }

async function run(job: Job): Promise<Result> {
  const w = job.workload;
  const { model, native: cfg } = await loadBase(job.modelDir, { threads: job.threads, dtype: w.kind === 'train' && w.bf16 ? 'bf16' : 'f32' });
  const bytes = readFileSync(job.idsFile);
  // A copy: a small file's Buffer may be a view into a larger shared pool.
  const ids = new Int32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  let firstLoss: number | undefined;
  let greedy: number[] | undefined;
  let unit: () => Promise<void>;

  if (w.kind === 'train') {
    model.addLora({ targets: native().archInfo(cfg.arch).loraModules, rank: 16, alpha: 32, dropout: 0.05, seed: 1 });
    model.setGradientCheckpointing(w.checkpointing);
    model.plan({ batch: w.batch, seqLen: w.seq, train: true, optimizer: true });
    const labels = shiftLabels(ids, w.batch, w.seq);
    const targets = w.batch * (w.seq - 1);
    let step = 0;
    unit = async () => {
      model.zeroGrad();
      const r = await model.forwardBackward(ids, labels, w.batch, w.seq, 1 / targets, step);
      if (step === 0) firstLoss = r.lossSum / r.tokens;
      await model.adamwStep({ lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxGradNorm: 1 });
      step++;
    };
  } else if (w.kind === 'score') {
    model.plan({ batch: 1, seqLen: w.seq });
    unit = async () => void (await model.logits(ids, 1, w.seq));
  } else {
    model.plan({ kvSlots: 1, kvPositions: w.prompt + w.tokens });
    // One unit = prefill the prompt, then w.tokens greedy tokens, as transformers' generate does.
    unit = async () => {
      model.resetCache();
      let logits = await model.feed(ids);
      const out: number[] = [];
      for (let i = 0; i < w.tokens; i++) {
        const next = argmax(logits);
        out.push(next);
        if (i + 1 < w.tokens) logits = await model.feed(Int32Array.of(next));
      }
      greedy ??= out;
    };
  }

  for (let i = 0; i < job.warmup; i++) await unit();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < job.units; i++) await unit();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const perUnit = w.kind === 'train' ? w.batch * w.seq : w.kind === 'score' ? w.seq : w.tokens;
  return { seconds, units: job.units, tokensPerSecond: (perUnit * job.units) / seconds, rssMiB: process.resourceUsage().maxRSS / 1024, firstLoss, greedy };
}

function argmax(v: Float32Array): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

run(JSON.parse(process.argv[2]) as Job).then(
  (r) => console.log(JSON.stringify(r)),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
