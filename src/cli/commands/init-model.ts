// `sft init-model`: write a small random model folder in a real HF layout (see src/model/init.ts).
import type { CommandModule } from 'yargs';
import type { Arch } from '../../native/types.js';
import { initModel } from '../../model/init.js';

interface InitModelArgs {
  arch: Arch;
  out: string;
  hidden: number;
  layers: number;
  heads: number;
  'kv-heads'?: number;
  intermediate: number;
  vocab: number;
  seed: number;
  'max-position': number;
  force: boolean;
}

const command: CommandModule<object, InitModelArgs> = {
  command: 'init-model',
  describe: 'Write a small randomly initialised model (config, safetensors, trained BPE tokenizer) for demos and tests',
  builder: (y) =>
    y
      .option('arch', { choices: ['llama', 'baichuan', 'baichuan2', 'qwen2', 'bloom'] as const, demandOption: true, describe: 'Architecture whose HF layout to write' })
      .option('out', { type: 'string', demandOption: true, describe: 'Output folder (must be empty unless --force)' })
      .option('hidden', { type: 'number', default: 256, describe: 'Hidden size' })
      .option('layers', { type: 'number', default: 4, describe: 'Decoder layers' })
      .option('heads', { type: 'number', default: 8, describe: 'Attention heads' })
      .option('kv-heads', { type: 'number', describe: 'K/V heads (default: heads/2; baichuan/baichuan2/bloom: heads)' })
      .option('intermediate', { type: 'number', default: 688, describe: 'MLP intermediate size (bloom: always 4 x hidden)' })
      .option('vocab', { type: 'number', default: 2048, describe: 'Target tokenizer size; config vocab_size is the trained size rounded up to 64' })
      .option('seed', { type: 'number', default: 0, describe: 'Seed of the random weights' })
      .option('max-position', { type: 'number', default: 2048, describe: 'max_position_embeddings' })
      .option('force', { type: 'boolean', default: false, describe: 'Overwrite the model files in a non-empty --out folder' }),
  handler: (argv) => {
    const r = initModel({
      arch: argv.arch,
      outDir: argv.out,
      hidden: argv.hidden,
      layers: argv.layers,
      heads: argv.heads,
      kvHeads: argv['kv-heads'],
      intermediate: argv.intermediate,
      vocab: argv.vocab,
      seed: argv.seed,
      maxPosition: argv['max-position'],
      force: argv.force,
    });
    const n = r.native;
    process.stdout.write(
      `Wrote a random ${n.arch} model to ${r.dir}: ${n.numLayers} layers, hidden ${n.hiddenSize}, ${n.numHeads} heads ` +
      `(${n.numKvHeads} K/V), intermediate ${n.intermediateSize}, vocab ${r.vocabSize} (tokenizer ${r.tokenizerSize}), ` +
      `${(r.parameters / 1e6).toFixed(2)} M parameters.\n`,
    );
  },
};

export default command;
