// The Llama family (Llama/Llama-2, Baichuan-7B, Baichuan2, Qwen2) on the CPU backend:
// configuration, parameters with their checkpoint names, LoRA, forward, the mirrored backward,
// AdamW, and KV-cache generation. T = float for real use, double for gradient checks.
//
// Layout decisions (why):
// - q, k and v live in ONE fused matrix [(nh + 2 nkv) * hd, hidden] per layer, rows in the order
//   Q, K, V. That is Baichuan's W_pack as is, and Llama/Qwen2's q_proj/k_proj/v_proj stacked; a
//   LoRA on q_proj is a LoRA on the Q row block, one on W_pack spans all rows. One matmul per layer.
// - Backward functions accumulate (+=), so residual branches and shared inputs need no copies.
#pragma once
#include "model/model.h"

namespace sft {

std::unique_ptr<ModelBase> make_llama_model(const ModelConfig& cfg, bool f64);

}  // namespace sft
