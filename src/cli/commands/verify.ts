// `sft verify DIR`: prove a checkpoint or an output_dir (checksums, then every file against its
// schema and the others). Exit status 0 when everything passes, 1 when anything failed.
import type { Argv, CommandModule } from 'yargs';
import { verifyFolder } from '../../train/verify.js';

interface VerifyArgs {
  dir: string;
}

const verify: CommandModule<object, VerifyArgs> = {
  command: 'verify <dir>',
  describe: 'Check a checkpoint, or an output_dir and its checkpoints: checksums, schemas, consistency',
  builder: (y: Argv<object>): Argv<VerifyArgs> =>
    y.positional('dir', { type: 'string', demandOption: true, describe: 'checkpoint-N folder or output_dir' }) as Argv<VerifyArgs>,
  handler: (argv) => {
    const r = verifyFolder(argv.dir);
    for (const l of r.lines) process.stdout.write(`${l}\n`);
    if (r.failed) process.exitCode = 1;
  },
};

export default verify;
