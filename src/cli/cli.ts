// Registers the commands; each lives in its own file under commands/ and keeps its handler thin.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import type { CommandModule } from 'yargs';
import train from './commands/train.js';
import chat from './commands/chat.js';
import score from './commands/score.js';
import initModel from './commands/init-model.js';
import evalCommand from './commands/eval.js';
import serve from './commands/serve.js';
import merge from './commands/merge.js';
import exportCommand from './commands/export.js';
import plot from './commands/plot.js';
import verify from './commands/verify.js';
import { SftError } from '../errors.js';
import { handleClosedOutput } from './closed-output.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const commands: CommandModule<object, any>[] = [train, chat, score, evalCommand, serve, merge, exportCommand, plot, verify, initModel];

export async function main(argv: string[]): Promise<void> {
  handleClosedOutput();
  let cli = yargs(argv.length ? argv : hideBin(process.argv))
    .scriptName('sft')
    .usage('$0 <command> [options]')
    // Not strictCommands(): `sft train` passes unknown --key value tokens on as config overrides.
    .demandCommand(1, 'Name a command: sft <command> --help shows its options.')
    .help()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err) => {
      if (err) throw err;
      throw new SftError(msg);
    });
  for (const c of commands) cli = cli.command(c);
  cli = cli.command('$0', false, {}, (argv) => {
    const names = commands.map((c) => String(c.command).split(' ')[0]);
    throw new SftError(`unknown command "${String(argv._[0] ?? '')}" — commands: ${names.join(', ')} (sft --help)`);
  });
  try {
    await cli.parseAsync();
  } catch (err) {
    if (err instanceof SftError) {
      process.stderr.write(`sft: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    throw err;
  }
}
