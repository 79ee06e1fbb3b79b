// `sft merge --model BASE --adapter DIR --out DIR [--dtype f32|f16|bf16]`: fold a LoRA adapter into the
// base weights (W + lora_alpha/r * B A, exactly PEFT's merge; src/model/merged.ts) and write a plain HF model folder whose
// chat_template is the adapter's training template. A QLoRA adapter (trained on an NF4 base) is said
// so, and `--dequantized-base` merges it into the base it was trained on, dequant(NF4(W)) + lora_alpha/r
// * B A (src/model/merge-qlora.ts); either way the merged model is scored against NF4 base + adapter on
// a few samples.
import type { Argv, CommandModule } from 'yargs';
import { deviceFromFlag, withDevice, type DeviceFlag } from '../device-option.js';
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { SftError } from '../../errors.js';
import type { SaveDtype } from '../../model/save.js';

interface MergeArgs {
  device: DeviceFlag;
  model: string;
  adapter: string;
  out: string;
  dtype?: string;
  'max-shard-size'?: string;
  force: boolean;
  'dequantized-base': boolean;
  'score-file'?: string;
  'score-samples': number;
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
      .option('force', { type: 'boolean', default: false, describe: 'Write into a non-empty --out' })
      .option('dequantized-base', {
        type: 'boolean', default: false,
        describe: 'QLoRA adapter: merge into the NF4 base it was trained on, dequantized (dequant(NF4(W)) + BA) instead of the full-precision W',
      })
      .option('score-file', { type: 'string', describe: "QLoRA adapter: data to score the merge on (default: the adapter's train_file)" })
      .option('score-samples', { type: 'number', default: 8, describe: 'QLoRA adapter: samples scored, NF4 base + adapter against the merged model (0: no scoring)' }),
  handler: async (argv) => {
    for (const [flag, dir] of [['--model', argv.model], ['--adapter', argv.adapter]] as const) {
      if (existsSync(argv.out) && existsSync(dir) && realpathSync(argv.out) === realpathSync(dir)) {
        throw new SftError(`--out ${argv.out} is the ${flag} folder: merging would write over it; choose another --out`);
      }
    }
    if (existsSync(argv.out) && readdirSync(argv.out).length && !argv.force) {
      throw new SftError(`--out ${argv.out} is not empty; choose another folder or pass --force (it replaces the model files there)`);
    }
    if (argv['score-samples'] < 0 || !Number.isInteger(argv['score-samples'])) throw new SftError(`--score-samples ${argv['score-samples']}: expected an integer >= 0`);
    const { loadMergedModel, adapterChatTemplate } = await import('../../model/merged.js');
    const chat = adapterChatTemplate(argv.adapter);
    const { writeHfModel, hfModelBytes, WEIGHT_FILE } = await import('../../model/save.js');
    const { writeFolderFiles } = await import('../../io/atomic.js');
    const q = await import('../../model/merge-qlora.js');
    const say = (l: string) => process.stdout.write(l + '\n');
    const { model, qlora, nf4 } = await loadMergedModel(argv.model, argv.adapter, {
      device: await deviceFromFlag(argv.device), dequantizedBase: argv['dequantized-base'], loadNf4: true, say,
    });
    if (qlora && nf4 && argv['score-samples'] > 0) {
      const file = argv['score-file'] ?? qlora.trainFile;
      if (!file || !existsSync(file)) {
        say(`  Not scored: ${argv['score-file'] ? `--score-file ${file} does not exist` : `the adapter's train_file ${file || '(none)'} is not found here`}; pass --score-file FILE to compare NF4 base + adapter with the merged model.`);
      } else {
        const s = await q.scoreMerge({ modelDir: argv.model, file, n: argv['score-samples'], template: nf4.template, maxSeqLength: qlora.maxSeqLength, nf4: nf4.model, merged: model, vocabSize: nf4.vocabSize });
        say(`  Score on ${s.samples} samples of ${file} (${s.tokens} trained tokens): NF4 base + adapter ${q.lossText(s.nf4)}; merged ${q.lossText(s.merged)}; difference ${(s.merged - s.nf4 >= 0 ? '+' : '') + (s.merged - s.nf4).toFixed(4)}`);
      }
    }
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
