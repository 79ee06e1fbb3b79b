// What llama.cpp calls each architecture's tensors and hyperparameters (its convert_hf_to_gguf.py
// and gguf-py constants), and the re-layouts its kernels expect:
//
//   llama, baichuan(2)  q and k rows permuted per head: HF's rotary pairs are (i, i + d/2)
//                       (rotate_half), llama.cpp's "normal" rope pairs adjacent rows (2i, 2i + 1)
//   baichuan(2)         W_pack [3H, H] split into attn_q, attn_k, attn_v
//   baichuan2           NormHead: lm_head's rows divided by their L2 norm (what Baichuan2's model
//                       does to its head before use; llama.cpp applies no such step)
//   qwen2               "neox" rope (HF's own pairing), so no permutation; q/k/v biases
//   bloom               query_key_value's rows interleaved per head (q, k, v of head 0, then head 1,
//                       ...) reordered to all q, all k, all v; every linear and norm has a bias
//
// A tied lm_head is not written: llama.cpp uses token_embd.weight for the output when output.weight
// is absent, for every architecture here.
import type { NativeModelConfig } from '../native/types.js';
import type { GgufValue } from './gguf-file.js';

export interface SourceTensor {
  /** llama.cpp's name. */
  name: string;
  /** PyTorch order: [rows, cols] for a matrix (cols contiguous), [n] for a vector. */
  shape: number[];
  /** The values in llama.cpp's layout, f32. */
  data: () => Float32Array;
}

/** The engine's weights by HF name (the merged model's, with an adapter). */
export type Weights = (hfName: string) => Float32Array;

/** Rows of a [rows, cols] matrix regrouped per head: row h*d + half*(d/2) + i goes to h*d + 2i + half. */
export function ropeRowsToInterleaved(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols;
  const d = rows / heads;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let half = 0; half < 2; half++) {
      for (let i = 0; i < d / 2; i++) {
        const from = (h * d + half * (d / 2) + i) * cols;
        out.set(w.subarray(from, from + cols), (h * d + 2 * i + half) * cols);
      }
    }
  }
  return out;
}

/** Each row divided by max(its L2 norm, 1e-12), as torch.nn.functional.normalize (Baichuan2's NormHead). */
export function normalizeRows(w: Float32Array, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let r = 0; r < w.length / cols; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += w[r * cols + c] * w[r * cols + c];
    const n = Math.max(Math.sqrt(s), 1e-12);
    for (let c = 0; c < cols; c++) out[r * cols + c] = w[r * cols + c] / n;
  }
  return out;
}

/** Bloom's fused qkv (rows of head h: q, k, v, each headDim) as [all q; all k; all v]. Works for the
 *  bias too (cols = 1). */
export function bloomQkvToBlocks(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols;
  const d = rows / heads / 3;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let part = 0; part < 3; part++) {
      const from = (h * 3 * d + part * d) * cols;
      out.set(w.subarray(from, from + d * cols), (part * heads * d + h * d) * cols);
    }
  }
  return out;
}

export function ggufArchName(c: NativeModelConfig): string {
  return c.arch === 'baichuan2' ? 'baichuan' : c.arch;
}

/** The tensors of the GGUF file in llama.cpp's order (embedding, blocks, output). */
export function ggufTensors(c: NativeModelConfig, w: Weights): SourceTensor[] {
  const H = c.hiddenSize, I = c.intermediateSize, V = c.vocabSize;
  const hd = H / c.numHeads;
  const kv = hd * c.numKvHeads;
  const out: SourceTensor[] = [];
  const put = (name: string, shape: number[], data: () => Float32Array) => out.push({ name, shape, data });
  const same = (hf: string) => () => w(hf);

  if (c.arch === 'bloom') {
    const p = (n: string) => `transformer.${n}`;
    put('token_embd.weight', [V, H], same(p('word_embeddings.weight')));
    put('token_embd_norm.weight', [H], same(p('word_embeddings_layernorm.weight')));
    put('token_embd_norm.bias', [H], same(p('word_embeddings_layernorm.bias')));
    for (let l = 0; l < c.numLayers; l++) {
      const b = `blk.${l}.`, s = p(`h.${l}.`);
      put(`${b}attn_norm.weight`, [H], same(`${s}input_layernorm.weight`));
      put(`${b}attn_norm.bias`, [H], same(`${s}input_layernorm.bias`));
      put(`${b}attn_qkv.weight`, [3 * H, H], () => bloomQkvToBlocks(w(`${s}self_attention.query_key_value.weight`), c.numHeads, H));
      put(`${b}attn_qkv.bias`, [3 * H], () => bloomQkvToBlocks(w(`${s}self_attention.query_key_value.bias`), c.numHeads, 1));
      put(`${b}attn_output.weight`, [H, H], same(`${s}self_attention.dense.weight`));
      put(`${b}attn_output.bias`, [H], same(`${s}self_attention.dense.bias`));
      put(`${b}ffn_norm.weight`, [H], same(`${s}post_attention_layernorm.weight`));
      put(`${b}ffn_norm.bias`, [H], same(`${s}post_attention_layernorm.bias`));
      put(`${b}ffn_up.weight`, [I, H], same(`${s}mlp.dense_h_to_4h.weight`));
      put(`${b}ffn_up.bias`, [I], same(`${s}mlp.dense_h_to_4h.bias`));
      put(`${b}ffn_down.weight`, [H, I], same(`${s}mlp.dense_4h_to_h.weight`));
      put(`${b}ffn_down.bias`, [H], same(`${s}mlp.dense_4h_to_h.bias`));
    }
    put('output_norm.weight', [H], same(p('ln_f.weight')));
    put('output_norm.bias', [H], same(p('ln_f.bias')));
    if (!c.tieWordEmbeddings) put('output.weight', [V, H], same('lm_head.weight'));
    return out;
  }

  const baichuan = c.arch === 'baichuan' || c.arch === 'baichuan2';
  const permuted = c.arch !== 'qwen2';  // qwen2 runs neox rope in llama.cpp: HF's layout as is
  const rope = (m: Float32Array, heads: number) => (permuted ? ropeRowsToInterleaved(m, heads, H) : m);
  put('token_embd.weight', [V, H], same('model.embed_tokens.weight'));
  for (let l = 0; l < c.numLayers; l++) {
    const b = `blk.${l}.`, s = `model.layers.${l}.`;
    put(`${b}attn_norm.weight`, [H], same(`${s}input_layernorm.weight`));
    if (baichuan) {
      const part = (i: number) => w(`${s}self_attn.W_pack.weight`).subarray(i * H * H, (i + 1) * H * H);
      put(`${b}attn_q.weight`, [H, H], () => rope(part(0), c.numHeads));
      put(`${b}attn_k.weight`, [H, H], () => rope(part(1), c.numHeads));
      put(`${b}attn_v.weight`, [H, H], () => part(2).slice());
    } else {
      put(`${b}attn_q.weight`, [H, H], () => rope(w(`${s}self_attn.q_proj.weight`), c.numHeads));
      put(`${b}attn_k.weight`, [kv, H], () => rope(w(`${s}self_attn.k_proj.weight`), c.numKvHeads));
      put(`${b}attn_v.weight`, [kv, H], same(`${s}self_attn.v_proj.weight`));
      if (c.qkvBias) {
        put(`${b}attn_q.bias`, [H], same(`${s}self_attn.q_proj.bias`));
        put(`${b}attn_k.bias`, [kv], same(`${s}self_attn.k_proj.bias`));
        put(`${b}attn_v.bias`, [kv], same(`${s}self_attn.v_proj.bias`));
      }
    }
    put(`${b}attn_output.weight`, [H, H], same(`${s}self_attn.o_proj.weight`));
    put(`${b}ffn_norm.weight`, [H], same(`${s}post_attention_layernorm.weight`));
    put(`${b}ffn_gate.weight`, [I, H], same(`${s}mlp.gate_proj.weight`));
    put(`${b}ffn_up.weight`, [I, H], same(`${s}mlp.up_proj.weight`));
    put(`${b}ffn_down.weight`, [H, I], same(`${s}mlp.down_proj.weight`));
  }
  put('output_norm.weight', [H], same('model.norm.weight'));
  const head = c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  if (c.normHead) put('output.weight', [V, H], () => normalizeRows(w(head), H));
  else if (!c.tieWordEmbeddings) put('output.weight', [V, H], same(head));
  return out;
}

/** The architecture's hyperparameters under llama.cpp's keys. */
export function ggufArchMetadata(c: NativeModelConfig, contextLength: number): [string, GgufValue][] {
  const a = ggufArchName(c);
  const u32 = (value: number): GgufValue => ({ type: 'u32', value });
  const f32 = (value: number): GgufValue => ({ type: 'f32', value });
  const kv: [string, GgufValue][] = [
    [`${a}.vocab_size`, u32(c.vocabSize)],
    [`${a}.context_length`, u32(contextLength)],
    [`${a}.embedding_length`, u32(c.hiddenSize)],
    [`${a}.block_count`, u32(c.numLayers)],
    [`${a}.feed_forward_length`, u32(c.intermediateSize)],
    [`${a}.attention.head_count`, u32(c.numHeads)],
    [`${a}.attention.head_count_kv`, u32(c.numKvHeads)],
  ];
  if (c.arch === 'bloom') {
    kv.push([`${a}.attention.layer_norm_epsilon`, f32(c.rmsNormEps)]);
  } else {
    kv.push([`${a}.rope.dimension_count`, u32(c.hiddenSize / c.numHeads)]);
    kv.push([`${a}.rope.freq_base`, f32(c.ropeTheta)]);
    kv.push([`${a}.attention.layer_norm_rms_epsilon`, f32(c.rmsNormEps)]);
  }
  return kv;
}
