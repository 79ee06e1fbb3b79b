// `sft merge --model BASE --adapter DIR --out DIR [--dtype f32|f16|bf16]`: fold a LoRA adapter into the
// base weights (W + lora_alpha/r * B A, exactly PEFT's merge) and write a plain HF model folder whose
// chat_template is the adapter's training template.
import type { Argv, CommandModule } from 'yargs';
import { deviceFromFlag, withDevice, type DeviceFlag } from '../device-option.js';
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { SftError } from '../../errors.js';
import type { SaveDtype } from '../../model/save.js';
import { CHAT_TEMPLATE, getTemplate } from '../../data/templates.js';
import { builtInJinja } from '../../data/chat-template.js';

interface MergeArgs {
  device: DeviceFlag;
  model: string;
  adapter: string;
  out: string;
  dtype?: string;
  'max-shard-size'?: string;
  force: boolean;
}

const merge: CommandModule<object, MergeArgs> = {
  command: 'merge',
  describe: 'Fold a LoRA adapter into its base model and write a Hugging Face model folder',
  builder: (y: Argv<object>): Argv<MergeArgs> =>
    withDevice(y)
      .option('model', { type: 'string', demandOption: true, describe: 'Base HF model folder' })
      .option('adapter', { type: 'string', demandOption: true, describe: 'PEFT LoRA adapter folder' })
      .option('out', { type: 'string', demandOption: true, describe: 'Folder to write the merged model into' })
      .option('dtype', { type: 'string', choices: ['f32', 'f16', 'bf16'], describe: "Weight dtype (default: the base checkpoint's)" })
      .option('max-shard-size', { type: 'string', default: '5GB', describe: 'Largest safetensors shard (e.g. 2GB, 500MB)' })
      .option('force', { type: 'boolean', default: false, describe: 'Write into a non-empty --out' }),
  handler: async (argv) => {
    for (const [flag, dir] of [['--model', argv.model], ['--adapter', argv.adapter]] as const) {
      if (existsSync(argv.out) && existsSync(dir) && realpathSync(argv.out) === realpathSync(dir)) {
        throw new SftError(`--out ${argv.out} is the ${flag} folder: merging would write over it; choose another --out`);
      }
    }
    if (existsSync(argv.out) && readdirSync(argv.out).length && !argv.force) {
      throw new SftError(`--out ${argv.out} is not empty; choose another folder or pass --force (it replaces the model files there)`);
    }
    const { loadBase, applyLoraAdapter, trainingTemplateName } = await import('../../model/load.js');
    const chat = mergedChatTemplate(trainingTemplateName(argv.adapter));
    const { writeHfModel, hfModelBytes, WEIGHT_FILE } = await import('../../model/save.js');
    const { writeFolderFiles } = await import('../../io/atomic.js');
    // Merging uses the full-precision base, also for an adapter trained with QLoRA (as PEFT does
    // when merging onto the 16-bit model).
    const { model } = await loadBase(argv.model, { device: await deviceFromFlag(argv.device) });
    applyLoraAdapter(model, argv.adapter);
    model.mergeLora();
    const dtype = (argv.dtype?.toUpperCase() as SaveDtype | undefined) ?? sourceDtype(argv.model);
    const maxShardBytes = parseSize(argv['max-shard-size'] ?? '5GB');
    // Staged, then renamed into --out; an earlier model's shards that this one does not write again
    // are removed, so the loader cannot mix the two.
    let r = { files: [] as string[], bytes: 0 };
    writeFolderFiles(argv.out, (staging) => (r = writeHfModel(staging, model, { sourceDir: argv.model, dtype, maxShardBytes, chatTemplate: chat.template })), {
      bytesNeeded: hfModelBytes(model, dtype),
      replaces: (name) => WEIGHT_FILE.test(name),
    });
    process.stdout.write(`Merged ${argv.adapter} into ${argv.model}: ${argv.out} (${r.files.length} file(s), ${(r.bytes / 2 ** 20).toFixed(1)} MiB, ${dtype})\n  ${chat.notice}\n`);
  },
};

/** The merged folder's chat_template: the adapter's training template, so that chat and serve on the
 *  merged model (and other tools reading its chat_template) lay out prompts as training did. */
export function mergedChatTemplate(trainedWith: string | undefined): { template?: string; notice: string } {
  if (trainedWith === undefined) return { notice: "chat_template: the base model's (the adapter does not say which template it was trained with)" };
  if (trainedWith === CHAT_TEMPLATE) return { notice: "chat_template: the base model's own, which the adapter was trained with" };
  return { template: builtInJinja(getTemplate(trainedWith)), notice: `chat_template: template "${trainedWith}", which the adapter was trained with` };
}

/** The dtype config.json declares (torch_dtype), defaulting to F32. */
function sourceDtype(modelDir: string): SaveDtype {
  try {
    const t = (JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')) as { torch_dtype?: string }).torch_dtype;
    return t === 'float16' ? 'F16' : t === 'bfloat16' ? 'BF16' : 'F32';
  } catch {
    return 'F32';
  }
}

export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?$/i.exec(s.trim());
  if (!m) throw new SftError(`--max-shard-size "${s}": expected a size such as 5GB or 500MB`);
  const unit = (m[2] ?? 'B').toUpperCase();
  const mult: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30 };
  return Number(m[1]) * mult[unit];
}

export default merge;
