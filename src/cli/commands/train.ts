// `sft train --config FILE [--key value ...] [--dry-run]`: LoRA fine-tuning from a Firefly-style
// JSON config; any config key can be overridden on the command line, as HF's argument parser allows.
import type { Argv, CommandModule } from 'yargs';
import { loadConfig } from '../../config/loader.js';

interface TrainArgs {
  config: string;
  'dry-run': boolean;
  resume?: string;
  'skip-bad-lines': boolean;
  _: (string | number)[];
}

const train: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'Fine-tune a model from a Firefly-style JSON config (any key can be overridden: --learning_rate 1e-4)',
  builder: (y: Argv<object>): Argv<TrainArgs> =>
    y
      .option('config', { type: 'string', demandOption: true, describe: 'Training config (JSON, Firefly train_args keys)' })
      .option('dry-run', { type: 'boolean', default: false, describe: 'Show samples with their trained spans marked, then stop' })
      .option('skip-bad-lines', { type: 'boolean', default: false, describe: 'Skip (count and report) malformed or non-UTF-8 data lines instead of stopping' })
      .option('resume', { type: 'string', describe: 'Continue from a checkpoint in output_dir: latest (default when given bare) or checkpoint-N' })
      // Config overrides are not yargs options: hand them to the config loader untouched.
      .parserConfiguration({ 'unknown-options-as-args': true, 'parse-positional-numbers': false })
      .example('$0 train --config configs/tiny-demo.json', 'the CPU demo (about a minute)')
      .example('$0 train --config configs/qwen2-7b.json --learning_rate 1e-4 --output_dir out/x', 'override keys') as unknown as Argv<TrainArgs>,
  handler: async (argv) => {
    const overrides = argv._.slice(1).map(String);
    const { config, notices } = loadConfig(argv.config, overrides);
    for (const n of notices) process.stderr.write(`note: ${n}\n`);
    const { train: run } = await import('../../train/recipe.js');
    // First Ctrl-C (or SIGTERM): finish the current step, write a checkpoint, exit 130 (143).
    // A second one exits at once; checkpoints are written atomically, so nothing is corrupted.
    let stopSignal: NodeJS.Signals | undefined;
    const onSignal = (sig: NodeJS.Signals) => {
      const code = sig === 'SIGTERM' ? 143 : 130;
      if (stopSignal) process.exit(code);
      stopSignal = sig;
      process.stderr.write(`\n${sig}: finishing the current step and saving a checkpoint (${sig === 'SIGINT' ? 'Ctrl-C' : 'signal'} again to quit now)\n`);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      const resume = argv.resume === undefined ? undefined : argv.resume || 'latest';
      const r = await run(config, { dryRun: argv['dry-run'], resume, skipBadLines: argv['skip-bad-lines'], shouldStop: () => stopSignal !== undefined });
      if (r.interrupted) {
        const again = ['sft train', '--config', argv.config, ...overrides, '--resume', 'latest'].join(' ');
        process.stderr.write(`Resume with: ${again}\n`);
        process.exitCode = stopSignal === 'SIGTERM' ? 143 : 130;
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
};

export default train;
