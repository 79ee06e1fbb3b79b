// Runs GGUF files in llama.cpp (node-llama-cpp's CPU binaries), in a process of its own:
//   node test/export/llama-run.mjs '<json job>'
// job: { llamaDir (a folder whose node_modules holds node-llama-cpp), files: [{ gguf, prompt: ids,
// tokens: greedy count, text: ids scored,
// tokenize?: a string llama.cpp's tokenizer encodes (no special tokens) }] }. For each file, the last line's JSON has `greedy`
// (tokens, temperature 0, end-of-generation tokens not stopping it) and `nll` (mean negative log-
// likelihood of text[i + 1] after text[0..i], from llama.cpp's raw logits), `tokenized`, or `error`.
// One thread: ggml's threads spin-wait, and on a shared 2-core machine two of them took 300 ms a token.
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

async function run(job) {
  const { getLlama } = await import(pathToFileURL(join(job.llamaDir, 'node_modules', 'node-llama-cpp', 'dist', 'index.js')).href);
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error', maxThreads: 1 });
  const results = [];
  for (const f of job.files) {
    try {
      const model = await llama.loadModel({ modelPath: f.gguf, gpuLayers: 0 });
      const context = await model.createContext({ contextSize: 256, batchSize: 256, threads: 1, sequences: 1 });
      const seq = context.getSequence();
      const greedy = [];
      for await (const t of seq.evaluate(f.prompt, { temperature: 0, yieldEogToken: true })) {
        greedy.push(Number(t));
        if (greedy.length === f.tokens) break;
      }
      await seq.clearHistory();
      const input = f.text.map((t, i) => (i + 1 < f.text.length ? [t, { generateNext: { logits: true } }] : t));
      const out = await seq.controlledEvaluate(input);
      let nll = 0;
      for (let i = 0; i + 1 < f.text.length; i++) {
        const logits = out[i].next.logits;
        let max = -Infinity;
        for (const v of logits.values()) max = Math.max(max, v);
        let sum = 0;
        for (const v of logits.values()) sum += Math.exp(v - max);
        nll += max + Math.log(sum) - logits.get(f.text[i + 1]);
      }
      const tokenized = f.tokenize === undefined ? undefined : Array.from(model.tokenize(f.tokenize), Number);
      results.push({ gguf: f.gguf, greedy, nll: nll / (f.text.length - 1), tokenized });
      await context.dispose();
      await model.dispose();
    } catch (err) {
      results.push({ gguf: f.gguf, error: String(err?.message ?? err) });
    }
  }
  return results;
}

run(JSON.parse(process.argv[2])).then(
  (r) => console.log(JSON.stringify(r)),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
