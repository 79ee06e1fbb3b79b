// The template a config without template_name trains with (Firefly's configs before January 2024
// had none): the model's own chat_template when it ships one, else the format Firefly trained such
// a config with: "<s>input</s>target</s>..." (firefly_legacy) for the Llama, Baichuan and Bloom
// families, and ChatML for Qwen (Firefly's QwenSFTDataset, the layout of today's "qwen" template).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Arch } from '../native/types.js';
import { CHAT_TEMPLATE } from './templates.js';

export function defaultTemplateName(modelDir: string, arch: Arch): { name: string; notice: string } {
  if (shipsChatTemplate(modelDir)) return { name: CHAT_TEMPLATE, notice: `template_name not set: training with the model's own chat_template (template_name "${CHAT_TEMPLATE}")` };
  if (arch === 'qwen2')
    return { name: 'qwen', notice: 'template_name not set and the model has no chat_template: training with ChatML (template_name "qwen"), as Firefly did for Qwen before templates' };
  return {
    name: 'firefly_legacy',
    notice:
      'template_name not set and the model has no chat_template: training with the format Firefly used before templates, ' +
      '<s>input</s>target</s>… (template_name "firefly_legacy"); set template_name to choose another',
  };
}

/** chat_template in tokenizer_config.json, or a chat_template.jinja beside it. */
function shipsChatTemplate(modelDir: string): boolean {
  if (existsSync(join(modelDir, 'chat_template.jinja'))) return true;
  const file = join(modelDir, 'tokenizer_config.json');
  if (!existsSync(file)) return false;
  try {
    const t = (JSON.parse(readFileSync(file, 'utf8')) as { chat_template?: unknown }).chat_template;
    return typeof t === 'string' || (Array.isArray(t) && t.length > 0);
  } catch {
    return false; // the tokenizer load reports the file itself
  }
}
