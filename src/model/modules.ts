// The engine's names for an architecture's parts (native/model/modules.cpp is the one list).
import { native } from '../native/binding.js';
import type { Arch } from '../native/types.js';

/** PEFT module names of every linear layer but lm_head: what lora_target_modules "all" means. */
export function loraModulesOf(arch: Arch): string[] {
  return native().archInfo(arch).loraModules;
}
