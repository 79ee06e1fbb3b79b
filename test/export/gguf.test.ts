// `sft export --format gguf`, checked by outside readers on tiny random models of every architecture:
// gguf-py (scripts/reference/gguf_check.py rebuilds llama.cpp's tensor layouts from the HF folder in
// numpy, as convert_hf_to_gguf.py does, and dequantizes what we stored with gguf.quants) and llama.cpp
// itself (node-llama-cpp: greedy tokens equal to sft's decode for f32/f16/q8_0, mean NLL within 1 %
// for q8_0, q4_k_m sane). Both come from side folders (deps.ts) and the tests skip, saying why,
// without them. The type choice, errors and atomic write need neither.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, writeFileSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { packageRoot, native } from '../../src/native/binding.js';
import { initModel } from '../../src/model/init.js';
import { expectedTensors, nativeConfigFromHf } from '../../src/model/hfconfig.js';
import { writeSafetensors } from '../../src/io/safetensors.js';
import { loadBase } from '../../src/model/load.js';
import { exportGguf, type GgufExportResult } from '../../src/export/gguf.js';
import { tensorTypes, useMoreBits } from '../../src/export/gguf-types.js';
import { writeFileStreamed } from '../../src/io/atomic.js';
import { f16ArrayToF32, f32ArrayToF16 } from '../../src/io/float16.js';
import { writeLoraAdapter } from '../../src/io/peft.js';
import { loraModulesOf } from '../../src/model/modules.js';
import { normalSampler } from '../../src/util/random.js';
import { BYTE_TO_CHAR } from '../../src/tokenizer/bpe-train.js';
import type { Arch, GgufTensorType } from '../../src/native/types.js';
import { runCli } from '../helpers/cli.js';
import { sink } from '../helpers/sink.js';
import { configFromObject } from '../../src/config/loader.js';
import { train } from '../../src/train/recipe.js';
import { builtInJinja } from '../../src/data/chat-template.js';
import { getTemplate } from '../../src/data/templates.js';
import { ggufPython, llamaCpp, runLlama } from './deps.js';
import { STORIES_REFERENCE, storiesModelDir } from '../serve/stories-model.js';

const root = mkdtempSync(join(tmpdir(), 'sft-gguf-'));
const TYPES = ['f32', 'f16', 'q8_0', 'q4_k_m'] as const;
// Rows of 256 so that q4_k_m stores q4_K/q6_K. Baichuan has 32 layers: llama.cpp applies RoPE to a
// baichuan model only at Baichuan-7B's depth (it tells 7B from 13B by the layer count); 64-wide rows
// there take q4_k_m's fallbacks (q5_0, q8_0).
const MODELS: { arch: Arch; hidden: number; layers: number; intermediate: number }[] = [
  { arch: 'llama', hidden: 256, layers: 2, intermediate: 512 },
  { arch: 'qwen2', hidden: 256, layers: 2, intermediate: 512 },
  { arch: 'bloom', hidden: 256, layers: 2, intermediate: 1024 },
  { arch: 'baichuan', hidden: 64, layers: 32, intermediate: 128 },
  { arch: 'baichuan2', hidden: 64, layers: 32, intermediate: 128 },
];
const say = () => {};
const exported = new Map<string, GgufExportResult>();
const file = (arch: string, type: string) => join(root, `${arch}-${type}.gguf`);

before(async () => {
  for (const m of MODELS) {
    initModel({ arch: m.arch, outDir: join(root, m.arch), hidden: m.hidden, layers: m.layers, heads: 4, intermediate: m.intermediate, vocab: 512, seed: 1, maxPosition: 256, force: true });
    for (const type of TYPES) {
      exported.set(file(m.arch, type), await exportGguf({ modelDir: join(root, m.arch), out: file(m.arch, type), type, device: 'cpu', say }));
    }
  }
});

after(() => rmSync(root, { recursive: true, force: true }));

/** Bytes [offset, offset + n) of a file. */
function readBytes(path: string, offset: number, n: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const b = new Uint8Array(n);
    readSync(fd, b, 0, n, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

const REL_RMSE: Record<string, number> = { Q8_0: 0.008, Q5_0: 0.05, Q4_K: 0.09, Q6_K: 0.025 };

test('gguf-py reads every architecture and type back: metadata, names, layouts and values as the HF folder has them', (t) => {
  const py = ggufPython();
  if ('skip' in py) return t.skip(py.skip);
  for (const m of MODELS) {
    const files = TYPES.map((type) => file(m.arch, type));
    const r: SpawnSyncReturns<string> = spawnSync(py.python, [join(packageRoot, 'scripts', 'reference', 'gguf_check.py'), join(root, m.arch), join(root, 'deq'), ...files], { encoding: 'utf8', maxBuffer: 1 << 26 });
    assert.equal(r.status, 0, r.stderr);
    const reports = JSON.parse(r.stdout) as { file: string; errors: string[]; metadata: { file_type: number; chat_template: string | null }; tensors: { name: string; type: string; shape: number[]; offset: number; bytes: number; max_err: number; rel_rmse: number; exact_f16?: boolean; exact_q8_0?: boolean; bound?: boolean }[] }[];
    for (const rep of reports) {
      const where = `${m.arch} ${rep.file}`;
      assert.deepEqual(rep.errors, [], where);
      assert.ok(rep.metadata.chat_template, `${where}: chat template written`);
      for (const x of rep.tensors) {
        const what = `${where} ${x.name} (${x.type})`;
        // Baichuan2's normalized head: the row norms are summed in another order than numpy's.
        if (x.type === 'F32') assert.ok(x.max_err <= (m.arch === 'baichuan2' && x.name === 'output.weight' ? 1e-7 : 0), `${what}: ${x.max_err}`);
        else if (x.type === 'F16') assert.equal(x.exact_f16, true, `${what}: the fp16 rounding of the f32 weights`);
        else assert.ok(x.rel_rmse < REL_RMSE[x.type], `${what}: relative RMS error ${x.rel_rmse}`);
        if (x.type === 'Q8_0') assert.ok(x.exact_q8_0 && x.bound, `${what}: gguf-py's reference Q8_0 bytes, error within d/2`);
        // sft's own decoder on the stored bytes gives what gguf-py's gives, bit for bit.
        const rows = x.shape.length === 1 ? 1 : x.shape[0];
        const cols = x.shape[x.shape.length - 1];
        const type = ({ F32: 'f32', F16: 'f16', Q8_0: 'q8_0', Q5_0: 'q5_0', Q4_K: 'q4_K', Q6_K: 'q6_K' } as Record<string, GgufTensorType>)[x.type];
        const ours = native().gguf.dequantize(type, readBytes(rep.file, x.offset, x.bytes), rows, cols);
        const theirs = readFileSync(join(root, 'deq', rep.file.split('/').pop()!.replace(/\.gguf$/, ''), `${x.name}.f32`));
        assert.ok(Buffer.from(ours.buffer, ours.byteOffset, ours.byteLength).equals(theirs), `${what}: sft's dequantization equals gguf-py's`);
      }
    }
  }
});

test("q4_k_m takes llama-quantize's mix: q6_K output and the use_more_bits layers' attn_v and ffn_down, shape fallbacks", () => {
  // 8 layers: use_more_bits picks 0 (first eighth), 7 (last eighth), 3 and 6 ((i - 1) % 3 == 2).
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].filter((i) => useMoreBits(i, 8)), [0, 3, 6, 7]);
  assert.deepEqual([...Array(32).keys()].filter((i) => useMoreBits(i, 32)), [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
  const mat = (name: string, rows: number, cols: number) => ({ name, shape: [rows, cols], data: () => new Float32Array() });
  const tensors = [mat('token_embd.weight', 64, 256), { name: 'output_norm.weight', shape: [256], data: () => new Float32Array() }];
  for (let l = 0; l < 8; l++) tensors.push(mat(`blk.${l}.attn_v.weight`, 256, 256), mat(`blk.${l}.ffn_down.weight`, 256, 768), mat(`blk.${l}.ffn_up.weight`, 768, 256));
  tensors.push(mat('output.weight', 64, 256));
  const types = tensorTypes('q4_k_m', tensors, 8, false);
  const of = (n: string) => types[tensors.findIndex((x) => x.name === n)];
  assert.equal(of('output.weight'), 'q6_K');
  assert.equal(of('token_embd.weight'), 'q4_K');
  assert.equal(of('output_norm.weight'), 'f32');
  for (let l = 0; l < 8; l++) {
    const more = [0, 3, 6, 7].includes(l) ? 'q6_K' : 'q4_K';
    assert.equal(of(`blk.${l}.attn_v.weight`), more, `attn_v ${l}`);
    assert.equal(of(`blk.${l}.ffn_down.weight`), more, `ffn_down ${l}`);
    assert.equal(of(`blk.${l}.ffn_up.weight`), 'q4_K');
  }
  // Tied head: token_embd is the output, q6_K; rows that are not whole 256-blocks fall back.
  const tied = tensorTypes('q4_k_m', [mat('token_embd.weight', 64, 256), mat('blk.0.ffn_up.weight', 96, 96), mat('blk.0.ffn_down.weight', 96, 100)], 1, true);
  assert.deepEqual(tied, ['q6_K', 'q5_0', 'f16']);
  assert.deepEqual(tensorTypes('q4_k_m', [mat('output.weight', 64, 96)], 1, false), ['q8_0']);
  assert.deepEqual(tensorTypes('q8_0', [mat('a', 4, 96), mat('b', 4, 100)], 1, false), ['q8_0', 'f16']);
});

test("sft's quantizers write ggml's bytes: q8_0, q5_0, q4_K and q6_K equal ggml's quantize_row_*_ref (libggml-base from node-llama-cpp)", async (t) => {
  const py = ggufPython();
  if ('skip' in py) return t.skip(py.skip);
  const llama = llamaCpp();
  if ('skip' in llama) return t.skip(llama.skip);
  const plat = `${process.platform}-${process.arch}`;
  const lib = join(llama.dir, 'node_modules', '@node-llama-cpp', plat, 'bins', plat, 'libggml-base.so');
  if (!existsSync(lib)) return t.skip(`no ${lib}`);
  // Gaussian weights and the blocks that take the quantizers' side paths: all zero, constant,
  // one outlier, all negative, all positive, values near the half-float subnormals.
  const normal = normalSampler(3);
  const rows = 64, cols = 512;
  const x = Float32Array.from({ length: rows * cols }, () => normal() * 0.02);
  x.fill(0, 0, 256);
  x.fill(0.5, 256, 512);
  x[1000] = 3;
  x.fill(-0.01, 2048, 2048 + 256);
  for (let i = 4096; i < 4096 + 512; i++) x[i] = 1e-6 * normal();
  for (let i = 8192; i < 8192 + 256; i++) x[i] = Math.abs(x[i]) + 0.1;
  const src = join(root, 'quant-in.f32'), ref = join(root, 'quant-ref.bin');
  writeFileSync(src, x);
  for (const type of ['q8_0', 'q5_0', 'q4_K', 'q6_K'] as const) {
    const ours = await native().gguf.quantize(type, x, rows, cols);
    const r: SpawnSyncReturns<string> = spawnSync(py.python, [join(packageRoot, 'scripts', 'reference', 'ggml_quant_ref.py'), lib, type, src, ref], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(Buffer.from(ours).equals(readFileSync(ref)), `${type}: bytes differ from ggml's`);
  }
});

test('encodings without outside readers: f16 rounds as src/io/float16.ts does (subnormals, overflow, ties), quantized errors within bounds', async () => {
  const g = native().gguf;
  const edge = [0, -0, 1, -1, 65504, 65519.99, 65520, 1e6, -1e6, 6.1e-5, 6.0e-8, 2.9e-8, 3e-8, 1e-10, 1 + 2 ** -11, 1 + 3 * 2 ** -11, Infinity, -Infinity, NaN];
  const normal = normalSampler(11);
  const x = Float32Array.from([...edge, ...Array.from({ length: 1024 - edge.length }, () => normal() * 10 ** (Math.floor(normal() * 3)))]);
  const bytes = await g.quantize('f16', x, 1, x.length);
  const want = f32ArrayToF16(x);
  assert.ok(Buffer.from(bytes).equals(Buffer.from(want.buffer)), 'f16 bits equal src/io/float16.ts');
  assert.deepEqual(Array.from(g.dequantize('f16', bytes, 1, x.length)), Array.from(f16ArrayToF32(want)));

  const rows = 16, cols = 512;
  const w = Float32Array.from({ length: rows * cols }, () => normal() * 0.02);
  const rms = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
  for (const [type, bound] of [['q8_0', 0.008], ['q5_0', 0.05], ['q4_K', 0.09], ['q6_K', 0.025]] as const) {
    const q = await g.quantize(type, w, rows, cols);
    assert.equal(q.length, rows * g.rowBytes(type, cols));
    const back = g.dequantize(type, q, rows, cols);
    const err = Math.sqrt(back.reduce((s, v, i) => s + (v - w[i]) ** 2, 0) / w.length) / rms;
    assert.ok(err < bound, `${type}: relative RMS error ${err}`);
  }
  assert.throws(() => g.rowBytes('q4_K', 100), /not a whole number of 256-value blocks/);
});

/** sft's greedy tokens (the native decode path, as `sft chat` at temperature 0), the gap between
 *  the two largest logits at each step, and the mean NLL of `text`. `f16`: the model's matrices
 *  rounded to fp16 first, the weights an f16 GGUF holds. */
async function sftRun(dir: string, prompt: number[], n: number, text: number[], f16 = false): Promise<{ greedy: number[]; gaps: number[]; nll: number }> {
  const { model } = await loadBase(dir);
  if (f16) for (const p of model.baseParams()) if (p.shape.length === 2) model.setTensor(p.name, f16ArrayToF32(f32ArrayToF16(model.getTensor(p.name))));
  model.plan({ kvSlots: 1, kvPositions: prompt.length + n + 1 });
  let logits = await model.feed(Int32Array.from(prompt));
  const greedy: number[] = [], gaps: number[] = [];
  for (let i = 0; i < n; i++) {
    const order = [...logits.keys()].sort((a, b) => logits[b] - logits[a]);
    greedy.push(order[0]);
    gaps.push(logits[order[0]] - logits[order[1]]);
    logits = await model.feed(Int32Array.of(greedy[i]));
  }
  const all = await model.logits(Int32Array.from(text), 1, text.length);
  const V = all.length / text.length;
  let nll = 0;
  for (let i = 0; i + 1 < text.length; i++) {
    const row = all.subarray(i * V, (i + 1) * V);
    const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
    nll += max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0)) - row[text[i + 1]];
  }
  return { greedy, gaps, nll: nll / (text.length - 1) };
}

/** Greedy sequences equal, except that they may part where sft's two best logits are within `tie`
 *  (a random model's near-ties, which rounding differences decide); returns how many agree. */
function assertSameGreedy(got: number[], want: { greedy: number[]; gaps: number[] }, tie: number, what: string): number {
  for (let i = 0; i < want.greedy.length; i++) {
    if (got[i] === want.greedy[i]) continue;
    assert.ok(want.gaps[i] < tie, `${what}: token ${i} is ${got[i]}, sft's ${want.greedy[i]} leads by ${want.gaps[i]} (tokens ${got.join()} vs ${want.greedy.join()})`);
    return i;
  }
  return want.greedy.length;
}

test('llama.cpp runs every architecture: greedy tokens equal sft\'s for f32 and f16, q8_0 NLL within 1 %, q4_k_m sane', async (t) => {
  const llama = llamaCpp();
  if ('skip' in llama) return t.skip(llama.skip);
  const prompt = [5, 6, 7, 8, 20, 30, 40, 50];
  const text = Array.from({ length: 64 }, (_, i) => (i * 37 + 11) % 500);
  const jobs = MODELS.flatMap((m) => TYPES.map((type) => ({ gguf: file(m.arch, type), prompt, tokens: 12, text })));
  const results = runLlama(llama.dir, jobs);
  for (const m of MODELS) {
    const ref = await sftRun(join(root, m.arch), prompt, 12, text);
    const ref16 = await sftRun(join(root, m.arch), prompt, 12, text, true);
    for (const type of TYPES) {
      const r = results.find((x) => x.gguf === file(m.arch, type))!;
      const what = `${m.arch} ${type}`;
      assert.equal(r.error, undefined, `${what}: ${r.error}`);
      const rel = Math.abs(r.nll! - ref.nll) / ref.nll;
      // f32 against sft in f32; f16 against sft on the same fp16-rounded weights (llama.cpp also
      // rounds activations to fp16 in its f16 matmuls); the quantized files by their NLL.
      const same = type === 'f32' ? assertSameGreedy(r.greedy!, ref, 1e-4, what)
        : type === 'f16' ? assertSameGreedy(r.greedy!, ref16, 2e-3, what)
          : r.greedy!.filter((x, i) => x === ref.greedy[i]).length;
      t.diagnostic(`${what}: ${same}/12 greedy tokens as sft's, NLL ${r.nll!.toFixed(4)} (sft ${ref.nll.toFixed(4)}, ${(100 * rel).toFixed(2)} %)`);
      if (type === 'f32') assert.ok(rel < 1e-4, `${what}: NLL ${r.nll} vs ${ref.nll}`);
      if (type === 'q8_0') assert.ok(rel < 0.01, `${what}: NLL ${r.nll} vs ${ref.nll}`);
      if (type === 'q4_k_m') assert.ok(Number.isFinite(r.nll) && rel < 0.05 && r.greedy!.length === 12, `${what}: NLL ${r.nll} vs ${ref.nll}`);
    }
  }
});

test('a pretrained sentencepiece model (stories260K): llama.cpp tokenizes as sft does and tells the published story', async (t) => {
  const found = await storiesModelDir();
  if ('skip' in found) return t.skip(found.skip);
  const llama = llamaCpp();
  if ('skip' in llama) return t.skip(llama.skip);
  const out = join(root, 'stories-q8_0.gguf');
  await exportGguf({ modelDir: found.dir, out, type: 'q8_0', device: 'cpu', say });
  const { loadTokenizer } = await import('../../src/tokenizer/tokenizer.js');
  const tok = await loadTokenizer(found.dir);
  const text = 'Once upon a time, there was a little girl named Lily. She saw 3 red balls!';
  const [r] = runLlama(llama.dir, [{ gguf: out, prompt: [tok.bosId!], tokens: 40, text: [tok.bosId!, ...tok.encodeText(text)], tokenize: text }]);
  assert.equal(r.error, undefined, r.error);
  assert.deepEqual(r.tokenized, tok.encodeText(text));
  assert.ok(STORIES_REFERENCE.startsWith(tok.decode(r.greedy!).trim().slice(0, 100)), tok.decode(r.greedy!));
});

/** A one-layer random model of `arch` whose vocabulary is `vocab`, with the given tokenizer files. */
function modelWithTokenizer(dir: string, arch: 'llama' | 'qwen2' | 'baichuan', vocab: number, files: Record<string, Buffer | string>): void {
  const hf: Record<string, unknown> = {
    architectures: [{ llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', baichuan: 'BaiChuanForCausalLM' }[arch]], model_type: arch,
    hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 2,
    vocab_size: vocab, max_position_embeddings: 256, rms_norm_eps: 1e-6, tie_word_embeddings: false,
  };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(hf));
  const normal = normalSampler(5);
  writeSafetensors(join(dir, 'model.safetensors'), expectedTensors(nativeConfigFromHf(hf)).map((t) => ({
    name: t.name, shape: t.shape, dtype: 'F32' as const, data: Float32Array.from({ length: t.shape.reduce((a, b) => a * b, 1) }, () => (t.shape.length === 1 ? 1 : 0.02 * normal())),
  })), { format: 'pt' });
  for (const [f, content] of Object.entries(files)) writeFileSync(join(dir, f), content);
}

test('real tokenizers (../shared/tokenizers): llama.cpp splits text into the ids sft does (gpt2 with pre qwen2; sentencepiece, Llama and Baichuan)', async (t) => {
  const llama = llamaCpp();
  if ('skip' in llama) return t.skip(llama.skip);
  const shared = join(packageRoot, '..', 'shared', 'tokenizers');
  const read = (f: string) => readFileSync(join(shared, f));
  const cases = [
    { name: 'qwen2', arch: 'qwen2' as const, vocab: 151936, needs: 'qwen2-reconstructed/tokenizer.json', files: () => ({ 'tokenizer.json': read('qwen2-reconstructed/tokenizer.json'), 'tokenizer_config.json': read('qwen2-reconstructed/tokenizer_config.json') }) },
    { name: 'llama-2', arch: 'llama' as const, vocab: 32000, needs: 'llama-2/tokenizer.model', files: () => ({ 'tokenizer.model': read('llama-2/tokenizer.model'), 'tokenizer.json': read('llama-2/tokenizer.json'), 'tokenizer_config.json': read('llama-2/tokenizer_config.json') }) },
    { name: 'baichuan-7b', arch: 'baichuan' as const, vocab: 64000, needs: 'baichuan-7b/tokenizer.model', files: () => ({ 'tokenizer.model': read('baichuan-7b/tokenizer.model'), 'tokenizer_config.json': JSON.stringify({ tokenizer_class: 'BaichuanTokenizer', bos_token: '<s>', eos_token: '</s>' }) }) },
  ];
  const text = 'Hello world! It\'s 2024: 12345 tokens,  two  spaces\nand a new line. 你好，世界。';
  const { loadTokenizer } = await import('../../src/tokenizer/tokenizer.js');
  const jobs = [];
  const want = new Map<string, number[]>();
  for (const c of cases) {
    if (!existsSync(join(shared, c.needs))) {
      t.diagnostic(`${c.name}: ${join(shared, c.needs)} absent, skipped`);
      continue;
    }
    const dir = join(root, `tok-${c.name}`);
    modelWithTokenizer(dir, c.arch, c.vocab, c.files());
    const out = join(root, `tok-${c.name}.gguf`);
    await exportGguf({ modelDir: dir, out, type: 'f16', device: 'cpu', say });
    want.set(out, (await loadTokenizer(dir)).encodeText(text));
    jobs.push({ gguf: out, prompt: [1], tokens: 1, text: [1, 2], tokenize: text });
  }
  if (!jobs.length) return t.skip(`no tokenizers in ${shared}`);
  for (const r of runLlama(llama.dir, jobs)) {
    assert.equal(r.error, undefined, `${r.gguf}: ${r.error}`);
    assert.deepEqual(r.tokenized, want.get(r.gguf), r.gguf);
  }
});

test('--adapter merges as `sft merge` does: the same tensors as exporting the merged folder', () => {
  const base = join(root, 'llama');
  const adapter = join(root, 'adapter');
  // A random adapter on every linear layer (B non-zero, so the merge changes the weights).
  const cfg = JSON.parse(readFileSync(join(base, 'config.json'), 'utf8'));
  const normal = normalSampler(7);
  const H = cfg.hidden_size, I = cfg.intermediate_size, kv = (H / cfg.num_attention_heads) * cfg.num_key_value_heads;
  const dims: Record<string, [number, number]> = { q_proj: [H, H], k_proj: [kv, H], v_proj: [kv, H], o_proj: [H, H], gate_proj: [I, H], up_proj: [I, H], down_proj: [H, I] };
  const tensors = [];
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    for (const [mod, [o, i]] of Object.entries(dims)) {
      const path = `model.layers.${l}.${['gate_proj', 'up_proj', 'down_proj'].includes(mod) ? 'mlp' : 'self_attn'}.${mod}`;
      const rand = (n: number, fan: number) => Float32Array.from({ length: n }, () => normal() / Math.sqrt(fan));
      tensors.push({ name: `${path}.lora_A.weight`, shape: [4, i], data: rand(4 * i, i) }, { name: `${path}.lora_B.weight`, shape: [o, 4], data: rand(o * 4, 4) });
    }
  }
  writeLoraAdapter(adapter, { tensors, config: { baseModel: base, r: 4, loraAlpha: 8, loraDropout: 0, targetModules: loraModulesOf('llama') } });
  const direct = join(root, 'direct.gguf');
  let r = runCli(['export', '--model', base, '--adapter', adapter, '--out', direct, '--type', 'f16']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /Wrote .*direct\.gguf.*merged in/);
  r = runCli(['merge', '--model', base, '--adapter', adapter, '--out', join(root, 'merged')]);
  assert.equal(r.status, 0, r.stderr);
  const viaMerge = join(root, 'via-merge.gguf');
  r = runCli(['export', '--model', join(root, 'merged'), '--out', viaMerge, '--type', 'f16']);
  assert.equal(r.status, 0, r.stderr);
  // Headers differ (general.name); the tensor data must not. The same data as the base's would mean
  // the adapter was ignored.
  const a = readFileSync(direct), b = readFileSync(viaMerge);
  const tail = exported.get(file('llama', 'f16'))!;
  const n = tail.bytes - tail.dataOffset;
  assert.ok(a.subarray(a.length - n).equals(b.subarray(b.length - n)), 'tensor data equal');
  assert.ok(!a.subarray(a.length - n).equals(readFileSync(file('llama', 'f16')).subarray(tail.dataOffset)), 'the adapter changed the weights');
});

test('a QLoRA adapter: --dequantized-base merges into dequant(NF4(W)) as `sft merge` does, and the training template becomes tokenizer.chat_template', async () => {
  const base = join(root, 'llama');
  const data = join(root, 'qlora.jsonl');
  writeFileSync(data, Array.from({ length: 6 }, (_, i) => JSON.stringify({ conversation: [{ human: `q${i}?`, assistant: `the answer is ${i * 3}` }] })).join('\n') + '\n');
  const adapter = join(root, 'qlora');
  const { config } = configFromObject({
    output_dir: adapter, model_name_or_path: base, train_file: data, template_name: 'qwen', max_seq_length: 64,
    per_device_train_batch_size: 3, max_steps: 2, learning_rate: 5e-3, lr_scheduler_type: 'constant', lora_rank: 4, lora_alpha: 8,
    lora_dropout: 0, save_strategy: 'no', disable_tqdm: true, seed: 2, bits: 4, train_mode: 'qlora',
  });
  await train(config, { print: () => {}, stream: sink() });
  const lines: string[] = [];
  const direct = await exportGguf({ modelDir: base, adapterDir: adapter, out: join(root, 'qlora.gguf'), type: 'f32', device: 'cpu', dequantizedBase: true, say: (l) => lines.push(l) });
  assert.match(lines.join('\n'), /trained with QLoRA.*\n.*dequantized NF4 base/);
  assert.match(lines.join('\n'), /chat_template: template "qwen", which the adapter was trained with/);
  const r = runCli(['merge', '--model', base, '--adapter', adapter, '--out', join(root, 'qlora-merged'), '--dequantized-base', '--score-samples', '0']);
  assert.equal(r.status, 0, r.stderr);
  const via = await exportGguf({ modelDir: join(root, 'qlora-merged'), out: join(root, 'qlora-via.gguf'), type: 'f32', device: 'cpu', say });
  const a = readFileSync(join(root, 'qlora.gguf')), b = readFileSync(join(root, 'qlora-via.gguf'));
  assert.ok(a.subarray(direct.dataOffset).equals(b.subarray(via.dataOffset)), 'tensor data equal');
  // The template is in the header as a GGUF string (u64 length + UTF-8).
  const jinja = Buffer.from(builtInJinja(getTemplate('qwen')), 'utf8');
  const key = Buffer.from('tokenizer.chat_template', 'utf8');
  const at = a.indexOf(key);
  assert.ok(at > 0 && at < direct.dataOffset);
  assert.equal(Number(a.readBigUInt64LE(at + key.length + 4)), jinja.length);
  assert.ok(a.subarray(at + key.length + 12, at + key.length + 12 + jinja.length).equals(jinja));
});

test('pytorch_model.bin checkpoints (one file, shards) export to the tensors of their safetensors copy', async () => {
  // The tiny Baichuan-7B of test/model/weights.test.ts, with a 64-token byte-level tokenizer.
  const tokenizer = JSON.stringify({
    version: '1.0', added_tokens: [], normalizer: null, post_processor: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab: Object.fromEntries(BYTE_TO_CHAR.slice(0, 64).map((c, i) => [c, i])), merges: [] },
  });
  const data: Buffer[] = [];
  for (const name of ['baichuan-st', 'baichuan-bin', 'baichuan-bin-sharded']) {
    const dir = join(root, name);
    cpSync(join(packageRoot, 'test', 'fixtures', 'torch-bin', name), dir, { recursive: true });
    writeFileSync(join(dir, 'tokenizer.json'), tokenizer);
    const out = join(root, `${name}.gguf`);
    const r = await exportGguf({ modelDir: dir, out, type: 'q8_0', device: 'cpu', say });
    data.push(readFileSync(out).subarray(r.dataOffset));
  }
  assert.ok(data[0].length > 0 && data[1].equals(data[0]) && data[2].equals(data[0]));
});

test('bad input: an unknown --type, an unsupported architecture, a missing tokenizer, an existing --out', async () => {
  const base = join(root, 'llama');
  let r = runCli(['export', '--model', base, '--out', join(root, 'x.gguf'), '--type', 'q3_k']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /--type q3_k: not a GGUF file type sft writes; choose one of f32, f16, q8_0, q4_k_m/);
  r = runCli(['export', '--model', base, '--out', file('llama', 'f32')]);
  assert.match(r.stderr, /exists; choose another file or pass --force/);

  const noTok = join(root, 'no-tokenizer');
  cpSync(base, noTok, { recursive: true });
  for (const f of readdirSync(noTok)) if (f.startsWith('tokenizer')) rmSync(join(noTok, f));
  await assert.rejects(exportGguf({ modelDir: noTok, out: join(root, 'y.gguf'), type: 'f16', device: 'cpu', say }), /no-tokenizer\/tokenizer\.json not found.*copy the base model's tokenizer files/);

  const gpt2 = join(root, 'gpt2');
  cpSync(base, gpt2, { recursive: true });
  writeFileSync(join(gpt2, 'config.json'), JSON.stringify({ architectures: ['GPT2LMHeadModel'], model_type: 'gpt2' }));
  await assert.rejects(exportGguf({ modelDir: gpt2, out: join(root, 'z.gguf'), type: 'f16', device: 'cpu', say }), /gpt2\/config\.json: unsupported architectures \["GPT2LMHeadModel"\]\. Supported: /);

  const unigram = join(root, 'unigram');
  cpSync(base, unigram, { recursive: true });
  writeFileSync(join(unigram, 'tokenizer.json'), JSON.stringify({ model: { type: 'Unigram', vocab: [] }, added_tokens: [] }));
  await assert.rejects(exportGguf({ modelDir: unigram, out: join(root, 'u.gguf'), type: 'f16', device: 'cpu', say }), /unigram\/tokenizer\.json is a Unigram tokenizer; .*put the model's tokenizer\.model beside it/);
  assert.ok(!existsSync(join(root, 'y.gguf')) && !existsSync(join(root, 'z.gguf')) && !existsSync(join(root, 'u.gguf')));
});

test('the file is written atomically: a write that fails leaves the earlier file and no temporary', async () => {
  const f = join(root, 'atomic.gguf');
  writeFileSync(f, 'earlier');
  await assert.rejects(writeFileStreamed(f, 100, async (put) => {
    put(new Uint8Array(10));
    throw new Error('quantizer failed');
  }), /quantizer failed/);
  assert.equal(readFileSync(f, 'utf8'), 'earlier');
  assert.deepEqual(readdirSync(root).filter((n) => n.includes('.tmp-')), []);
});
