// `sft train --config FILE [--key value ...] [--dry-run]`: LoRA fine-tuning from a Firefly-style
// JSON config; any config key can be overridden on the command line, as HF's argument parser allows.
import type { Argv, CommandModule } from 'yargs';
import { loadConfig } from '../../config/loader.js';
import { keysHelp } from '../../config/key-help.js';
import { contextNotice } from '../../model/hfconfig.js';
import { clearStopRequest, requestStop, signalExitCode } from '../../util/interrupt.js';
import { onClosedOutput } from '../closed-output.js';
import { SftError } from '../../errors.js';

interface TrainArgs {
  config: string;
  'dry-run': boolean;
  resume?: string;
  'skip-bad-lines': boolean;
  'nproc-per-node'?: number;
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
      .option('nproc-per-node', { type: 'number', describe: 'Data parallel on this machine: N ranks under mpirun (Open MPI), the global batch per_device_train_batch_size x gradient_accumulation_steps x N' })
      .option('resume', { type: 'string', describe: 'Continue from a checkpoint in output_dir: latest (default when given bare) or checkpoint-N' })
      // Config overrides are not yargs options: hand them to the config loader untouched.
      .parserConfiguration({ 'unknown-options-as-args': true, 'parse-positional-numbers': false })
      .example('$0 train --config configs/tiny-demo.json', 'the CPU demo (about a minute)')
      .example('$0 train --config configs/qwen2-7b.json --learning_rate 1e-4 --output_dir out/x', 'override keys')
      .epilogue(keysHelp(Math.min(100, process.stdout.columns || 100))) as unknown as Argv<TrainArgs>,
  handler: async (argv) => {
    const nproc = argv['nproc-per-node'];
    if (nproc !== undefined && !(Number.isInteger(nproc) && nproc >= 1)) throw new SftError(`--nproc-per-node must be a positive integer, got ${nproc}`);
    // A dry run plans one rank of N (ZeRO's slice of the optimizer state) in this one process.
    if (nproc !== undefined && nproc !== 1 && !argv['dry-run']) {
      // The same command as N ranks; each rank runs this handler again without the option.
      const { launchLocal } = await import('../launch.js');
      const args = process.argv.slice(1).filter((a, i, all) => !/^--nproc-per-node(=|$)/.test(a) && !/^--nproc-per-node$/.test(all[i - 1] ?? ''));
      process.exitCode = await launchLocal(nproc, args);
      return;
    }
    const overrides = argv._.slice(1).map(String);
    const { config, notices } = loadConfig(argv.config, overrides);
    const context = contextNotice(config.model_name_or_path, config.max_seq_length);
    for (const n of context ? [...notices, context] : notices) process.stderr.write(`note: ${n}\n`);
    const { train: run } = await import('../../train/recipe.js');
    // A dry run's product is what it prints; a real run's is output_dir: it outlives a closed pipe.
    if (!argv['dry-run']) onClosedOutput('continue');
    // First Ctrl-C (or SIGTERM): stop within a second and exit 130 (143). While training, the
    // step under way is dropped and the last complete one saved as a checkpoint; while loading or
    // reading the data (util/interrupt.ts: those phases poll requestStop's flag), nothing is kept.
    // A second one exits at once; checkpoints are written atomically, so nothing is corrupted.
    let stopSignal: NodeJS.Signals | undefined;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopSignal) process.exit(signalExitCode(sig));
      stopSignal = sig;
      requestStop(sig);
      process.stderr.write(`\n${sig}: stopping; once training has begun, the last complete step is saved as a checkpoint (${sig === 'SIGINT' ? 'Ctrl-C' : 'signal'} again to quit now)\n`);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      const resume = argv.resume === undefined ? undefined : argv.resume || 'latest';
      const r = await run(config, { dryRun: argv['dry-run'], dryRunRanks: nproc, resume, skipBadLines: argv['skip-bad-lines'], shouldStop: () => stopSignal !== undefined });
      if (r.interrupted) {
        const again = ['sft train', '--config', argv.config, ...overrides, '--resume', 'latest'].join(' ');
        process.stderr.write(`Resume with: ${again}\n`);
        process.exitCode = signalExitCode(stopSignal ?? 'SIGINT');
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      clearStopRequest();
    }
  },
};

export default train;
