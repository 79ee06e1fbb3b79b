// The memory plan as JavaScript sees it, and what an out-of-memory message tells the user to lower.
#pragma once
#include <napi.h>

#include <string>

#include "model/model.h"

namespace sft::addon {

// {total, kinds: [{kind, bytes, entries: [{name, bytes}]}]} (entries: the largest first, at most 12).
Napi::Object plan_to_js(Napi::Env env, const MemoryPlan& plan);
// "... the plan's largest kind is activations (6.1 GiB): lower ..." for an out-of-memory error.
std::string oom_advice(const MemoryPlan& plan);
std::string human_bytes(size_t bytes);

}  // namespace sft::addon
