// `sft serve`: placeholder until the OpenAI-compatible server lands (issue 6).
import type { CommandModule } from 'yargs';
import { SftError } from '../../errors.js';

const serve: CommandModule<object, object> = {
  command: 'serve',
  describe: 'OpenAI-compatible HTTP API (not implemented yet)',
  handler: () => {
    throw new SftError('sft serve is not implemented yet in this build');
  },
};

export default serve;
