// `sft serve` throughput: requests/s and generated tokens/s with 1, 8 and 32 concurrent clients (the openai
// client, streaming, on loopback) against a tiny random Llama on the CPU. Prints a table and appends it
// to docs/BENCHMARKS.md with the machine, date and command.
//
//   node --import tsx bench/serve.ts          (BENCH_TOKENS=64 tokens per request)
//
// The server runs in this process, as `sft serve` would run it; the clients share its event loop, which
// costs little next to the model. With the FIFO scheduler (one KV cache) requests are served one at a
// time, so more clients raise latency and time to first token, not throughput. A 7B shape on a GPU needs
// the CUDA kernels (issue 3); the bench says so instead of measuring it.
import { appendFileSync, existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { execSync } from 'node:child_process';
import OpenAI from 'openai';
import { initModel } from '../src/model/init.js';
import { loadModel } from '../src/model/load.js';
import { getTemplate } from '../src/data/templates.js';
import { FifoScheduler } from '../src/serve/scheduler.js';
import { startServer } from '../src/serve/server.js';
import { native, packageRoot } from '../src/native/binding.js';

const TOKENS = Number(process.env.BENCH_TOKENS ?? 64);
const CONCURRENCY = [1, 8, 32];
const SHAPE = { hidden: 256, layers: 4, heads: 8, kvHeads: 4, intermediate: 688, vocab: 2048 };

interface Row { clients: number; requests: number; tokens: number; seconds: number; ttftMs: number[]; latencyMs: number[] }

async function main() {
  // The load others put on the machine moves these numbers: it goes into the report.
  const load = loadavg()[0];
  const dir = join(mkdtempSync(join(tmpdir(), 'sft-bench-serve-')), 'tiny');
  const m = initModel({ arch: 'llama', outDir: dir, ...SHAPE, seed: 0, maxPosition: 2048, force: true });
  const loaded = await loadModel({ modelDir: dir });
  const server = await startServer({
    ctx: { id: 'tiny', tok: loaded.tok, template: getTemplate('default'), maxContext: 2048, vocabSize: loaded.native.vocabSize },
    scheduler: new FifoScheduler(loaded.model, loaded.tok),
    host: '127.0.0.1',
    port: 0,
  });
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0, timeout: 600_000 });

  /** One streamed request; every sampled token counts (usage), as the server reports it. */
  const one = async (i: number, row: Row): Promise<void> => {
    const t0 = performance.now();
    let first = 0;
    const stream = await client.completions.create({
      model: 'tiny',
      prompt: `Request ${i}: tell me a story about the number ${i * 7919}.`,
      max_tokens: TOKENS,
      temperature: 0.8,
      seed: i,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of stream) {
      if (!first && chunk.choices[0]?.text) first = performance.now();
      if (chunk.usage) row.tokens += chunk.usage.completion_tokens;
    }
    row.ttftMs.push((first || performance.now()) - t0);
    row.latencyMs.push(performance.now() - t0);
  };

  await one(-1, { clients: 0, requests: 0, tokens: 0, seconds: 0, ttftMs: [], latencyMs: [] }); // warm-up
  const rows: Row[] = [];
  for (const clients of CONCURRENCY) {
    const requests = Math.max(8, 2 * clients);
    const row: Row = { clients, requests, tokens: 0, seconds: 0, ttftMs: [], latencyMs: [] };
    let next = 0;
    const t0 = performance.now();
    // `clients` loops, each sending its next request when the previous one is answered.
    await Promise.all(Array.from({ length: clients }, async () => {
      while (next < requests) await one(next++, row);
    }));
    row.seconds = (performance.now() - t0) / 1000;
    rows.push(row);
    console.log(format(row));
  }
  await server.close();

  const backends = native().backends();
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  let commit = '';
  try { commit = execSync('git rev-parse --short HEAD', { cwd: packageRoot, encoding: 'utf8' }).trim(); } catch { /* not a git checkout */ }
  const section = [
    '',
    `### sft serve throughput — ${new Date().toISOString().slice(0, 10)}${commit ? ` (commit ${commit})` : ''}`,
    '',
    `Machine: ${cpu}, ${cpus().length} threads, ${Math.round(totalmem() / 2 ** 30)} GiB, load average ${load.toFixed(1)} at the start; Node ${process.version}. Command: \`node --import tsx bench/serve.ts\` (BENCH_TOKENS=${TOKENS}).`,
    `Model: random Llama (init-model), ${(m.parameters / 1e6).toFixed(2)} M params, hidden/layers/heads/kv/inter/vocab ${SHAPE.hidden}/${SHAPE.layers}/${SHAPE.heads}/${SHAPE.kvHeads}/${SHAPE.intermediate}/${m.vocabSize}, fp32, CPU engine.`,
    `Each client streams /v1/completions (≈20-token prompt, max_tokens ${TOKENS}, temperature 0.8) with the openai client on loopback and sends its next request when one ends.`,
    'Scheduler: FIFO over one KV cache (one request generates at a time), so throughput stays flat and waiting grows with clients.',
    '',
    '| clients | requests | tokens | wall | requests/s | tokens/s | mean time to first token | mean latency |',
    '|---|---|---|---|---|---|---|---|',
    ...rows.map(format),
    '',
    `7B shape on a GPU: not measured — ${backends.cudaDevices > 0 ? 'the engine has no CUDA kernels yet (issue 3)' : 'no GPU on this machine, and the engine has no CUDA kernels yet (issue 3)'}.`,
    '',
  ].join('\n');
  const file = join(packageRoot, 'docs', 'BENCHMARKS.md');
  if (!existsSync(file)) writeFileSync(file, '# Benchmarks\n\nResults are appended by the scripts in bench/; each section names its machine, date and command.\n');
  appendFileSync(file, section);
  console.log(`appended to ${file}`);
}

function format(r: Row): string {
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return `| ${r.clients} | ${r.requests} | ${r.tokens} | ${r.seconds.toFixed(2)} s | ${(r.requests / r.seconds).toFixed(2)} | ${Math.round(r.tokens / r.seconds)} | ${mean(r.ttftMs).toFixed(0)} ms | ${mean(r.latencyMs).toFixed(0)} ms |`;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
