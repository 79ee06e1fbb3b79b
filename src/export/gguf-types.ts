// Which encoding each tensor gets for a file type, as llama.cpp's own tools choose:
//
//   f32     everything f32
//   f16     matrices f16, vectors (norms, biases) f32 (convert_hf_to_gguf --outtype f16)
//   q8_0    matrices q8_0 (f16 when a row is not a whole number of 32-value blocks), vectors f32
//   q4_k_m  llama-quantize's Q4_K_M mix (src/llama-quant.cpp, no importance matrix): q4_K by default;
//           output.weight (or token_embd.weight when the head is tied to it) q6_K; attn_v (bloom:
//           attn_qkv) and ffn_down q6_K in the layers use_more_bits picks (the first and last eighth,
//           and every third between); a row that is not whole 256-value blocks falls back
//           q4_K -> q5_0, q6_K -> q8_0, then f16 if not whole 32-value blocks either.
import type { GgufTensorType } from '../native/types.js';
import type { SourceTensor } from './gguf-arch.js';

export const FILE_TYPES = ['f32', 'f16', 'q8_0', 'q4_k_m'] as const;
export type GgufFileType = (typeof FILE_TYPES)[number];

/** general.file_type (gguf-py's LlamaFileType). */
export const LLAMA_FILE_TYPE: Record<GgufFileType, number> = { f32: 0, f16: 1, q8_0: 7, q4_k_m: 15 };

const BLOCK: Record<GgufTensorType, number> = { f32: 1, f16: 1, q8_0: 32, q5_0: 32, q4_K: 256, q6_K: 256 };

/** llama-quant.cpp's layer rule for the "more bits" tensors of Q4_K_M. */
export function useMoreBits(layer: number, layers: number): boolean {
  const e = Math.floor(layers / 8);
  return layer < e || layer >= Math.floor((7 * layers) / 8) || (layer - e) % 3 === 2;
}

/** The encoding of every tensor of the file, in order. `tied`: the file has no output.weight. */
export function tensorTypes(fileType: GgufFileType, tensors: SourceTensor[], layers: number, tied: boolean): GgufTensorType[] {
  let attnV = 0;
  const nAttnV = tensors.filter((t) => /\.attn_(v|qkv)\.weight$/.test(t.name)).length;
  return tensors.map((t) => {
    if (t.shape.length < 2 || fileType === 'f32') return 'f32';
    const cols = t.shape[t.shape.length - 1];
    if (fileType === 'f16') return 'f16';
    if (fileType === 'q8_0') return cols % 32 === 0 ? 'q8_0' : 'f16';
    let type: GgufTensorType = 'q4_K';
    const layer = Number(/^blk\.(\d+)\./.exec(t.name)?.[1] ?? -1);
    if (t.name === 'output.weight' || (tied && t.name === 'token_embd.weight')) {
      type = cols % 256 !== 0 ? 'q8_0' : 'q6_K';
    } else if (/\.attn_(v|qkv)\.weight$/.test(t.name)) {
      if (useMoreBits(attnV, nAttnV)) type = 'q6_K';
      attnV++;
    } else if (/\.ffn_down\.weight$/.test(t.name)) {
      if (useMoreBits(layer, layers)) type = 'q6_K';
    }
    if (cols % BLOCK[type] !== 0) type = type === 'q4_K' ? 'q5_0' : type === 'q6_K' ? 'q8_0' : type;
    if (cols % BLOCK[type] !== 0) type = 'f16';
    return type;
  });
}
