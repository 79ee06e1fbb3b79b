// CPU LoRA training throughput and memory: the tiny demo as shipped (configs/tiny-demo.json shape) and a
// ~10M-parameter Llama on data/demo.jsonl (batch 8, LoRA r 16 on every linear layer), plus the 10M model at
// sequence 512 (conversations packed to length by repetition) with gradient checkpointing off and on,
// and at batch 1 x sequence 1024 (where attention dominates). Each row runs in its own process so its
// peak RSS is its own. Prints a table and appends it to docs/BENCHMARKS.md with the machine, date and
// command.
//
//   npm run bench:cpu            (node --import tsx bench/cpu-train.ts)
//   BENCH_STEPS=10               steps per row (default 30)
//   BENCH_ROWS=1,4               only these rows (indices into ROWS below)
//   BENCH_APPEND=0               print the table only (repeated runs for medians)
//   BENCH_BF16=1                 bf16: true (bf16 weights and activations, fp32 masters and moments)
//
// tokens/s counts every position the engine computed (padding included), as the progress bar does.
import { appendFileSync, mkdtempSync, existsSync, writeFileSync, readFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { execSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { initModel } from '../src/model/init.js';
import { configFromObject } from '../src/config/loader.js';
import { train } from '../src/train/recipe.js';
import { packageRoot } from '../src/native/binding.js';
import { sink } from '../test/helpers/sink.js';

interface Row { name: string; hidden: number; layers: number; heads: number; kvHeads: number; intermediate: number; vocab: number; batch: number; seq: number; checkpointing: boolean }
const ROWS: Row[] = [
  { name: 'tiny-demo (init-model defaults)', hidden: 256, layers: 4, heads: 8, kvHeads: 4, intermediate: 688, vocab: 2048, batch: 8, seq: 128, checkpointing: false },
  { name: '~10M Llama', hidden: 384, layers: 6, heads: 6, kvHeads: 2, intermediate: 1024, vocab: 4096, batch: 8, seq: 128, checkpointing: false },
  { name: '~10M Llama, seq 512', hidden: 384, layers: 6, heads: 6, kvHeads: 2, intermediate: 1024, vocab: 4096, batch: 8, seq: 512, checkpointing: false },
  { name: '~10M Llama, seq 512, gradient checkpointing', hidden: 384, layers: 6, heads: 6, kvHeads: 2, intermediate: 1024, vocab: 4096, batch: 8, seq: 512, checkpointing: true },
  { name: '~10M Llama, seq 1024', hidden: 384, layers: 6, heads: 6, kvHeads: 2, intermediate: 1024, vocab: 4096, batch: 1, seq: 1024, checkpointing: false },
];
const STEPS = Number(process.env.BENCH_STEPS ?? 30);
const BF16 = process.env.BENCH_BF16 === '1';

/** One row, in this process: prints one JSON line. */
async function runRow(r: Row): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'sft-bench-'));
  const m = initModel({ arch: 'llama', outDir: join(root, 'model'), hidden: r.hidden, layers: r.layers, heads: r.heads, kvHeads: r.kvHeads, intermediate: r.intermediate, vocab: r.vocab, seed: 0, maxPosition: 2048, force: true });
  let data = join(packageRoot, 'data', 'demo.jsonl');
  if (r.seq > 128) {
    // Long samples: each record's turns repeated past seq tokens (a turn is at least 4 with the
    // template), so that truncation to max_seq_length makes every sample exactly seq long.
    const lines = readFileSync(data, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    data = join(root, 'long.jsonl');
    writeFileSync(data, lines.map((c) => JSON.stringify({ conversation: Array.from({ length: Math.ceil(r.seq / 4) }, (_, i) => c.conversation[i % c.conversation.length]) })).join('\n') + '\n');
  }
  const { config } = configFromObject({
    output_dir: join(root, 'out'), model_name_or_path: join(root, 'model'), train_file: data, template_name: 'qwen',
    max_seq_length: r.seq, per_device_train_batch_size: r.batch, max_steps: STEPS, learning_rate: 1e-3, lora_rank: 16, lora_alpha: 32,
    lora_dropout: 0.05, logging_steps: STEPS, save_strategy: 'no', disable_tqdm: true, seed: 1, gradient_checkpointing: r.checkpointing,
    bf16: BF16,
  });
  const cpu0 = process.cpuUsage();
  const res = await train(config, { print: () => {}, stream: sink() });
  const cpu = process.cpuUsage(cpu0);  // user + system seconds of all threads: steadier than wall time on a shared machine
  console.log(JSON.stringify({ params: m.parameters, vocab: m.vocabSize, runtime: res.metrics.train_runtime, tps: res.metrics.train_tokens_per_second, cpuS: (cpu.user + cpu.system) / 1e6, rssMiB: process.resourceUsage().maxRSS / 1024 }));
}

async function main() {
  if (process.env.BENCH_ROW !== undefined) return runRow(ROWS[Number(process.env.BENCH_ROW)]);
  const lines: string[] = [];
  const only = process.env.BENCH_ROWS?.split(',').map(Number);
  ROWS.forEach((r, i) => {
    if (only && !only.includes(i)) return;
    const p = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], { env: { ...process.env, BENCH_ROW: String(i) }, encoding: 'utf8' });
    if (p.status !== 0) throw new Error(`row ${r.name} failed: ${p.stderr}`);
    const o = JSON.parse(p.stdout.trim().split('\n').pop()!);
    const line = `| ${r.name} | ${(o.params / 1e6).toFixed(2)} M | ${r.hidden}/${r.layers}/${r.heads}/${r.kvHeads}/${r.intermediate}/${o.vocab} | ${r.batch} x ≤${r.seq} | ${STEPS} | ${o.runtime.toFixed(1)} s | ${Math.round(o.tps)} | ${o.cpuS.toFixed(1)} s | ${Math.round(o.rssMiB)} MiB |`;
    console.log(line);
    lines.push(line);
  });
  if (process.env.BENCH_APPEND === '0') return;
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  let commit = '';
  try { commit = execSync('git rev-parse --short HEAD', { cwd: packageRoot, encoding: 'utf8' }).trim(); } catch { /* not a git checkout */ }
  const section = [
    '',
    `### CPU LoRA training — ${new Date().toISOString().slice(0, 10)}${commit ? ` (commit ${commit})` : ''}`,
    '',
    `Machine: ${cpu}, ${cpus().length} threads, ${Math.round(totalmem() / 2 ** 30)} GiB; Node ${process.version}. Command: \`npm run bench:cpu\` (BENCH_STEPS=${STEPS}${process.env.BENCH_ROWS ? `, BENCH_ROWS=${process.env.BENCH_ROWS}` : ''}).`,
    `Data: data/demo.jsonl (rows past seq 128: each conversation's turns repeated past the length, truncated to it), qwen template, batches padded to their longest sample, LoRA r 16 on all linear layers, dropout 0.05, ${BF16 ? 'bf16 (bf16: true)' : 'fp32'}. CPU time: user + system seconds of all threads while training. Peak RSS is the whole process (Node + model + data).`,
    '',
    '| model | params | hidden/layers/heads/kv/inter/vocab | batch x seq | steps | runtime | tokens/s | CPU time | peak RSS |',
    '|---|---|---|---|---|---|---|---|---|',
    ...lines,
    '',
  ].join('\n');
  const file = join(packageRoot, 'docs', 'BENCHMARKS.md');
  if (!existsSync(file)) writeFileSync(file, '# Benchmarks\n\nResults are appended by the scripts in bench/; each section names its machine, date and command.\n');
  appendFileSync(file, section);
  console.log(`appended to ${file}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
