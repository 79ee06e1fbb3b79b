// config.json -> NativeModelConfig (architecture detection, defaults, refusals) and the tensor list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { canonicalTensorName, expectedTensors, nativeConfigFromHf, readHfConfig } from '../../src/model/hfconfig.js';
import type { NativeModelConfig } from '../../src/native/types.js';

const sizes = { vocab_size: 64000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32 };

test('detects each supported architecture from real config.json shapes', () => {
  // Llama-2-7b-hf
  const llama = nativeConfigFromHf({ architectures: ['LlamaForCausalLM'], model_type: 'llama', ...sizes, vocab_size: 32000, num_key_value_heads: 32, rms_norm_eps: 1e-5, max_position_embeddings: 4096, tie_word_embeddings: false, rope_scaling: null, hidden_act: 'silu' });
  assert.deepEqual(llama, {
    arch: 'llama', vocabSize: 32000, hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32, numKvHeads: 32,
    ropeTheta: 10000, rmsNormEps: 1e-5, tieWordEmbeddings: false, qkvBias: false, normHead: false,
  });
  // Baichuan-7B: "BaiChuan" spelling, no num_key_value_heads, no rope_theta.
  const b1 = nativeConfigFromHf({ architectures: ['BaiChuanForCausalLM'], model_type: 'baichuan', ...sizes, rms_norm_eps: 1e-6, tie_word_embeddings: false });
  assert.equal(b1.arch, 'baichuan');
  assert.equal(b1.numKvHeads, 32);
  assert.equal(b1.ropeTheta, 10000);
  assert.equal(b1.normHead, false);
  // Baichuan2-7B: "Baichuan" spelling, NormHead.
  const b2 = nativeConfigFromHf({ architectures: ['BaichuanForCausalLM'], model_type: 'baichuan', ...sizes, vocab_size: 125696, z_loss_weight: 0, rms_norm_eps: 1e-6 });
  assert.equal(b2.arch, 'baichuan2');
  assert.equal(b2.normHead, true);
  assert.equal(b2.qkvBias, false);
  // Qwen2.5-0.5B
  const q = nativeConfigFromHf({ architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', vocab_size: 151936, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, rope_theta: 1000000.0, rms_norm_eps: 1e-6, tie_word_embeddings: true });
  assert.deepEqual(q, {
    arch: 'qwen2', vocabSize: 151936, hiddenSize: 896, intermediateSize: 4864, numLayers: 24, numHeads: 14, numKvHeads: 2,
    ropeTheta: 1000000, rmsNormEps: 1e-6, tieWordEmbeddings: true, qkvBias: true, normHead: false,
  });
});

test('falls back to model_type and defaults when keys are absent', () => {
  const llama = nativeConfigFromHf({ model_type: 'llama', ...sizes, num_attention_heads: 8, hidden_size: 512 });
  assert.equal(llama.arch, 'llama');
  assert.equal(llama.numKvHeads, 8);
  assert.equal(llama.rmsNormEps, 1e-6);
  assert.equal(llama.tieWordEmbeddings, false);
  assert.equal(nativeConfigFromHf({ model_type: 'baichuan', ...sizes }).arch, 'baichuan');
  assert.equal(nativeConfigFromHf({ model_type: 'baichuan', ...sizes, vocab_size: 125696 }).arch, 'baichuan2');
  assert.equal(nativeConfigFromHf({ model_type: 'qwen2', ...sizes }).arch, 'qwen2');
  // transformers 5 keeps rope_theta in rope_parameters.
  assert.equal(nativeConfigFromHf({ model_type: 'qwen2', ...sizes, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } }).ropeTheta, 1e6);
});

test('refuses what it cannot compute, naming the key', () => {
  const err = (hf: Record<string, unknown>, re: RegExp) => assert.throws(() => nativeConfigFromHf(hf, '/m/config.json'), re);
  err({ architectures: ['GPTNeoXForCausalLM'], model_type: 'gpt_neox' }, /\/m\/config\.json: unsupported architectures \["GPTNeoXForCausalLM"\]\. Supported: LlamaForCausalLM.*BloomForCausalLM \(bloom\)/);
  err({ architectures: ['GPT2LMHeadModel'] }, /unsupported architectures \["GPT2LMHeadModel"\]/);
  err({ model_type: 'mistral' }, /unsupported model_type "mistral"/);
  err({ architectures: ['BaichuanForCausalLM'], ...sizes, hidden_size: 5120, num_hidden_layers: 40, num_attention_heads: 40 }, /ALiBi/);
  err({ model_type: 'llama', ...sizes, vocab_size: undefined }, /"vocab_size" must be a positive integer/);
  err({ model_type: 'llama', ...sizes, num_attention_heads: 30 }, /hidden_size 4096 is not a multiple of num_attention_heads 30/);
  err({ model_type: 'llama', ...sizes, num_key_value_heads: 5 }, /not a multiple of num_key_value_heads 5/);
  err({ model_type: 'llama', ...sizes, rope_scaling: { type: 'linear', factor: 2 } }, /rope_scaling .* is not supported/);
  err({ model_type: 'llama', ...sizes, hidden_act: 'gelu' }, /hidden_act "gelu"/);
  err({ model_type: 'llama', ...sizes, tie_word_embeddings: 'yes' }, /"tie_word_embeddings" must be true or false/);
  err({ model_type: 'qwen2', ...sizes, rope_parameters: { rope_type: 'yarn', factor: 4 } }, /rope_type "yarn"/);
});

test('readHfConfig reads config.json from a folder', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-hf-'));
  try {
    assert.throws(() => readHfConfig(dir), /config\.json not found/);
    fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type": "llama",');
    assert.throws(() => readHfConfig(dir), /config\.json:1:24: not valid JSON: expected a key in double quotes, found the end of the file/);
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'], ...sizes, extra: 1 }));
    const { hf, native } = readHfConfig(dir);
    assert.equal(hf.extra, 1);
    assert.equal(native.arch, 'llama');
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});

const tiny = (arch: NativeModelConfig['arch'], over: Partial<NativeModelConfig> = {}): NativeModelConfig => ({
  arch, vocabSize: 10, hiddenSize: 4, intermediateSize: 6, numLayers: 1, numHeads: 2, numKvHeads: 1,
  ropeTheta: 10000, rmsNormEps: 1e-6, tieWordEmbeddings: false, qkvBias: false, normHead: false, ...over,
});

test('expectedTensors: qwen2 (tied, biases, GQA)', () => {
  assert.deepEqual(expectedTensors(tiny('qwen2', { qkvBias: true, tieWordEmbeddings: true })), [
    { name: 'model.embed_tokens.weight', shape: [10, 4] },
    { name: 'model.layers.0.input_layernorm.weight', shape: [4] },
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [4, 4] },
    { name: 'model.layers.0.self_attn.k_proj.weight', shape: [2, 4] },
    { name: 'model.layers.0.self_attn.v_proj.weight', shape: [2, 4] },
    { name: 'model.layers.0.self_attn.q_proj.bias', shape: [4] },
    { name: 'model.layers.0.self_attn.k_proj.bias', shape: [2] },
    { name: 'model.layers.0.self_attn.v_proj.bias', shape: [2] },
    { name: 'model.layers.0.self_attn.o_proj.weight', shape: [4, 4] },
    { name: 'model.layers.0.post_attention_layernorm.weight', shape: [4] },
    { name: 'model.layers.0.mlp.gate_proj.weight', shape: [6, 4] },
    { name: 'model.layers.0.mlp.up_proj.weight', shape: [6, 4] },
    { name: 'model.layers.0.mlp.down_proj.weight', shape: [4, 6] },
    { name: 'model.norm.weight', shape: [4] },
  ]);
});

test('expectedTensors: baichuan W_pack and an untied head; llama over two layers', () => {
  assert.deepEqual(expectedTensors(tiny('baichuan2', { numKvHeads: 2, normHead: true })).map((t) => `${t.name} ${t.shape}`), [
    'model.embed_tokens.weight 10,4',
    'model.layers.0.input_layernorm.weight 4',
    'model.layers.0.self_attn.W_pack.weight 12,4',
    'model.layers.0.self_attn.o_proj.weight 4,4',
    'model.layers.0.post_attention_layernorm.weight 4',
    'model.layers.0.mlp.gate_proj.weight 6,4',
    'model.layers.0.mlp.up_proj.weight 6,4',
    'model.layers.0.mlp.down_proj.weight 4,6',
    'model.norm.weight 4',
    'lm_head.weight 10,4',
  ]);
  const llama = expectedTensors(tiny('llama', { numLayers: 2 }));
  assert.equal(llama.length, 1 + 2 * 9 + 2);
  assert.ok(llama.some((t) => t.name === 'model.layers.1.self_attn.k_proj.weight' && t.shape.join() === '2,4'));
  assert.ok(!llama.some((t) => t.name.endsWith('.bias')));
});

// bigscience/bloom-560m's config.json (sizes under hidden_size / n_head / n_layer) and bigscience/bloom's
// (n_embed, num_attention_heads): both spellings, BloomConfig's defaults, and the refusals.
const bloom560m = {
  apply_residual_connection_post_layernorm: false, architectures: ['BloomForCausalLM'], attention_dropout: 0.0,
  bos_token_id: 1, eos_token_id: 2, hidden_dropout: 0.0, hidden_size: 1024, initializer_range: 0.02, layer_norm_epsilon: 1e-5,
  model_type: 'bloom', n_head: 16, n_inner: null, n_layer: 24, pad_token_id: 3, pretraining_tp: 1, slow_but_exact: false,
  use_cache: true, vocab_size: 250880,
};

test('bloom: sizes under either spelling, LayerNorm eps, tied head, 4H MLP', () => {
  assert.deepEqual(nativeConfigFromHf(bloom560m), {
    arch: 'bloom', vocabSize: 250880, hiddenSize: 1024, intermediateSize: 4096, numLayers: 24, numHeads: 16, numKvHeads: 16,
    ropeTheta: 0, rmsNormEps: 1e-5, tieWordEmbeddings: true, qkvBias: false, normHead: false,
  });
  const big = nativeConfigFromHf({ model_type: 'bloom', n_embed: 14336, num_attention_heads: 112, n_layer: 70, vocab_size: 250880, pretraining_tp: 4, slow_but_exact: false });
  assert.deepEqual([big.arch, big.hiddenSize, big.numHeads, big.numLayers, big.intermediateSize, big.rmsNormEps], ['bloom', 14336, 112, 70, 57344, 1e-5]);
  const err = (over: Record<string, unknown>, re: RegExp) => assert.throws(() => nativeConfigFromHf({ ...bloom560m, ...over }, '/m/config.json'), re);
  err({ apply_residual_connection_post_layernorm: true }, /\/m\/config\.json: apply_residual_connection_post_layernorm true .* not supported/);
  err({ pretraining_tp: 2, slow_but_exact: true }, /pretraining_tp 2 with slow_but_exact true .* set slow_but_exact to false/);
  err({ n_embed: 2048 }, /"n_embed" 2048 and "hidden_size" 1024 disagree/);
  err({ n_head: undefined }, /"n_head" or "num_attention_heads" is missing/);
  err({ n_head: 12 }, /hidden size 1024 is not a multiple of the head count 12/);
});

test('expectedTensors: bloom (transformer. prefix, biases everywhere, tied head)', () => {
  const c = nativeConfigFromHf({ ...bloom560m, hidden_size: 4, n_head: 2, n_layer: 1, vocab_size: 10 });
  assert.deepEqual(expectedTensors(c).map((t) => `${t.name} ${t.shape}`), [
    'transformer.word_embeddings.weight 10,4',
    'transformer.word_embeddings_layernorm.weight 4',
    'transformer.word_embeddings_layernorm.bias 4',
    'transformer.h.0.input_layernorm.weight 4',
    'transformer.h.0.input_layernorm.bias 4',
    'transformer.h.0.self_attention.query_key_value.weight 12,4',
    'transformer.h.0.self_attention.query_key_value.bias 12',
    'transformer.h.0.self_attention.dense.weight 4,4',
    'transformer.h.0.self_attention.dense.bias 4',
    'transformer.h.0.post_attention_layernorm.weight 4',
    'transformer.h.0.post_attention_layernorm.bias 4',
    'transformer.h.0.mlp.dense_h_to_4h.weight 16,4',
    'transformer.h.0.mlp.dense_h_to_4h.bias 16',
    'transformer.h.0.mlp.dense_4h_to_h.weight 4,16',
    'transformer.h.0.mlp.dense_4h_to_h.bias 4',
    'transformer.ln_f.weight 4',
    'transformer.ln_f.bias 4',
  ]);
  assert.equal(expectedTensors({ ...c, tieWordEmbeddings: false }).at(-1)?.name, 'lm_head.weight');
  // bigscience/bloom-560m's files name tensors without the prefix (saved from BloomModel).
  assert.equal(canonicalTensorName(c, 'h.3.self_attention.query_key_value.weight'), 'transformer.h.3.self_attention.query_key_value.weight');
  assert.equal(canonicalTensorName(c, 'word_embeddings.weight'), 'transformer.word_embeddings.weight');
  assert.equal(canonicalTensorName(c, 'transformer.ln_f.bias'), 'transformer.ln_f.bias');
  assert.equal(canonicalTensorName(c, 'lm_head.weight'), 'lm_head.weight');
  assert.equal(canonicalTensorName(tiny('llama'), 'norm.weight'), 'norm.weight');
});

/** readHfConfig on a folder whose config.json holds `text`: the SftError it throws (which must name the file first). */
function hfError(text: string | null): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-hf-'));
  const file = path.join(dir, 'config.json');
  try {
    if (text === null) fs.mkdirSync(file);
    else fs.writeFileSync(file, text);
    let caught: unknown;
    try {
      readHfConfig(dir);
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof Error && caught.name === 'SftError', `expected an SftError, got ${caught === undefined ? 'a config' : `${(caught as Error).constructor.name}: ${(caught as Error).message.slice(0, 200)}`}`);
    assert.ok(caught.message.startsWith(file), caught.message.slice(0, 200));
    assert.ok(caught.message.length < 600, `a ${caught.message.length}-character message`);
    return caught.message.slice(file.length);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
}

const llamaText = (extra: string) => `{\n  "architectures": ["LlamaForCausalLM"],\n  "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 16, "num_hidden_layers": 1, "vocab_size": 10,\n  ${extra}\n}`;

test('numbers that are not finite are refused where they are typed, not read as Infinity or shown as null', () => {
  assert.match(hfError(llamaText('"rope_theta": 1e400')), /^:4:17: "rope_theta": 1e400 is not a finite number/);
  assert.match(hfError(llamaText('"rms_norm_eps": -Infinity')), /^:4:19: "rms_norm_eps": -Infinity is not a finite number/);
  // Objects built in memory (not from a file) are checked too.
  const sizes8 = { hidden_size: 8, num_attention_heads: 2, intermediate_size: 16, num_hidden_layers: 1, vocab_size: 10 };
  assert.throws(() => nativeConfigFromHf({ model_type: 'llama', ...sizes8, rope_theta: Infinity }), /"rope_theta" must be a positive number \(got Infinity\)/);
  assert.throws(() => nativeConfigFromHf({ model_type: 'llama', ...sizes8, rms_norm_eps: Infinity }), /"rms_norm_eps" must be a positive number \(got Infinity\)/);
  assert.throws(() => nativeConfigFromHf({ model_type: 'bloom', n_embed: 8, n_head: 2, n_layer: 1, vocab_size: 10, layer_norm_epsilon: Infinity }), /"layer_norm_epsilon" must be a positive number \(got Infinity\)/);
});

test('deep nesting, huge values and duplicate keys: short SftErrors with a position', () => {
  assert.match(hfError(llamaText(`"rope_scaling": ${'['.repeat(20_000)}${']'.repeat(20_000)}`)), /^:4:\d+: not valid JSON: nested more than 100 levels deep/);
  assert.match(hfError(llamaText(`"rope_scaling": ${'{"a":'.repeat(90)}1${'}'.repeat(90)}`)), /^: rope_scaling \{"a":\{"a":.*\.\.\. is not supported yet/);
  assert.match(hfError(llamaText(`"hidden_act": "${'g'.repeat(100_000)}"`)), /^: hidden_act "ggg.*\.\.\." is not supported/);
  assert.match(hfError(llamaText('"hidden_size": 16')), /^:4:3: not valid JSON: duplicate key "hidden_size"/);
});

test('a config.json that is a folder is named as such', () => {
  assert.equal(hfError(null), ': is a folder, not a JSON file.');
});
