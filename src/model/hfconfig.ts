// Reads a Hugging Face config.json and turns it into the engine's NativeModelConfig, and lists the
// tensors (HF names and shapes) a checkpoint of that config holds (SPEC.md §1).
import fs from 'node:fs';
import path from 'node:path';
import { SftError } from '../errors.js';
import { JsonSyntaxError, parseJsonObject, showJson } from '../config/json.js';
import type { Arch, NativeModelConfig } from '../native/types.js';
import { native } from '../native/binding.js';

export const SUPPORTED_ARCHITECTURES =
  'LlamaForCausalLM (llama), BaiChuanForCausalLM (Baichuan-7B), BaichuanForCausalLM (Baichuan2-7B), Qwen2ForCausalLM (qwen2), BloomForCausalLM (bloom)';

export function readHfConfig(modelDir: string): { hf: Record<string, unknown>; native: NativeModelConfig } {
  const file = path.join(modelDir, 'config.json');
  if (!fs.existsSync(file)) throw new SftError(`${file} not found: a model folder needs the config.json of a Hugging Face checkpoint.`);
  const hf = parseConfigJson(file);
  return { hf, native: nativeConfigFromHf(hf, file) };
}

/** The context a model was trained with, as its config.json spells it (per family), or undefined. */
export function trainedContext(hf: Record<string, unknown>): { key: string; length: number } | undefined {
  for (const key of ['max_position_embeddings', 'model_max_length', 'seq_length', 'n_positions']) {
    const v = hf[key];
    if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) return { key, length: v };
  }
  return undefined;
}

/**
 * A notice when max_seq_length exceeds the context the model was trained with. Every architecture
 * this build runs has rotary (llama, baichuan, qwen2) or ALiBi (bloom) positions, which run past
 * it, so it is a notice, not an error; one with learned absolute positions (GPT-2's wpe) would need
 * an error. Undefined when config.json is within limits, or unreadable (loading reports that).
 */
export function contextNotice(modelDir: string, maxSeqLength: number): string | undefined {
  let hf: Record<string, unknown>;
  try {
    hf = readHfConfig(modelDir).hf;
  } catch {
    return undefined;
  }
  const ctx = trainedContext(hf);
  if (!ctx || maxSeqLength <= ctx.length) return undefined;
  return `max_seq_length ${maxSeqLength} is above ${ctx.key} ${ctx.length} in ${path.join(modelDir, 'config.json')}: ` +
    `the model's positions run past it, but it was not trained on longer sequences; samples longer than ${ctx.length} tokens ` +
    `train beyond its context (lower max_seq_length to ${ctx.length} unless extending the context is the point)`;
}

// The strict parser, not JSON.parse: errors with line and column, a key given twice refused (JSON.parse
// keeps the last without a word), 1e400 refused rather than read as Infinity, nesting bounded.
function parseConfigJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SftError(code === 'EISDIR' ? `${file}: is a folder, not a JSON file.` : `${file}: cannot read (${code ?? (err as Error).message}).`);
  }
  try {
    return parseJsonObject(text).value;
  } catch (err) {
    if (!(err instanceof JsonSyntaxError)) throw err;
    throw new SftError(`${file}:${err.pos.line}:${err.pos.col}: ${err.invalidJson ? 'not valid JSON: ' : ''}${err.message}`);
  }
}

/** `file` only names the source in error messages. */
export function nativeConfigFromHf(hf: Record<string, unknown>, file = 'config.json'): NativeModelConfig {
  const arch = detectArch(hf, file);
  if (arch === 'bloom') return bloomConfig(hf, file);
  const int = (key: string, fallback?: number): number => {
    const v = hf[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
      throw new SftError(`${file}: "${key}" must be a positive integer (got ${showJson(hf[key])}).`);
    }
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = hf[key] ?? fallback;
    if (!isPositive(v)) throw new SftError(`${file}: "${key}" must be a positive number (got ${showJson(hf[key])}).`);
    return v;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = hf[key] ?? fallback;
    if (typeof v !== 'boolean') throw new SftError(`${file}: "${key}" must be true or false (got ${showJson(hf[key])}).`);
    return v;
  };

  const hiddenSize = int('hidden_size');
  const numHeads = int('num_attention_heads');
  // Baichuan's fused W_pack has no separate K/V heads; its configs never set this key.
  const numKvHeads = arch === 'baichuan' || arch === 'baichuan2' ? numHeads : int('num_key_value_heads', numHeads);
  const native: NativeModelConfig = {
    arch,
    vocabSize: int('vocab_size'),
    hiddenSize,
    intermediateSize: int('intermediate_size'),
    numLayers: int('num_hidden_layers'),
    numHeads,
    numKvHeads,
    // Defaults are those of the HF config classes (LlamaConfig, Qwen2Config, Baichuan's configuration_baichuan.py).
    ropeTheta: ropeTheta(hf, file),
    rmsNormEps: num('rms_norm_eps', 1e-6),
    tieWordEmbeddings: bool('tie_word_embeddings', false),
    qkvBias: arch === 'qwen2',
    normHead: arch === 'baichuan2',
  };
  checkSupported(hf, native, file);
  return native;
}

// BloomConfig's keys: sizes spelled n_embed/hidden_size, n_head/num_attention_heads,
// n_layer/num_hidden_layers (published checkpoints use both); defaults are BloomConfig's.
function bloomConfig(hf: Record<string, unknown>, file: string): NativeModelConfig {
  const int = (keys: string[]): number => {
    const present = keys.filter((k) => hf[k] !== undefined && hf[k] !== null);
    if (present.length === 0) throw new SftError(`${file}: "${keys.join('" or "')}" is missing.`);
    for (const k of present) {
      const v = hf[k];
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new SftError(`${file}: "${k}" must be a positive integer (got ${showJson(v)}).`);
    }
    if (present.some((k) => hf[k] !== hf[present[0]])) {
      throw new SftError(`${file}: ${present.map((k) => `"${k}" ${showJson(hf[k])}`).join(' and ')} disagree; keep one of them.`);
    }
    return hf[present[0]] as number;
  };
  const hiddenSize = int(['n_embed', 'hidden_size']);
  const numHeads = int(['n_head', 'num_attention_heads']);
  const eps = hf.layer_norm_epsilon ?? 1e-5;
  if (!isPositive(eps)) throw new SftError(`${file}: "layer_norm_epsilon" must be a positive number (got ${showJson(eps)}).`);
  const tied = hf.tie_word_embeddings ?? true;
  if (typeof tied !== 'boolean') throw new SftError(`${file}: "tie_word_embeddings" must be true or false (got ${showJson(tied)}).`);
  if (hiddenSize % numHeads !== 0) throw new SftError(`${file}: hidden size ${hiddenSize} is not a multiple of the head count ${numHeads}.`);
  if (hf.apply_residual_connection_post_layernorm === true) {
    throw new SftError(`${file}: apply_residual_connection_post_layernorm true (the residual taken after the layer norm) is not supported; published Bloom checkpoints use false.`);
  }
  const tp = hf.pretraining_tp ?? 1;
  if (tp !== 1 && hf.slow_but_exact === true) {
    // With slow_but_exact false (the default), transformers ignores pretraining_tp entirely.
    throw new SftError(`${file}: pretraining_tp ${showJson(tp)} with slow_but_exact true (a sliced, differently rounded dense layer) is not supported; set slow_but_exact to false.`);
  }
  return {
    arch: 'bloom',
    vocabSize: int(['vocab_size']),
    hiddenSize,
    intermediateSize: 4 * hiddenSize,  // BloomMLP is always dense_h_to_4h (n_inner is ignored)
    numLayers: int(['n_layer', 'num_hidden_layers']),
    numHeads,
    numKvHeads: numHeads,
    ropeTheta: 0,  // ALiBi: no rotary embeddings
    rmsNormEps: eps,
    tieWordEmbeddings: tied,
    qkvBias: false,  // the Llama family's flag; every Bloom linear has a bias anyway
    normHead: false,
  };
}

// Configs saved by transformers 5 move rope_theta into "rope_parameters" (with rope_type "default"
// when there is no scaling); older ones have rope_theta at the top level and rope_scaling beside it.
function ropeTheta(hf: Record<string, unknown>, file: string): number {
  const params = hf.rope_parameters;
  let theta = hf.rope_theta;
  if (params !== undefined && params !== null) {
    if (typeof params !== 'object') throw new SftError(`${file}: "rope_parameters" must be an object.`);
    const p = params as Record<string, unknown>;
    if (p.rope_type !== undefined && p.rope_type !== 'default') {
      throw new SftError(`${file}: rope_parameters.rope_type ${showJson(p.rope_type)} is not supported yet; only plain RoPE ("default").`);
    }
    theta ??= p.rope_theta;
  }
  theta ??= 10000;
  if (!isPositive(theta)) throw new SftError(`${file}: "rope_theta" must be a positive number (got ${showJson(theta)}).`);
  return theta;
}

// Finite too: an Infinity from a config built in memory would reach the engine as a rotary base or an eps.
function isPositive(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0;
}

function detectArch(hf: Record<string, unknown>, file: string): Arch {
  const archs = Array.isArray(hf.architectures) ? hf.architectures.filter((a): a is string => typeof a === 'string') : [];
  const modelType = typeof hf.model_type === 'string' ? hf.model_type : undefined;
  if (hf.hidden_size === 5120 && (archs.some((a) => /^baichuan/i.test(a)) || modelType === 'baichuan')) {
    // Baichuan-13B and Baichuan2-13B share the class names but use ALiBi instead of RoPE
    // (vLLM tells them apart the same way: hidden size 4096 is the RoPE 7B model).
    throw new SftError(`${file}: this looks like Baichuan(2)-13B (hidden_size 5120), which uses ALiBi attention; sft supports ${SUPPORTED_ARCHITECTURES}.`);
  }
  for (const a of archs) {
    if (a === 'LlamaForCausalLM') return 'llama';
    if (a === 'Qwen2ForCausalLM') return 'qwen2';
    // The class name's capitalisation is the one reliable difference between the two releases.
    if (a === 'BaiChuanForCausalLM') return 'baichuan';
    if (a === 'BaichuanForCausalLM') return 'baichuan2';
    if (a === 'BloomForCausalLM' || a === 'BloomModel') return 'bloom';
  }
  if (archs.length === 0) {
    if (modelType === 'llama') return 'llama';
    if (modelType === 'qwen2') return 'qwen2';
    if (modelType === 'bloom') return 'bloom';
    // Both Baichuan releases say "baichuan"; Baichuan2 has the 125,696-token vocabulary and z_loss_weight.
    if (modelType === 'baichuan') return hf.vocab_size === 125696 || 'z_loss_weight' in hf ? 'baichuan2' : 'baichuan';
  }
  const what = archs.length ? `architectures ${showJson(archs, 200)}` : `model_type ${showJson(modelType ?? null)}`;
  throw new SftError(`${file}: unsupported ${what}. Supported: ${SUPPORTED_ARCHITECTURES}.`);
}

/** Refuses config features the engine does not compute, rather than producing wrong numbers. */
function checkSupported(hf: Record<string, unknown>, c: NativeModelConfig, file: string): void {
  if (c.hiddenSize % c.numHeads !== 0) throw new SftError(`${file}: hidden_size ${c.hiddenSize} is not a multiple of num_attention_heads ${c.numHeads}.`);
  if (c.numHeads % c.numKvHeads !== 0) {
    throw new SftError(`${file}: num_attention_heads ${c.numHeads} is not a multiple of num_key_value_heads ${c.numKvHeads}.`);
  }
  const headDim = c.hiddenSize / c.numHeads;
  if (headDim % 2 !== 0) throw new SftError(`${file}: head dimension ${headDim} is odd; RoPE needs an even one.`);
  if (hf.head_dim !== undefined && hf.head_dim !== null && hf.head_dim !== headDim) {
    throw new SftError(`${file}: head_dim ${showJson(hf.head_dim)} differs from hidden_size/num_attention_heads (${headDim}); not supported.`);
  }
  if (hf.hidden_act !== undefined && hf.hidden_act !== 'silu') {
    throw new SftError(`${file}: hidden_act ${showJson(hf.hidden_act)} is not supported; the Llama family uses "silu".`);
  }
  if (hf.rope_scaling !== undefined && hf.rope_scaling !== null) {
    throw new SftError(`${file}: rope_scaling ${showJson(hf.rope_scaling)} is not supported yet; remove it only if you know the model was trained without it.`);
  }
  if (c.arch === 'llama' && (hf.attention_bias === true || hf.mlp_bias === true)) {
    throw new SftError(`${file}: attention_bias/mlp_bias true is not supported for llama.`);
  }
}

/** Every tensor a checkpoint of this config holds, with HF names and shapes ([out, in] for linear weights):
 *  what `sft init-model` writes. The engine's baseParams() is the authority on what it loads; the
 *  init-model tests check the two agree. */
export function expectedTensors(c: NativeModelConfig): { name: string; shape: number[] }[] {
  if (c.arch === 'bloom') return bloomTensors(c);
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const kvDim = (H / c.numHeads) * c.numKvHeads;
  const out: { name: string; shape: number[] }[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocabSize, H] }];
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}.`;
    out.push({ name: `${p}input_layernorm.weight`, shape: [H] });
    if (c.arch === 'baichuan' || c.arch === 'baichuan2') {
      out.push({ name: `${p}self_attn.W_pack.weight`, shape: [3 * H, H] });
    } else {
      out.push({ name: `${p}self_attn.q_proj.weight`, shape: [H, H] });
      out.push({ name: `${p}self_attn.k_proj.weight`, shape: [kvDim, H] });
      out.push({ name: `${p}self_attn.v_proj.weight`, shape: [kvDim, H] });
      if (c.qkvBias) {
        out.push({ name: `${p}self_attn.q_proj.bias`, shape: [H] });
        out.push({ name: `${p}self_attn.k_proj.bias`, shape: [kvDim] });
        out.push({ name: `${p}self_attn.v_proj.bias`, shape: [kvDim] });
      }
    }
    out.push({ name: `${p}self_attn.o_proj.weight`, shape: [H, H] });
    out.push({ name: `${p}post_attention_layernorm.weight`, shape: [H] });
    out.push({ name: `${p}mlp.gate_proj.weight`, shape: [I, H] });
    out.push({ name: `${p}mlp.up_proj.weight`, shape: [I, H] });
    out.push({ name: `${p}mlp.down_proj.weight`, shape: [H, I] });
  }
  out.push({ name: 'model.norm.weight', shape: [H] });
  if (!c.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [c.vocabSize, H] });
  return out;
}

/** The name under which the engine lists a checkpoint tensor (the engine's rule, model/modules.cpp):
 *  Bloom checkpoints saved from BloomModel (bigscience/bloom-560m and its siblings) omit the
 *  "transformer." prefix of BloomForCausalLM's state dict, as transformers' from_pretrained allows. */
export function canonicalTensorName(c: NativeModelConfig, name: string): string {
  return native().tensorName(c.arch, false, name) ?? name;
}

/** BloomForCausalLM's state dict: every linear and LayerNorm with a bias; query_key_value's rows
 *  interleaved per head (q, k, v of head 0, then of head 1, ...). Checkpoints saved from BloomModel
 *  omit the "transformer." prefix; the engine accepts both spellings. */
function bloomTensors(c: NativeModelConfig): { name: string; shape: number[] }[] {
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const out: { name: string; shape: number[] }[] = [];
  const norm = (name: string) => out.push({ name: `${name}.weight`, shape: [H] }, { name: `${name}.bias`, shape: [H] });
  const linear = (name: string, outDim: number, inDim: number) =>
    out.push({ name: `${name}.weight`, shape: [outDim, inDim] }, { name: `${name}.bias`, shape: [outDim] });
  out.push({ name: 'transformer.word_embeddings.weight', shape: [c.vocabSize, H] });
  norm('transformer.word_embeddings_layernorm');
  for (let i = 0; i < c.numLayers; i++) {
    const p = `transformer.h.${i}.`;
    norm(`${p}input_layernorm`);
    linear(`${p}self_attention.query_key_value`, 3 * H, H);
    linear(`${p}self_attention.dense`, H, H);
    norm(`${p}post_attention_layernorm`);
    linear(`${p}mlp.dense_h_to_4h`, I, H);
    linear(`${p}mlp.dense_4h_to_h`, H, I);
  }
  norm('transformer.ln_f');
  if (!c.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [c.vocabSize, H] });
  return out;
}
