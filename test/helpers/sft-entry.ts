// `sft` entry point for tests: the same as bin/sft.js, but on the TypeScript sources.
import { main } from '../../src/cli/cli.js';

main(process.argv.slice(2)).catch((err: Error) => {
  process.stderr.write(`sft: ${err?.message ?? err}\n`);
  process.exit(1);
});
