// The decode row through llama.cpp (node-llama-cpp's CPU binaries), in a process of its own:
//   node bench/cpu-vs-torch/llama-worker.mjs '<json job>'
// The job is sft-worker.ts's plus `gguf` (the model written as f32 GGUF by sft export) and `llamaDir` (the
// folder whose node_modules holds node-llama-cpp). One unit = the prompt, then `tokens` greedy
// tokens (temperature 0), as the other engines do; the last line printed is a JSON result.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

async function run(job) {
  const w = job.workload;
  if (w.kind !== 'decode') throw new Error(`llama-worker runs the decode row only, not ${w.kind}`);
  const { getLlama } = await import(pathToFileURL(join(job.llamaDir, 'node_modules', 'node-llama-cpp', 'dist', 'index.js')).href);
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error', maxThreads: job.threads });
  const model = await llama.loadModel({ modelPath: job.gguf, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: w.prompt + w.tokens + 16, batchSize: w.prompt, threads: job.threads, sequences: 1 });
  const seq = context.getSequence();
  const bytes = readFileSync(job.idsFile);
  const ids = Array.from(new Int32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
  let greedy;

  const unit = async () => {
    await seq.clearHistory();
    const out = [];
    for await (const t of seq.evaluate(ids, { temperature: 0, yieldEogToken: true })) {
      out.push(Number(t));
      if (out.length === w.tokens) break;
    }
    greedy ??= out;
  };

  for (let i = 0; i < job.warmup; i++) await unit();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < job.units; i++) await unit();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const result = { seconds, units: job.units, tokensPerSecond: (w.tokens * job.units) / seconds, rssMiB: process.resourceUsage().maxRSS / 1024, greedy, threads: context.currentThreads };
  await context.dispose();
  await model.dispose();
  return result;
}

run(JSON.parse(process.argv[2])).then(
  (r) => console.log(JSON.stringify(r)),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
