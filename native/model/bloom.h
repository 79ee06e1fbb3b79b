// Bloom (BloomForCausalLM) on the CPU backend: ALiBi attention, LayerNorm with biases (also on
// the embeddings), tanh-form GELU MLP, every linear with a bias, lm_head tied to the embeddings.
// T = float for real use, double for gradient checks.
//
// Layout decisions (why):
// - query_key_value stays ONE matrix [3H, H] in the checkpoint's own row order, interleaved per
//   head: row h*3d + j*d + e is q (j = 0), k (1) or v (2) of head h. The attention reads q, k and
//   v of head h at columns h*3d, h*3d + d, h*3d + 2d of the fused output row (head stride 3d), so
//   nothing is ever reordered: a LoRA on query_key_value adapts all 3H rows in that order, which
//   is also the order of PEFT's lora_B rows, and NF4 quantizes the checkpoint tensor as stored.
// - The KV cache holds k and v de-interleaved, [position, H] per layer (head h at h*d).
// - Parameters are named as BloomForCausalLM's state dict ("transformer." prefix); checkpoints
//   saved from BloomModel without the prefix load too (the prefix is optional on lookup).
#pragma once
#include "model/model.h"

namespace sft {

std::unique_ptr<ModelBase> make_bloom_model(const ModelConfig& cfg, bool f64);

}  // namespace sft
