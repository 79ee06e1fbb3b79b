#include "model/modules.h"

#include <algorithm>
#include <stdexcept>

namespace sft::model {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::Llama: return "llama";
    case Arch::Baichuan: return "baichuan";
    case Arch::Baichuan2: return "baichuan2";
    case Arch::Qwen2: return "qwen2";
    case Arch::Bloom: return "bloom";
  }
  return "?";
}

std::vector<std::string> lora_modules(Arch a) {
  switch (a) {
    case Arch::Llama:
    case Arch::Qwen2: return {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    case Arch::Baichuan:
    case Arch::Baichuan2: return {"W_pack", "o_proj", "gate_proj", "up_proj", "down_proj"};
    case Arch::Bloom: return {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"};
  }
  return {};
}

static std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + v[i];
  return s;
}

void check_lora_targets(Arch a, const std::vector<std::string>& targets) {
  const auto mods = lora_modules(a);
  const bool baichuan = a == Arch::Baichuan || a == Arch::Baichuan2, bloom = a == Arch::Bloom;
  for (const auto& t : targets) {
    if (std::find(mods.begin(), mods.end(), t) != mods.end()) continue;
    const bool qkv = t == "q_proj" || t == "k_proj" || t == "v_proj";
    if (bloom && (qkv || t == "W_pack"))
      throw std::runtime_error("LoRA target \"" + t + "\" does not exist in Bloom models: their q, k and v are fused in \"query_key_value\"");
    if (baichuan && qkv)
      throw std::runtime_error("LoRA target \"" + t + "\" does not exist in Baichuan models: their q, k and v are fused in \"W_pack\"");
    if (!baichuan && t == "W_pack")
      throw std::runtime_error("LoRA target \"W_pack\" exists only in Baichuan models; use " + std::string(bloom ? "query_key_value" : "q_proj, k_proj, v_proj"));
    throw std::runtime_error("unknown LoRA target module \"" + t + "\" (this model's linear layers: " + join(mods) + ")");
  }
}

std::string canonical_tensor_name(Arch a, const std::string& name) {
  if (a == Arch::Bloom && name.rfind("transformer.", 0) != 0 && name != "lm_head.weight") return "transformer." + name;
  return name;
}

bool ignorable_tensor(Arch a, bool tied, const std::string& name) {
  const std::string inv = ".rotary_emb.inv_freq";
  if (name == "lm_head.weight" && tied) return true;
  return a != Arch::Bloom && name.size() > inv.size() && name.compare(name.size() - inv.size(), inv.size(), inv) == 0;
}

}  // namespace sft::model
