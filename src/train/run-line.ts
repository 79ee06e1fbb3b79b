// The one line a run starts with: what it trains, as resolved from the config and the model, so
// that a default the user did not expect (Firefly's train_mode "qlora") is seen before minutes of
// loading, not found later in sft_config.json.
import type { TrainConfig } from '../config/schema.js';
import type { Device } from '../native/types.js';
import { readHfConfig } from '../model/hfconfig.js';
import { loraModulesOf } from '../model/modules.js';

/** "Training qlora (bits 4: NF4 base); LoRA r=64 alpha=16 dropout=0.05 on q_proj, ...; template "qwen"; cpu, fp32 compute" */
export function runLine(cfg: TrainConfig, template: string, device: Device, dtype: 'f32' | 'bf16'): string {
  const base = cfg.bits === 4 ? 'bits 4: NF4 base' : `bits ${cfg.bits}`;
  const what =
    cfg.train_mode === 'full' ? 'every weight trains'
    : cfg.train_mode === 'prompt_tuning' ? `prompt tuning, ${cfg.num_virtual_tokens} virtual tokens (${cfg.prompt_tuning_init} init)`
    : `LoRA r=${cfg.lora_rank} alpha=${cfg.lora_alpha} dropout=${cfg.lora_dropout} on ${targetsOf(cfg)}`;
  return `Training ${cfg.train_mode} (${base}); ${what}; template "${template}"; ${device}, ${dtype === 'bf16' ? 'bf16' : 'fp32'} compute`;
}

/** lora_target_modules as the model resolves them ("all": every linear layer but lm_head). */
function targetsOf(cfg: TrainConfig): string {
  if (cfg.lora_target_modules !== 'all') return cfg.lora_target_modules.join(', ');
  try {
    return loraModulesOf(readHfConfig(cfg.model_name_or_path).native.arch).join(', ');
  } catch {
    // The model folder is checked (and its error reported) when it is loaded, right after this line.
    return 'all linear layers';
  }
}
