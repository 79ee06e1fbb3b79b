// config.json -> NativeModelConfig (architecture detection, defaults, refusals) and the tensor list.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expectedTensors, nativeConfigFromHf, readHfConfig } from '../../src/model/hfconfig.js';
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
  err({ architectures: ['BloomForCausalLM'], model_type: 'bloom' }, /\/m\/config\.json: unsupported architectures \["BloomForCausalLM"\]\. Supported: LlamaForCausalLM.*Bloom support comes in a later version/);
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
    assert.throws(() => readHfConfig(dir), /config\.json: not valid JSON/);
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
