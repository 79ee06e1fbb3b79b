// What each architecture calls its parts, in one place for the engine and the TypeScript side:
// the LoRA target modules (PEFT's names, and "all-linear"), and the rules that map checkpoint
// tensor names onto the engine's (optional prefixes, tensors that carry nothing it needs).
#pragma once
#include <string>
#include <vector>

#include "model/model.h"

namespace sft::model {

const char* arch_name(Arch a);
// PEFT module names of every linear layer but lm_head, in the order adapters are attached.
std::vector<std::string> lora_modules(Arch a);
// Throws naming the target and the modules this architecture has.
void check_lora_targets(Arch a, const std::vector<std::string>& targets);
// The engine's name for a checkpoint tensor: Bloom checkpoints saved from BloomModel omit
// BloomForCausalLM's "transformer." prefix (transformers' from_pretrained accepts both).
std::string canonical_tensor_name(Arch a, const std::string& name);
// Checkpoint tensors that carry nothing the engine needs: lm_head.weight of a tied model, the
// rotary inv_freq buffers older Llama checkpoints saved.
bool ignorable_tensor(Arch a, bool tied, const std::string& name);

}  // namespace sft::model
