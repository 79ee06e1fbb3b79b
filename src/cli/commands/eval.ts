// `sft eval`: placeholder until the C-Eval/CMMLU/MMLU evaluator lands (issue 6).
import type { CommandModule } from 'yargs';
import { SftError } from '../../errors.js';

const evalCommand: CommandModule<object, object> = {
  command: 'eval',
  describe: 'C-Eval / CMMLU / MMLU few-shot accuracy (not implemented yet)',
  handler: () => {
    throw new SftError('sft eval is not implemented yet in this build');
  },
};

export default evalCommand;
