// `sft serve` throughput: requests/s and generated tokens/s with 1, 8 and 32 concurrent clients (the openai
// client, streaming, on loopback) against a tiny random Llama on the CPU, for both schedulers in the same
// run, interleaved (FIFO over one KV cache, and continuous batching over 8 slots), twice each; medians.
// Prints a table and appends it to docs/BENCHMARKS.md with the machine, date and command.
//
//   node --import tsx bench/serve.ts          (BENCH_TOKENS=64 tokens per request, BENCH_REPS=2)
//   BENCH_MODEL=100m BENCH_CLIENTS=1,8 node --import tsx bench/serve.ts
//
// BENCH_MODEL: tiny (3.95 M params, 16 MB: its weights stay in the CPU's caches, so a decode step is
// compute and overhead bound) or 100m (~100 M params, 400 MB: streamed from memory every step, as any
// real model is on a CPU; batching then shares each weight read among the running requests).
//
// The server runs in this process, as `sft serve` would run it; the clients share its event loop, which
// costs little next to the model. FIFO serves one request at a time, so more clients raise waiting, not
// throughput; continuous batching feeds every running request's next token in one engine step.
import { appendFileSync, existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { execSync } from 'node:child_process';
import OpenAI from 'openai';
import { initModel } from '../src/model/init.js';
import { loadModel } from '../src/model/load.js';
import { getTemplate } from '../src/data/templates.js';
import { FifoScheduler, type Scheduler } from '../src/serve/scheduler.js';
import { BatchScheduler } from '../src/serve/batch-scheduler.js';
import { startServer } from '../src/serve/server.js';
import { native, packageRoot } from '../src/native/binding.js';

const TOKENS = Number(process.env.BENCH_TOKENS ?? 64);
const CONCURRENCY = (process.env.BENCH_CLIENTS ?? '1,8,32').split(',').map(Number);
const REPS = Number(process.env.BENCH_REPS ?? 2);
type Kind = 'fifo' | 'continuous';
const SHAPES = {
  tiny: { hidden: 256, layers: 4, heads: 8, kvHeads: 4, intermediate: 688, vocab: 2048 },
  '100m': { hidden: 768, layers: 12, heads: 12, kvHeads: 12, intermediate: 2048, vocab: 2048 },
};
const MODEL = (process.env.BENCH_MODEL ?? 'tiny') as keyof typeof SHAPES;
if (!(MODEL in SHAPES)) throw new Error(`BENCH_MODEL must be one of ${Object.keys(SHAPES).join(', ')}`);
const SHAPE = SHAPES[MODEL];

interface Row { kind: Kind; clients: number; requests: number; tokens: number; seconds: number; ttftMs: number[]; latencyMs: number[] }

async function main() {
  // The load others put on the machine moves these numbers: it goes into the report.
  const load = loadavg()[0];
  const dir = join(mkdtempSync(join(tmpdir(), 'sft-bench-serve-')), 'tiny');
  const m = initModel({ arch: 'llama', outDir: dir, ...SHAPE, seed: 0, maxPosition: 2048, force: true });
  const loaded = await loadModel({ modelDir: dir });
  const ctx = { id: 'tiny', tok: loaded.tok, template: getTemplate('default'), maxContext: 2048, vocabSize: loaded.native.vocabSize };

  /** One streamed request; every sampled token counts (usage), as the server reports it. */
  const one = async (client: OpenAI, i: number, row: Row): Promise<void> => {
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

  /** `clients` loops on a fresh server and scheduler, each sending its next request when one is answered. */
  const measure = async (kind: Kind, clients: number): Promise<Row> => {
    const scheduler: Scheduler = kind === 'fifo' ? new FifoScheduler(loaded.model, loaded.tok) : new BatchScheduler(loaded.model, loaded.tok, { maxBatch: 8 });
    const server = await startServer({ ctx, scheduler, host: '127.0.0.1', port: 0 });
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0, timeout: 600_000 });
    const requests = Math.max(8, 2 * clients);
    const row: Row = { kind, clients, requests, tokens: 0, seconds: 0, ttftMs: [], latencyMs: [] };
    let next = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: clients }, async () => {
      while (next < requests) await one(client, next++, row);
    }));
    row.seconds = (performance.now() - t0) / 1000;
    await server.close();
    return row;
  };

  await measure('fifo', 1); // warm-up
  const runs: Row[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    for (const clients of CONCURRENCY) {
      // Interleaved: the two schedulers back to back at each concurrency, the order swapped every rep.
      for (const kind of (rep % 2 ? ['continuous', 'fifo'] : ['fifo', 'continuous']) as Kind[]) {
        const row = await measure(kind, clients);
        runs.push(row);
        console.log(format(row));
      }
    }
  }
  // The median run (by tokens/s) of each scheduler and concurrency.
  const rows: Row[] = [];
  for (const kind of ['fifo', 'continuous'] as Kind[]) {
    for (const clients of CONCURRENCY) {
      const mine = runs.filter((r) => r.kind === kind && r.clients === clients).sort((x, y) => x.tokens / x.seconds - y.tokens / y.seconds);
      rows.push(mine[Math.floor((mine.length - 1) / 2)]);
    }
  }
  const tps = (r: Row) => r.tokens / r.seconds;
  const single = tps(rows.find((r) => r.kind === 'continuous' && r.clients === 1)!);
  const at8 = tps(rows.find((r) => r.kind === 'continuous' && r.clients === 8)!);

  const backends = native().backends();
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  let commit = '';
  try { commit = execSync('git rev-parse --short HEAD', { cwd: packageRoot, encoding: 'utf8' }).trim(); } catch { /* not a git checkout */ }
  const section = [
    '',
    `### sft serve throughput — ${new Date().toISOString().slice(0, 10)}${commit ? ` (commit ${commit})` : ''}`,
    '',
    `Machine: ${cpu}, ${cpus().length} threads, ${Math.round(totalmem() / 2 ** 30)} GiB, load average ${load.toFixed(1)} at the start; Node ${process.version}. Command: \`BENCH_MODEL=${MODEL} BENCH_CLIENTS=${CONCURRENCY.join(',')} BENCH_TOKENS=${TOKENS} BENCH_REPS=${REPS} node --import tsx bench/serve.ts\`.`,
    `Model: random Llama (init-model), ${(m.parameters / 1e6).toFixed(2)} M params, hidden/layers/heads/kv/inter/vocab ${SHAPE.hidden}/${SHAPE.layers}/${SHAPE.heads}/${SHAPE.kvHeads}/${SHAPE.intermediate}/${m.vocabSize}, fp32, CPU engine.`,
    `Each client streams /v1/completions (≈20-token prompt, max_tokens ${TOKENS}, temperature 0.8) with the openai client on loopback and sends its next request when one ends.`,
    `Schedulers: fifo (one KV cache, one request at a time) and continuous (batch-scheduler.ts: 8 slots, one decode step for all running requests), interleaved, ${REPS} runs each; the median run by tokens/s.`,
    '',
    '| scheduler | clients | requests | tokens | wall | requests/s | tokens/s | mean time to first token | mean latency |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map(format),
    '',
    `Continuous batching at 8 clients: ${(at8 / single).toFixed(2)}x its single-client tokens/s (target >= 3x).`,
    `7B shape on a GPU: not measured here (${backends.cudaDevices > 0 ? 'the serve bench runs the CPU engine' : 'no GPU on this machine'}); a GPU serves one request at a time until the CUDA decode step is checked on one.`,
    '',
  ].join('\n');
  const file = join(packageRoot, 'docs', 'BENCHMARKS.md');
  if (!existsSync(file)) writeFileSync(file, '# Benchmarks\n\nResults are appended by the scripts in bench/; each section names its machine, date and command.\n');
  appendFileSync(file, section);
  console.log(`appended to ${file}`);
}

function format(r: Row): string {
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return `| ${r.kind} | ${r.clients} | ${r.requests} | ${r.tokens} | ${r.seconds.toFixed(2)} s | ${(r.requests / r.seconds).toFixed(2)} | ${Math.round(r.tokens / r.seconds)} | ${mean(r.ttftMs).toFixed(0)} ms | ${mean(r.latencyMs).toFixed(0)} ms |`;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
