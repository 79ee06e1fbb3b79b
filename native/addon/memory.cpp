#include "addon/memory.h"

#include <algorithm>
#include <cstdio>

namespace sft::addon {

std::string human_bytes(size_t b) {
  char buf[32];
  if (b >= (size_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", double(b) / double(size_t(1) << 30));
  else if (b >= (size_t(1) << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / double(1 << 20));
  else std::snprintf(buf, sizeof buf, "%.1f KiB", double(b) / 1024.0);
  return buf;
}

Napi::Object plan_to_js(Napi::Env env, const MemoryPlan& plan) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("total", double(plan.total()));
  Napi::Array kinds = Napi::Array::New(env);
  for (size_t k = 0; k < size_t(MemKind::Count); k++) {
    const KindPlan& kp = plan.kinds[k];
    Napi::Object e = Napi::Object::New(env);
    e.Set("kind", mem_kind_name(MemKind(k)));
    e.Set("bytes", double(kp.bytes));
    std::vector<PlanEntry> top = kp.entries;
    std::stable_sort(top.begin(), top.end(), [](const PlanEntry& a, const PlanEntry& b) { return a.bytes > b.bytes; });
    if (top.size() > 12) top.resize(12);
    Napi::Array entries = Napi::Array::New(env, top.size());
    for (size_t i = 0; i < top.size(); i++) {
      Napi::Object t = Napi::Object::New(env);
      t.Set("name", top[i].name);
      t.Set("bytes", double(top[i].bytes));
      entries.Set(uint32_t(i), t);
    }
    e.Set("entries", entries);
    e.Set("count", double(kp.entries.size()));
    kinds.Set(uint32_t(k), e);
  }
  o.Set("kinds", kinds);
  return o;
}

std::string oom_advice(const MemoryPlan& plan) {
  const MemKind k = plan.largest();
  std::string lower;
  switch (k) {
    case MemKind::Weights: lower = "use bits 4 (QLoRA) or bf16, or a smaller model"; break;
    case MemKind::Trainable:
    case MemKind::Grads:
    case MemKind::Optimizer: lower = "train fewer parameters (LoRA instead of full fine-tuning, a lower lora_rank) or use adamw_8bit"; break;
    case MemKind::Activations:
    case MemKind::Workspace:
      lower = "lower per_device_train_batch_size or max_seq_length, or set gradient_checkpointing true"; break;
    case MemKind::KvCache: lower = "use a shorter context (max_new_tokens, the prompt)"; break;
    case MemKind::Count: break;
  }
  return std::string("the plan's largest kind is ") + mem_kind_name(k) + " (" + human_bytes(plan[k].bytes) + " of " +
         human_bytes(plan.total()) + "): " + lower;
}

}  // namespace sft::addon
