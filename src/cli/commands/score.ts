// `sft score`: log-probability of each token of a text (or id list) under a model, with mean loss and
// perplexity — a quick check that a model, an adapter or a converted checkpoint computes what it should.
import type { Argv, CommandModule } from 'yargs';
import { deviceFromFlag, withDevice, type DeviceFlag } from '../device-option.js';
import { precisionOptions, withPrecision, type PrecisionArgs } from '../precision-option.js';
import { scoreIds } from '../../chat/score.js';
import { SftError } from '../../errors.js';

interface ScoreArgs extends PrecisionArgs {
  device: DeviceFlag;
  model: string;
  adapter?: string;
  text?: string;
  ids?: string;
  json: boolean;
  bos: boolean;
}

const score: CommandModule<object, ScoreArgs> = {
  command: 'score',
  describe: 'Print the log-probability of each token of a text, the mean loss and the perplexity',
  builder: (y: Argv<object>): Argv<ScoreArgs> =>
    withPrecision(withDevice(y))
      .option('model', { type: 'string', demandOption: true, describe: 'HF model folder' })
      .option('adapter', { type: 'string', describe: 'PEFT LoRA adapter folder to apply' })
      .option('text', { type: 'string', describe: 'Text to score (tokenized without BOS/EOS)' })
      .option('ids', { type: 'string', describe: 'Comma-separated token ids to score, e.g. 1,2,3' })
      .option('json', { type: 'boolean', default: false, describe: 'Print {ids, tokens, logprobs, meanLoss, perplexity}' })
      .option('bos', { type: 'boolean', default: false, describe: "Prepend the tokenizer's BOS id" })
      .conflicts('text', 'ids')
      .check((a) => {
        if (a.text === undefined && a.ids === undefined) throw new SftError('give --text "..." or --ids 1,2,3.');
        return true;
      }),
  handler: async (argv) => {
    // Loaded on use: the engine (native addon) stays out of `sft --help` and of tests of this file's helpers.
    const { loadModel } = await import('../../model/load.js');
    const loaded = await loadModel({ modelDir: argv.model, adapterDir: argv.adapter, device: await deviceFromFlag(argv.device), ...precisionOptions(argv) });
    const { tok } = loaded;
    let ids = argv.ids !== undefined ? parseIds(argv.ids) : tok.encode(argv.text ?? '');
    if (argv.bos) {
      if (tok.bosId === undefined) throw new SftError(`the tokenizer in ${argv.model} has no BOS token: drop --bos.`);
      ids = [tok.bosId, ...ids];
    }
    const result = await scoreIds(loaded.model, ids, loaded.native.vocabSize);
    const tokens = ids.map((id) => tok.decode([id], { skipSpecialTokens: false }));
    if (argv.json) {
      process.stdout.write(JSON.stringify({ ids, tokens, ...result }) + '\n');
      return;
    }
    const rows = ids.map((id, i) => {
      const lp = result.logprobs[i];
      return `${String(i).padStart(5)} ${String(id).padStart(8)} ${(lp === null ? '-' : lp.toFixed(4)).padStart(10)}  ${JSON.stringify(tokens[i])}`;
    });
    process.stdout.write(
      `${'pos'.padStart(5)} ${'id'.padStart(8)} ${'logprob'.padStart(10)}  token\n${rows.join('\n')}\n` +
        `mean loss ${result.meanLoss.toFixed(6)} over ${ids.length - 1} predicted tokens, perplexity ${result.perplexity.toFixed(4)}\n`,
    );
  },
};
export default score;

export function parseIds(list: string): number[] {
  return list.split(',').map((s, i) => {
    const t = s.trim();
    if (!/^-?\d+$/.test(t)) throw new SftError(`--ids item ${i + 1} "${t}" is not an integer: write ids as 1,2,3.`);
    return Number(t);
  });
}
