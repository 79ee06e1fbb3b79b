// A base model with a LoRA adapter folded in (W + lora_alpha/r * B A, exactly PEFT's merge): what
// `sft merge` writes as an HF folder and `sft export --adapter` writes as GGUF. A QLoRA adapter
// (trained on an NF4 base) is said so; `dequantizedBase` merges it into dequant(NF4(W)) + B A, the
// base it was trained against, instead of the full-precision W.
import type { Device, NativeModel, NativeModelConfig } from '../native/types.js';
import { SftError } from '../errors.js';
import { applyLoraAdapter, loadBase, trainingTemplateName } from './load.js';
import { CHAT_TEMPLATE, getTemplate } from '../data/templates.js';
import { builtInJinja } from '../data/chat-template.js';
import type { QloraRun } from './merge-qlora.js';

export interface MergedModel {
  model: NativeModel;
  native: NativeModelConfig;
  qlora?: QloraRun;
  /** The NF4 base + adapter (QLoRA adapters, when `loadNf4`), for scoring the merge against. */
  nf4?: Awaited<ReturnType<typeof import('./merge-qlora.js').nf4BaseWithAdapter>>;
}

export async function loadMergedModel(modelDir: string, adapterDir: string, opts: {
  device: Device;
  dequantizedBase: boolean;
  /** Also build the NF4 base + adapter of a QLoRA adapter (needed for dequantizedBase anyway). */
  loadNf4: boolean;
  say: (line: string) => void;
}): Promise<MergedModel> {
  const q = await import('./merge-qlora.js');
  const qlora = q.qloraRun(adapterDir);
  if (opts.dequantizedBase && !qlora) {
    throw new SftError(`--dequantized-base: ${adapterDir} was not trained on a 4-bit base (its sft_config.json has no bits 4), so there is no NF4 base to dequantize; merge without it`);
  }
  const nf4 = qlora && (opts.loadNf4 || opts.dequantizedBase) ? await q.nf4BaseWithAdapter(modelDir, adapterDir) : undefined;
  if (qlora) {
    opts.say(`${adapterDir} was trained with QLoRA (train_mode ${qlora.trainMode}, bits 4): during training its base was NF4 with double quantization, not these full-precision weights.`);
    opts.say(opts.dequantizedBase
      ? '  Merging into the dequantized NF4 base: dequant(NF4(W)) + BA, the weights it was trained against (as peft merges on a 4-bit model; written unquantized).'
      : '  Merging into the full-precision base: W + BA. --dequantized-base merges into dequant(NF4(W)) + BA instead, the weights it was trained against.');
  }
  const { model, native } = await loadBase(modelDir, { device: opts.device });
  if (nf4 && opts.dequantizedBase) q.useDequantizedBase(model, nf4.model, nf4.quantized);
  applyLoraAdapter(model, adapterDir);
  model.mergeLora();
  return { model, native, qlora, nf4 };
}

/** The merged model's chat_template: the adapter's training template, so that chat and serve on the
 *  merged model (and other tools reading its chat_template) lay out prompts as training did. */
export function mergedChatTemplate(trainedWith: string | undefined): { template?: string; notice: string } {
  if (trainedWith === undefined) return { notice: "chat_template: the base model's (the adapter does not say which template it was trained with)" };
  if (trainedWith === CHAT_TEMPLATE) return { notice: "chat_template: the base model's own, which the adapter was trained with" };
  return { template: builtInJinja(getTemplate(trainedWith)), notice: `chat_template: template "${trainedWith}", which the adapter was trained with` };
}

/** mergedChatTemplate of an adapter folder. */
export function adapterChatTemplate(adapterDir: string): { template?: string; notice: string } {
  return mergedChatTemplate(trainingTemplateName(adapterDir));
}
