#include "model/model.h"

#include <stdexcept>


namespace sft {

Arch parse_arch(const std::string& s) {
  if (s == "llama") return Arch::Llama;
  if (s == "baichuan") return Arch::Baichuan;
  if (s == "baichuan2") return Arch::Baichuan2;
  if (s == "qwen2") return Arch::Qwen2;
  if (s == "bloom") return Arch::Bloom;
  throw std::runtime_error("unknown architecture \"" + s + "\" (supported: llama, baichuan, baichuan2, qwen2, bloom)");
}

void ModelConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw std::runtime_error("invalid model config: " + what);
  };
  need(vocab > 0, "vocab_size must be > 0");
  need(hidden > 0, "hidden_size must be > 0");
  need(intermediate > 0, "intermediate_size must be > 0");
  need(layers > 0, "num_hidden_layers must be > 0");
  need(heads > 0 && hidden % heads == 0, "hidden_size must be a multiple of num_attention_heads");
  if (arch != Arch::Bloom) need(head_dim() % 2 == 0, "head_dim (hidden_size / num_attention_heads) must be even for rotary embeddings");
  need(kv_heads > 0 && heads % kv_heads == 0, "num_attention_heads must be a multiple of num_key_value_heads");
  need(norm_eps > 0, "the norm epsilon (rms_norm_eps / layer_norm_epsilon) must be > 0");
  if (arch != Arch::Bloom) need(rope_theta > 0, "rope_theta must be > 0");
}


}  // namespace sft
