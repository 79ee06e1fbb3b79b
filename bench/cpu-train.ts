// CPU LoRA training throughput: the tiny demo as shipped (configs/tiny-demo.json shape) and a
// ~10M-parameter Llama, both on data/demo.jsonl, batch 8 x seq <= 128, LoRA r 16 on every linear
// layer. Prints a table and appends it to docs/BENCHMARKS.md with the machine, date and command.
//
//   npm run bench:cpu            (node --import tsx bench/cpu-train.ts)
//
// tokens/s counts every position the engine computed (padding included), as the progress bar does.
import { appendFileSync, mkdtempSync, existsSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { execSync } from 'node:child_process';
import { initModel } from '../src/model/init.js';
import { configFromObject } from '../src/config/loader.js';
import { train } from '../src/train/recipe.js';
import { packageRoot } from '../src/native/binding.js';
import { sink } from '../test/helpers/sink.js';

interface Shape { name: string; hidden: number; layers: number; heads: number; kvHeads: number; intermediate: number; vocab: number }
const SHAPES: Shape[] = [
  { name: 'tiny-demo (init-model defaults)', hidden: 256, layers: 4, heads: 8, kvHeads: 4, intermediate: 688, vocab: 2048 },
  { name: '~10M Llama', hidden: 384, layers: 6, heads: 6, kvHeads: 2, intermediate: 1024, vocab: 4096 },
];
const STEPS = Number(process.env.BENCH_STEPS ?? 40);

async function main() {
  const root = mkdtempSync(join(tmpdir(), 'sft-bench-'));
  const rows: string[] = [];
  for (const s of SHAPES) {
    const dir = join(root, s.name.replace(/\W+/g, '-'));
    const m = initModel({ arch: 'llama', outDir: dir, hidden: s.hidden, layers: s.layers, heads: s.heads, kvHeads: s.kvHeads, intermediate: s.intermediate, vocab: s.vocab, seed: 0, maxPosition: 2048, force: true });
    const { config } = configFromObject({
      output_dir: join(dir, 'out'), model_name_or_path: dir, train_file: join(packageRoot, 'data', 'demo.jsonl'), template_name: 'qwen',
      max_seq_length: 128, per_device_train_batch_size: 8, max_steps: STEPS, learning_rate: 1e-3, lora_rank: 16, lora_alpha: 32,
      lora_dropout: 0.05, logging_steps: STEPS, save_strategy: 'no', disable_tqdm: true, seed: 1,
    });
    const r = await train(config, { print: () => {}, stream: sink() });
    const tps = r.metrics.train_tokens_per_second;
    const line = `| ${s.name} | ${(m.parameters / 1e6).toFixed(2)} M | ${s.hidden}/${s.layers}/${s.heads}/${s.kvHeads}/${s.intermediate}/${m.vocabSize} | ${STEPS} | ${r.metrics.train_runtime.toFixed(1)} s | ${Math.round(tps)} |`;
    console.log(line);
    rows.push(line);
  }
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  let commit = '';
  try { commit = execSync('git rev-parse --short HEAD', { cwd: packageRoot, encoding: 'utf8' }).trim(); } catch { /* not a git checkout */ }
  const section = [
    '',
    `### CPU LoRA training — ${new Date().toISOString().slice(0, 10)}${commit ? ` (commit ${commit})` : ''}`,
    '',
    `Machine: ${cpu}, ${cpus().length} threads, ${Math.round(totalmem() / 2 ** 30)} GiB; Node ${process.version}. Command: \`npm run bench:cpu\` (BENCH_STEPS=${STEPS}).`,
    'Data: data/demo.jsonl, qwen template, batch 8, max_seq_length 128 (batches padded to their longest sample), LoRA r 16 on all linear layers, dropout 0.05, fp32.',
    '',
    '| model | params | hidden/layers/heads/kv/inter/vocab | steps | runtime | tokens/s |',
    '|---|---|---|---|---|---|',
    ...rows,
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
