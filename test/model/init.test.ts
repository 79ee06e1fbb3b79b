// `sft init-model`: the folder it writes loads back through the same readers a downloaded checkpoint goes through.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import yargs from 'yargs';
import { Template } from '@huggingface/jinja';
import initModelCommand from '../../src/cli/commands/init-model.js';
import { initModel, type InitModelOptions } from '../../src/model/init.js';
import { expectedTensors, readHfConfig } from '../../src/model/hfconfig.js';
import { listCheckpointTensors } from '../../src/model/weights.js';
import { readSafetensorsHeader, readTensorF32 } from '../../src/io/safetensors.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { loadBase } from '../../src/model/load.js';
import { loraModulesOf } from '../../src/model/modules.js';
import type { Arch } from '../../src/native/types.js';
import { scoreIds } from '../../src/chat/score.js';
import { mulberry32 } from '../../src/util/random.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-init-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const TEXTS = [
  '你好！有什么可以帮你的吗？', 'Hello! How can I help you today?', '中国的首都是北京。', 'The capital of China is Beijing.',
  '今天天气很好，我们去公园散步吧。', 'The weather is nice today, so let us take a walk in the park.',
];
const small = (arch: Arch, out: string, over: Partial<InitModelOptions> = {}): InitModelOptions => ({
  arch, outDir: path.join(tmp, out), hidden: 32, layers: 2, heads: 4, intermediate: 48, vocab: 400,
  seed: 1, maxPosition: 256, force: false, texts: [...TEXTS, ...TEXTS, ...TEXTS], ...over,
});

// What each arch's files must say, written out from the published configs (SPEC.md §1, §5).
const EXPECT: Record<Arch, { architectures: string[]; modelType: string; eos: string; pad: string; bos?: string; tied: boolean; kv: number }> = {
  llama: { architectures: ['LlamaForCausalLM'], modelType: 'llama', eos: '</s>', pad: '<pad>', bos: '<s>', tied: false, kv: 2 },
  baichuan: { architectures: ['BaiChuanForCausalLM'], modelType: 'baichuan', eos: '</s>', pad: '<pad>', bos: '<s>', tied: false, kv: 4 },
  baichuan2: { architectures: ['BaichuanForCausalLM'], modelType: 'baichuan', eos: '</s>', pad: '<pad>', bos: '<s>', tied: false, kv: 4 },
  qwen2: { architectures: ['Qwen2ForCausalLM'], modelType: 'qwen2', eos: '<|im_end|>', pad: '<|endoftext|>', tied: true, kv: 2 },
  bloom: { architectures: ['BloomForCausalLM'], modelType: 'bloom', eos: '</s>', pad: '<pad>', bos: '<s>', tied: true, kv: 4 },
};

for (const arch of ['llama', 'baichuan', 'baichuan2', 'qwen2'] as const) {
  test(`${arch}: config, weights and tokenizer load back`, async () => {
    const opts = small(arch, arch);
    const r = initModel(opts);
    const dir = opts.outDir;
    const e = EXPECT[arch];
    assert.deepEqual(fs.readdirSync(dir).sort(), ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);

    const { hf, native } = readHfConfig(dir);
    assert.deepEqual(hf.architectures, e.architectures);
    assert.equal(hf.model_type, e.modelType);
    assert.equal(native.arch, arch);
    assert.equal(native.hiddenSize, 32);
    assert.equal(native.numLayers, 2);
    assert.equal(native.numKvHeads, e.kv);
    assert.equal(native.tieWordEmbeddings, e.tied);
    assert.equal(hf.max_position_embeddings, 256);
    assert.equal(native.vocabSize % 64, 0);
    assert.equal(native.vocabSize, Math.ceil(r.tokenizerSize / 64) * 64);
    assert.ok(r.tokenizerSize <= 400 && r.tokenizerSize > 300, `tokenizer size ${r.tokenizerSize}`);

    // Weights: exactly the tensors the arch has, F32, norms 1, the rest small and random.
    const sources = listCheckpointTensors(dir);
    const want = expectedTensors(native);
    assert.deepEqual(sources.map((s) => `${s.name} ${s.shape}`).sort(), want.map((t) => `${t.name} ${t.shape}`).sort());
    assert.ok(sources.every((s) => s.dtype === 'F32'));
    assert.equal(sources.some((s) => s.name === 'lm_head.weight'), !e.tied);
    assert.equal(sources.some((s) => s.name.endsWith('q_proj.bias')), arch === 'qwen2');
    assert.equal(sources.some((s) => s.name.endsWith('W_pack.weight')), arch.startsWith('baichuan'));
    const file = path.join(dir, 'model.safetensors');
    const header = readSafetensorsHeader(file);
    assert.deepEqual(header.metadata, { format: 'pt' });
    assert.ok(readTensorF32(file, header, 'model.norm.weight').every((x) => x === 1));
    const emb = readTensorF32(file, header, 'model.embed_tokens.weight');
    const std = Math.sqrt(emb.reduce((a, x) => a + x * x, 0) / emb.length);
    // Untied: N(0, 1). Tied (the head too): N(0, 1/hidden), as a matrix, so logits start near unit scale.
    const wantStd = e.tied ? 1 / Math.sqrt(native.hiddenSize) : 1;
    assert.ok(Math.abs(std / wantStd - 1) < 0.05, `embedding std ${std} (expected ${wantStd})`);
    const down = readTensorF32(file, header, 'model.layers.0.mlp.down_proj.weight');
    const downStd = Math.sqrt(down.reduce((a, x) => a + x * x, 0) / down.length);
    const fanIn = native.intermediateSize;
    assert.ok(Math.abs(downStd * Math.sqrt(fanIn) - 1) < 0.05, `down_proj std ${downStd} (expected 1/sqrt(${fanIn}))`);
    assert.equal(r.parameters, want.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0));

    // Tokenizer: specials are single ids, pad differs from eos, text round-trips.
    const tok = await loadTokenizer(dir);
    assert.equal(tok.vocabSize, r.tokenizerSize);
    assert.ok(tok.vocabSize <= native.vocabSize);
    assert.equal(tok.eosToken, e.eos);
    assert.equal(tok.padToken, e.pad);
    assert.equal(tok.bosToken, e.bos);
    assert.notEqual(tok.padId, tok.eosId);
    assert.equal(hf.eos_token_id, tok.eosId);
    assert.equal(hf.pad_token_id, tok.padId);
    for (const s of ['<unk>', '<s>', '</s>', '<pad>', '<reserved_102>', '<reserved_103>', '<reserved_106>', '<reserved_107>', '<|im_start|>', '<|im_end|>', '<|endoftext|>']) {
      const ids = tok.encode(s);
      assert.equal(ids.length, 1, `${s} -> ${ids}`);
      assert.equal(tok.tokenToId(s), ids[0]);
    }
    for (const s of ['你好，世界！今天天气很好。', 'Hello, world! How are you?', '北京 Beijing 2024年 🙂', '<|im_start|>user\n你好<|im_end|>\n']) {
      assert.equal(tok.decode(tok.encode(s)), s);
    }
    const gen = JSON.parse(fs.readFileSync(path.join(dir, 'generation_config.json'), 'utf8'));
    assert.equal(gen.pad_token_id, tok.padId);
    if (arch === 'baichuan2') {
      assert.equal(gen.user_token_id, tok.tokenToId('<reserved_106>'));
      assert.equal(gen.assistant_token_id, tok.tokenToId('<reserved_107>'));
    }
  });
}

// Expected renderings written by hand from each family's chat format.
const RENDERED: Record<Arch, string> = {
  qwen2: '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\nHi<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n',
  llama: '<s>[INST] 你好 [/INST] Hi </s><s>[INST] Bye [/INST]',
  baichuan: '<reserved_102>你好<reserved_103>Hi</s><reserved_102>Bye<reserved_103>',
  baichuan2: '<reserved_106>你好<reserved_107>Hi</s><reserved_106>Bye<reserved_107>',
  bloom: 'User: 你好\nAssistant: Hi </s>User: Bye\nAssistant: ',
};

test('chat templates render each family\'s format', async () => {
  const messages = [{ role: 'user', content: '你好' }, { role: 'assistant', content: 'Hi' }, { role: 'user', content: 'Bye' }];
  for (const arch of ['llama', 'baichuan', 'baichuan2', 'qwen2', 'bloom'] as const) {
    const dir = path.join(tmp, arch);
    if (!fs.existsSync(dir)) initModel(small(arch, arch));
    const tok = await loadTokenizer(dir);
    const out = new Template(tok.chatTemplate!).render({ messages, add_generation_prompt: true, bos_token: tok.bosToken ?? '', eos_token: tok.eosToken });
    assert.equal(out, RENDERED[arch], arch);
  }
  // System prompts: Llama-2 folds it into the first [INST]; Qwen2 uses it instead of the default.
  const llama = await loadTokenizer(path.join(tmp, 'llama'));
  const sys = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }];
  assert.equal(new Template(llama.chatTemplate!).render({ messages: sys, bos_token: '<s>', eos_token: '</s>' }), '<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]');
  const qwen = await loadTokenizer(path.join(tmp, 'qwen2'));
  assert.equal(new Template(qwen.chatTemplate!).render({ messages: sys, add_generation_prompt: false }), '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n');
});

// Bloom's layout differs from the Llama family's throughout (names, biases, LayerNorm, no RoPE).
test('bloom: config, weights and tokenizer load back, and the engine runs it', async () => {
  const opts = small('bloom', 'bloom-load', { heads: 4, intermediate: 48 });
  const r = initModel(opts);
  const dir = opts.outDir;
  const e = EXPECT.bloom;
  const { hf, native } = readHfConfig(dir);
  assert.deepEqual(hf.architectures, e.architectures);
  assert.equal(hf.model_type, 'bloom');
  // bigscience/bloom-560m's keys: n_head / n_layer, layer_norm_epsilon, no rotary or MLP-width keys.
  assert.equal(hf.n_head, 4);
  assert.equal(hf.n_layer, 2);
  assert.equal(hf.layer_norm_epsilon, 1e-5);
  assert.equal(hf.apply_residual_connection_post_layernorm, false);
  assert.equal(hf.seq_length, 256);
  for (const k of ['intermediate_size', 'hidden_act', 'rope_theta', 'rms_norm_eps']) assert.ok(!(k in hf), k);
  assert.deepEqual([native.arch, native.hiddenSize, native.intermediateSize, native.numHeads, native.numKvHeads, native.tieWordEmbeddings], ['bloom', 32, 128, 4, 4, true]);
  const sources = listCheckpointTensors(dir);
  assert.deepEqual(sources.map((s) => `${s.name} ${s.shape}`).sort(), expectedTensors(native).map((t) => `${t.name} ${t.shape}`).sort());
  assert.ok(sources.some((s) => s.name === 'transformer.h.1.self_attention.query_key_value.bias' && s.shape.join() === '96'));
  assert.ok(!sources.some((s) => s.name === 'lm_head.weight'));
  const file = path.join(dir, 'model.safetensors');
  const header = readSafetensorsHeader(file);
  for (const n of ['transformer.ln_f.weight', 'transformer.word_embeddings_layernorm.weight', 'transformer.h.0.input_layernorm.weight']) {
    assert.ok(readTensorF32(file, header, n).every((x) => x === 1), n);
  }
  const tok = await loadTokenizer(dir);
  assert.equal(tok.eosToken, '</s>');
  assert.equal(tok.padToken, '<pad>');
  assert.equal(hf.eos_token_id, tok.eosId);
  assert.equal(hf.pad_token_id, tok.padId);
  assert.equal(tok.decode(tok.encode('你好，世界！ Hello.')), '你好，世界！ Hello.');
  assert.equal(r.parameters, expectedTensors(native).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0));

  // The engine loads it; cached decoding agrees with the full forward; every LoRA target exists.
  const { model } = await loadBase(dir, { threads: 1 });
  const ids = Int32Array.from(tok.encode('Hello! How can I help you today?').slice(0, 6));
  const full = await model.logits(ids, 1, ids.length);
  const V = native.vocabSize;
  assert.ok(full.every(Number.isFinite));
  model.resetCache();
  await model.feed(ids.subarray(0, 3));
  let last: Float32Array = new Float32Array();
  for (let t = 3; t < ids.length; t++) last = await model.feed(ids.subarray(t, t + 1));
  const want = full.subarray((ids.length - 1) * V);
  assert.ok(last.every((x, i) => Math.abs(x - want[i]) < 1e-4 * (1 + Math.abs(want[i]))), 'KV-cache logits differ from the full forward');
  const added = model.addLora({ targets: loraModulesOf('bloom'), rank: 2, alpha: 4, dropout: 0, seed: 1 });
  assert.equal(added.length, 2 * 4 * 2);
  assert.ok(added.some((p) => p.name === 'transformer.h.0.self_attention.query_key_value.lora_B.weight' && p.shape.join() === '96,2'));
});

test('same seed, same weights; different seed, different weights', () => {
  const a = initModel(small('llama', 's1'));
  const b = initModel(small('llama', 's2'));
  const c = initModel(small('llama', 's3', { seed: 2 }));
  const read = (dir: string) => fs.readFileSync(path.join(dir, 'model.safetensors'));
  assert.deepEqual(read(a.dir), read(b.dir));
  assert.notDeepEqual(read(a.dir), read(c.dir));
});

test('refuses bad shapes and a non-empty folder without --force', () => {
  assert.throws(() => initModel(small('baichuan', 'bad1', { kvHeads: 2 })), /K\/V heads must equal --heads/);
  assert.throws(() => initModel(small('llama', 'bad2', { hidden: 30 })), /--hidden 30 must be a multiple of --heads 4/);
  assert.throws(() => initModel(small('llama', 'bad3', { heads: 4, kvHeads: 3 })), /--heads 4 must be a multiple of --kv-heads 3/);
  assert.throws(() => initModel(small('llama', 'bad4', { vocab: 100 })), /--vocab 100 is too small/);
  assert.throws(() => initModel(small('bloom', 'bad5', { kvHeads: 2 })), /bloom has one fused query_key_value projection, so K\/V heads must equal --heads/);
  initModel(small('bloom', 'odd-head-dim', { hidden: 36, heads: 4 }));  // head dim 9: fine without RoPE
  const dir = path.join(tmp, 'full');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'keep me');
  fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), 'old');
  assert.throws(() => initModel(small('llama', 'full')), /is not empty; pass --force/);
  initModel(small('llama', 'full', { force: true }));
  // --force replaces model files (a stale .bin would be read beside the new weights) and keeps the rest.
  assert.deepEqual(fs.readdirSync(dir).sort(), ['config.json', 'generation_config.json', 'model.safetensors', 'notes.txt', 'tokenizer.json', 'tokenizer_config.json']);
});

test('the CLI command with its defaults (tokenizer from data/demo.jsonl or the built-in texts)', async () => {
  const out = path.join(tmp, 'cli');
  const lines: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((s: string) => (lines.push(s), true)) as typeof process.stdout.write;
  try {
    await yargs(['init-model', '--arch', 'qwen2', '--out', out, '--layers', '1']).command(initModelCommand).strict().parseAsync();
  } finally {
    process.stdout.write = write;
  }
  assert.match(lines.join(''), /Wrote a random qwen2 model to .*cli: 1 layers, hidden 256, 8 heads \(4 K\/V\), intermediate 688, vocab \d+/);
  const { hf, native } = readHfConfig(out);
  assert.equal(native.hiddenSize, 256);
  assert.equal(native.intermediateSize, 688);
  assert.equal(hf.max_position_embeddings, 2048);
  assert.ok(native.vocabSize <= 2048 + 63);
  const tok = await loadTokenizer(out);
  assert.equal(tok.decode(tok.encode('你好！有什么可以帮你的吗？ Hello there.')), '你好！有什么可以帮你的吗？ Hello there.');
});

// An untrained model knows nothing, so its loss on random tokens is about ln(vocab), as a fresh HF
// model's is. Qwen2's tied embedding was once drawn
// N(0, 1) like an untied one, and a default qwen2 started at loss 138 instead of 7.6.
test('untrained loss on random tokens is near ln(vocab) for every arch, at init-model\'s default shape', async () => {
  for (const arch of ['llama', 'baichuan', 'baichuan2', 'qwen2', 'bloom'] as const) {
    // The CLI's defaults (src/cli/commands/init-model.ts), tokenizer from the demo texts.
    const r = initModel({ arch, outDir: path.join(tmp, `loss-${arch}`), hidden: 256, layers: 4, heads: 8, intermediate: 688, vocab: 2048, seed: 0, maxPosition: 2048, force: false });
    const { model } = await loadBase(r.dir, { threads: 1 });
    const rand = mulberry32(12);
    const ids = Array.from({ length: 256 }, () => Math.floor(rand() * r.vocabSize));
    const { meanLoss } = await scoreIds(model, ids, r.vocabSize);
    const want = Math.log(r.vocabSize);
    assert.ok(Math.abs(meanLoss - want) < 1.5, `${arch}: initial loss ${meanLoss.toFixed(2)}, ln(vocab ${r.vocabSize}) = ${want.toFixed(2)}`);
  }
});
