// sft against PyTorch + peft on the same cores: the same random Llama-shaped models (HF folders), the
// same token batches, LoRA r 16 on every linear layer, fp32, the same thread count, each measurement
// in a process of its own, the two engines interleaved (order alternating) and medians reported.
// Appends a table (tokens/s, ratio, peak RSS, CPU, load average) to docs/BENCHMARKS.md. The decode
// row also runs llama.cpp (node-llama-cpp's CPU binaries) on the same model as f32 GGUF (sft export).
//
//   npm run bench:cpu-vs-torch
//   BENCH_REPEATS=5 BENCH_ONLY=decode BENCH_NO_APPEND=1 npm run bench:cpu-vs-torch
//
// The PyTorch side needs a Python with torch, transformers and peft: SFT_BENCH_PYTHON, else
// bench/cpu-vs-torch/.venv, which is created offline from the machine's pip index when missing.
// Without one, the sft column is measured alone and the note says why. llama.cpp: SFT_BENCH_LLAMA (a
// folder whose node_modules holds node-llama-cpp), else bench/cpu-vs-torch/.llama, installed with npm
// when missing.
import { appendFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { initModel } from '../../src/model/init.js';
import { exportGguf } from '../../src/export/gguf.js';
import { packageRoot } from '../../src/native/binding.js';
import { MODELS, WORKLOADS, tokenIds, workloadName, type Workload } from './workloads.js';
import type { Job, Result } from './sft-worker.js';

type Engine = 'sft' | 'torch' | 'llama';
const LLAMA_VERSION = '3.22.1';

const here = dirname(fileURLToPath(import.meta.url));
const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
const THREADS = Number(process.env.BENCH_THREADS ?? cpus().length);
const ONLY = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY, 'i') : undefined;

/** Steps (or sequences, or generations) measured after the warm-up, per workload and model size. */
function counts(w: Workload): { warmup: number; units: number } {
  if (w.kind === 'train') return w.model === '79M' ? { warmup: 1, units: 4 } : { warmup: 2, units: 8 };
  if (w.kind === 'score') return { warmup: 2, units: 10 };
  return { warmup: 1, units: 2 };
}

function findPython(): { python?: string; why?: string } {
  const ok = (py: string) => spawnSync(py, ['-c', 'import torch, transformers, peft, numpy'], { stdio: 'ignore' }).status === 0;
  const given = process.env.SFT_BENCH_PYTHON;
  if (given) return ok(given) ? { python: given } : { why: `SFT_BENCH_PYTHON=${given} cannot import torch, transformers, peft and numpy` };
  const venv = join(here, '.venv');
  const py = join(venv, 'bin', 'python');
  if (existsSync(py) && ok(py)) return { python: py };
  console.log(`creating ${venv} (torch, transformers, peft from the pip index) ...`);
  const make = spawnSync('python3', ['-m', 'venv', venv], { stdio: 'inherit' });
  if (make.status !== 0) return { why: 'python3 -m venv failed (is python3-venv installed?)' };
  const pip = spawnSync(join(venv, 'bin', 'pip'), ['install', '--quiet', 'torch', 'transformers', 'peft', 'safetensors', 'numpy'], { stdio: 'inherit', timeout: 20 * 60_000 });
  if (pip.status !== 0 || !ok(py)) return { why: 'pip could not install torch, transformers and peft (no local wheel index or network)' };
  return { python: py };
}

/** A folder with node-llama-cpp and its CPU binaries for this platform, installed when missing. */
function findLlama(): { dir?: string; why?: string } {
  const has = (dir: string) => existsSync(join(dir, 'node_modules', 'node-llama-cpp', 'dist', 'index.js'));
  const given = process.env.SFT_BENCH_LLAMA;
  if (given) return has(given) ? { dir: given } : { why: `SFT_BENCH_LLAMA=${given} has no node_modules/node-llama-cpp` };
  const dir = join(here, '.llama');
  if (has(dir)) return { dir };
  console.log(`installing node-llama-cpp ${LLAMA_VERSION} into ${dir} ...`);
  const binaries = `@node-llama-cpp/${process.platform}-${process.arch}@${LLAMA_VERSION}`;
  const npm = spawnSync('npm', ['install', '--no-save', '--omit=optional', '--no-audit', '--no-fund', '--prefix', dir, `node-llama-cpp@${LLAMA_VERSION}`, binaries], { stdio: 'inherit', timeout: 10 * 60_000 });
  if (npm.status !== 0 || !has(dir)) return { why: `npm could not install node-llama-cpp ${LLAMA_VERSION} and ${binaries} (offline?)` };
  return { dir };
}

/** The model as f32 GGUF, written by `sft export` (src/export/gguf.ts). */
async function toGguf(modelDir: string, out: string): Promise<{ file?: string; why?: string }> {
  try {
    await exportGguf({ modelDir, out, type: 'f32', device: 'cpu', say: () => {} });
    return { file: out };
  } catch (err) {
    return { why: `sft export failed: ${(err as Error).message}` };
  }
}

function cpuName(): string {
  let name = cpus()[0]?.model ?? 'unknown CPU';
  try {
    const flags = readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m)?.[1].split(/\s+/) ?? [];
    const has = ['avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16'].filter((f) => flags.includes(f));
    name += ` (${has.join(', ') || 'no AVX2'})`;
  } catch { /* not Linux */ }
  return name;
}

function measure(engine: Engine, job: Job, python?: string, llama?: { dir: string; gguf: string }): Result {
  const p = engine === 'sft'
    ? spawnSync(process.execPath, ['--import', 'tsx', join(here, 'sft-worker.ts'), JSON.stringify(job)], { encoding: 'utf8', cwd: packageRoot })
    : engine === 'llama'
      ? spawnSync(process.execPath, [join(here, 'llama-worker.mjs'), JSON.stringify({ ...job, gguf: llama!.gguf, llamaDir: llama!.dir })], { encoding: 'utf8' })
      : spawnSync(python!, [join(here, 'torch-worker.py'), JSON.stringify(job)], {
        encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: String(job.threads), MKL_NUM_THREADS: String(job.threads), TRANSFORMERS_VERBOSITY: 'error' },
      });
  if (p.status !== 0) throw new Error(`${engine} on ${workloadName(job.workload)} failed:\n${p.stderr.slice(-3000)}`);
  return JSON.parse(p.stdout.trim().split('\n').pop()!) as Result;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main(): Promise<void> {
  const { python, why } = findPython();
  if (!python) console.log(`PyTorch peer skipped: ${why}`);
  const root = mkdtempSync(join(tmpdir(), 'sft-vs-torch-'));
  const workloads = WORKLOADS.filter((w) => !ONLY || ONLY.test(workloadName(w)));
  const models = new Map<string, { dir: string; vocab: number; params: number }>();
  for (const m of MODELS.filter((m) => workloads.some((w) => w.model === m.id))) {
    const r = initModel({ arch: 'llama', outDir: join(root, m.id), hidden: m.hidden, layers: m.layers, heads: m.heads, kvHeads: m.kvHeads, intermediate: m.intermediate, vocab: m.vocab, seed: 0, maxPosition: 2048, force: true });
    models.set(m.id, { dir: r.dir, vocab: r.vocabSize, params: r.parameters });
  }
  const jobs = workloads.map((w, i) => {
    const m = models.get(w.model)!;
    const idsFile = join(root, `ids-${i}.bin`);
    writeFileSync(idsFile, tokenIds(w, m.vocab));
    return { modelDir: m.dir, workload: w, idsFile, threads: THREADS, ...counts(w) } satisfies Job;
  });

  // llama.cpp runs the decode rows only (its training has no LoRA peer of this shape).
  const ggufs = new Map<string, string>();
  let llamaWhy: string | undefined;
  let llamaDir: string | undefined;
  if (jobs.some((j) => j.workload.kind === 'decode')) {
    const found = findLlama();
    llamaDir = found.dir, llamaWhy = found.why;
    for (const m of new Set(jobs.filter((j) => j.workload.kind === 'decode').map((j) => j.workload.model))) {
      if (!llamaDir) break;
      const g = await toGguf(models.get(m)!.dir, join(root, `${m}.gguf`));
      if (g.file) ggufs.set(m, g.file);
      else llamaWhy = g.why;
    }
  }
  if (llamaWhy) console.log(`llama.cpp peer skipped: ${llamaWhy}`);

  const load0 = loadavg()[0];
  const results = jobs.map(() => ({ sft: [] as Result[], torch: [] as Result[], llama: [] as Result[] }));
  for (let rep = 0; rep < REPEATS; rep++) {
    jobs.forEach((job, i) => {
      const engines: Engine[] = ['sft'];
      if (python) engines.push('torch');
      const gguf = ggufs.get(job.workload.model);
      if (job.workload.kind === 'decode' && gguf && llamaDir) engines.push('llama');
      // Rotate which engine goes first, so none always runs on a warmer (or hotter) machine.
      const order = engines.map((_, k) => engines[(k + rep) % engines.length]);
      for (const engine of order) {
        const r = measure(engine, job, python, gguf && llamaDir ? { dir: llamaDir, gguf } : undefined);
        results[i][engine].push(r);
        console.log(`  rep ${rep + 1}/${REPEATS} ${engine.padEnd(5)} ${workloadName(job.workload)}: ${r.tokensPerSecond.toFixed(0)} tok/s, ${r.rssMiB.toFixed(0)} MiB`);
      }
    });
  }
  const load1 = loadavg()[0];

  const rows = jobs.map((job, i) => {
    const s = results[i].sft, t = results[i].torch, l = results[i].llama;
    const st = median(s.map((r) => r.tokensPerSecond));
    const tt = t.length ? median(t.map((r) => r.tokensPerSecond)) : NaN;
    const lt = l.length ? median(l.map((r) => r.tokensPerSecond)) : NaN;
    const check = [agreement(job.workload, s[0], t[0]), l.length ? `llama.cpp: ${agreement(job.workload, s[0], l[0])}` : ''].filter((x) => x && x !== '—').join('; ') || '—';
    const fmt = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : '—');
    const rss = (rs: Result[]) => (rs.length ? `${Math.round(median(rs.map((r) => r.rssMiB)))} MiB` : '—');
    const ratio = (a: number, b: number) => (Number.isFinite(b) ? (a / b).toFixed(2) : '—');
    return `| ${workloadName(job.workload)} | ${fmt(st)} | ${fmt(tt)} | ${ratio(st, tt)} | ${fmt(lt)} | ${ratio(st, lt)} | ${rss(s)} | ${rss(t)} | ${check} |`;
  });
  const table = [
    '| workload | sft tok/s | PyTorch+peft tok/s | sft / PyTorch | llama.cpp tok/s | sft / llama.cpp | sft peak RSS | PyTorch peak RSS | same computation |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows,
  ];
  console.log(table.join('\n'));
  if (process.env.BENCH_NO_APPEND) return;

  let commit = '';
  try { commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: packageRoot, encoding: 'utf8' }).trim(); } catch { /* not a checkout */ }
  let versions = '';
  if (python) versions = execFileSync(python, ['-c', 'import torch, transformers, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")'], { encoding: 'utf8' }).trim();
  const modelsText = [...models].map(([id, m]) => { const s = MODELS.find((x) => x.id === id)!; return `${id}: ${(m.params / 1e6).toFixed(1)} M parameters, hidden ${s.hidden}, ${s.layers} layers, ${s.heads} heads (${s.kvHeads} KV), MLP ${s.intermediate}, vocab ${m.vocab}`; }).join('; ');
  const section = [
    '',
    `### sft vs PyTorch + peft on the CPU — ${new Date().toISOString().slice(0, 10)}${commit ? ` (commit ${commit})` : ''}`,
    '',
    `Machine: ${cpuName()}, ${cpus().length} threads, ${Math.round(totalmem() / 2 ** 30)} GiB; ${THREADS} threads for each engine; load average ${load0.toFixed(2)} at the start, ${load1.toFixed(2)} at the end. Node ${process.version}${versions ? `; ${versions} (sdpa attention)` : `; PyTorch peer skipped: ${why}`}; ${llamaWhy ? `llama.cpp peer skipped: ${llamaWhy}` : ggufs.size ? `llama.cpp through node-llama-cpp ${LLAMA_VERSION} (CPU binaries, the model written as f32 GGUF by sft export), decode row only` : 'llama.cpp: no decode row'}.`,
    `Command: \`npm run bench:cpu-vs-torch\` (BENCH_REPEATS=${REPEATS}${ONLY ? `, BENCH_ONLY=${process.env.BENCH_ONLY}` : ''}). Medians of ${REPEATS} interleaved runs, each in its own process. Models: ${modelsText}; random weights, random token ids (every position a target). Training: LoRA r 16, alpha 32, dropout 0.05 on every linear layer but lm_head, fp32, AdamW, clipping 1.0; tokens/s = positions per second of forward + backward + update. Decode: prefill and greedy tokens at batch 1 (transformers' generate with its KV cache). "Same computation": the first training loss of both engines on the same weights and ids, or whether the greedy tokens are equal.`,
    '',
    ...table,
    '',
  ].join('\n');
  appendFileSync(join(packageRoot, 'docs', 'BENCHMARKS.md'), section);
  console.log('appended to docs/BENCHMARKS.md');
}

/** Evidence that both engines computed the same thing: first losses, or greedy tokens. */
function agreement(w: Workload, s: Result, t?: Result): string {
  if (!t) return '—';
  if (w.kind === 'train' && s.firstLoss !== undefined && t.firstLoss != null) return `loss ${s.firstLoss.toFixed(5)} vs ${t.firstLoss.toFixed(5)}`;
  if (w.kind === 'decode' && s.greedy && t.greedy) {
    const k = s.greedy.findIndex((x, i) => x !== t.greedy![i]);
    return k < 0 ? `${s.greedy.length} greedy tokens equal` : `greedy tokens equal up to ${k}`;
  }
  return 'same ids';
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
