// `sft chat`: talk to a model (with an optional LoRA adapter). A REPL on a terminal; with piped input every
// line is the next user turn of one conversation and each reply is printed on its own.
import readline from 'node:readline';
import { randomInt } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import type { Argv, CommandModule } from 'yargs';
import { deviceFromFlag, withDevice, type DeviceFlag } from '../device-option.js';
import { precisionOptions, withPrecision, type PrecisionArgs } from '../precision-option.js';
import { hasSystemPart } from '../../data/templates.js';
import { resolveTemplate } from '../../data/chat-template.js';
import { ChatSession } from '../../chat/session.js';
import { SftError } from '../../errors.js';

interface ChatArgs extends PrecisionArgs {
  device: DeviceFlag;
  model: string;
  adapter?: string;
  template?: string;
  system?: string;
  temperature: number;
  'top-p': number;
  'top-k': number;
  'repetition-penalty': number;
  'max-new-tokens': number;
  'max-context'?: number;
  seed?: number;
  stop?: string[];
  'parse-special-tokens': boolean;
}

const chat: CommandModule<object, ChatArgs> = {
  command: 'chat',
  describe: 'Chat with a model and optional LoRA adapter (REPL on a terminal; one user turn per line when piped)',
  builder: (y: Argv<object>): Argv<ChatArgs> =>
    withPrecision(withDevice(y))
      .option('model', { type: 'string', demandOption: true, describe: 'HF model folder (config.json, weights, tokenizer)' })
      .option('adapter', { type: 'string', describe: 'PEFT LoRA adapter folder to apply' })
      .option('template', { type: 'string', describe: "Chat template name, or chat_template for the model's own (default: the adapter's training template, else the model's chat_template)" })
      .option('system', { type: 'string', describe: "System prompt (default: the template's)" })
      // Defaults are Firefly's chat script's (script/chat/chat.py).
      .option('temperature', { type: 'number', default: 0.35, describe: 'Sampling temperature; 0 = greedy' })
      .option('top-p', { type: 'number', default: 0.9, describe: 'Nucleus sampling mass; 1 disables' })
      // Firefly passes no top_k, so transformers' GenerationConfig default (50) applies there.
      .option('top-k', { type: 'number', default: 50, describe: 'Keep the k most likely tokens; 0 disables' })
      .option('repetition-penalty', { type: 'number', default: 1.0, describe: 'HF repetition penalty; 1 disables' })
      .option('max-new-tokens', { type: 'number', default: 500, describe: 'Longest reply in tokens' })
      .option('max-context', { type: 'number', describe: "Tokens the conversation may fill (default: the model's max_position_embeddings)" })
      .option('seed', { type: 'number', describe: 'Sampling seed (default: random, printed on a terminal)' })
      .option('stop', { type: 'string', array: true, describe: 'Extra stop string(s); the reply ends before them' })
      .option('parse-special-tokens', { type: 'boolean', default: false, describe: 'Special-token strings typed in a message (<|im_end|>, </s>, ...) become their ids; default: text' }),
  handler: async (argv) => {
    checkSampling(argv);
    // Loaded on use: the engine (native addon) stays out of `sft --help` and of tests of this file's helpers.
    const { loadModel } = await import('../../model/load.js');
    const loaded = await loadModel({ modelDir: argv.model, adapterDir: argv.adapter, device: await deviceFromFlag(argv.device), ...precisionOptions(argv) });
    const template = argv.template === undefined ? loaded.template : resolveTemplate(argv.template, loaded.tok);
    const maxContext = argv.maxContext ?? contextOf(loaded.hf);
    if (!Number.isInteger(maxContext) || maxContext < 2) throw new SftError(`--max-context must be an integer >= 2, got ${maxContext}.`);
    if (argv.system !== undefined && !hasSystemPart(template)) {
      process.stderr.write(`[template ${template.name} has no system part: --system is ignored]\n`);
    }
    const seed = argv.seed ?? randomInt(2 ** 31);
    const interactive = Boolean(process.stdin.isTTY);
    const session = new ChatSession(loaded.model, loaded.tok, {
      template,
      system: argv.system,
      maxContext,
      maxNewTokens: argv.maxNewTokens,
      temperature: argv.temperature,
      topK: argv.topK,
      topP: argv.topP,
      repetitionPenalty: argv.repetitionPenalty,
      seed,
      stopStrings: argv.stop ?? [],
      parseSpecialTokens: argv['parse-special-tokens'],
      onNotice: (m) => process.stderr.write(`[${m}]\n`),
    });
    if (interactive) {
      process.stdout.write(
        `Model ${loaded.modelDir}${loaded.adapterDir ? ` + adapter ${loaded.adapterDir}` : ''}, template ${template.name}, ` +
          `seed ${seed}. /reset starts over, /exit (or Ctrl-D) quits, Ctrl-C stops a reply.\n`,
      );
    }
    await runChat(session, { input: process.stdin, output: process.stdout, errors: process.stderr, interactive });
  },
};
export default chat;

export interface ChatIO {
  input: Readable;
  output: Writable;
  errors: Writable;
  /** Terminal: prompt "User: ", label replies "Assistant: ", report errors and go on. Otherwise print bare
   *  replies and let an error end the run. */
  interactive: boolean;
}

/** The read-reply loop, apart from model loading so tests can drive it. */
export async function runChat(session: Pick<ChatSession, 'send' | 'reset'>, io: ChatIO): Promise<void> {
  const rl = readline.createInterface({
    input: io.input,
    output: io.interactive ? io.output : undefined,
    terminal: io.interactive,
  });
  let replying = false;
  let interrupted = false;
  // Ctrl-C stops the reply being written; at the prompt it quits.
  rl.on('SIGINT', () => {
    if (replying) interrupted = true;
    else rl.close();
  });
  rl.setPrompt('User: ');
  if (io.interactive) rl.prompt();
  try {
    for await (const line of rl) {
      const text = line.trim();
      if (text === '/exit') break;
      if (text === '/reset') {
        session.reset();
        if (io.interactive) io.output.write('(conversation cleared)\n');
      } else if (text) {
        if (io.interactive) io.output.write('Assistant: ');
        replying = true;
        interrupted = false;
        try {
          for await (const chunk of session.send(text)) {
            io.output.write(chunk.text);
            if (interrupted) break;
          }
        } catch (err) {
          if (!(io.interactive && err instanceof SftError)) throw err;
          io.errors.write(`\nsft: ${err.message}`);
        } finally {
          replying = false;
        }
        io.output.write('\n');
      }
      if (io.interactive) rl.prompt();
    }
  } finally {
    rl.close();
  }
}

function checkSampling(argv: {
  temperature: number;
  topP: number;
  topK: number;
  repetitionPenalty: number;
  maxNewTokens: number;
}): void {
  const bad = (flag: string, value: number, want: string): never => {
    throw new SftError(`--${flag} must be ${want}, got ${value}.`);
  };
  if (!(argv.temperature >= 0)) bad('temperature', argv.temperature, '>= 0 (0 = greedy)');
  if (!(argv.topP > 0 && argv.topP <= 1)) bad('top-p', argv.topP, 'in (0, 1]');
  if (!(Number.isInteger(argv.topK) && argv.topK >= 0)) bad('top-k', argv.topK, 'an integer >= 0');
  if (!(argv.repetitionPenalty > 0)) bad('repetition-penalty', argv.repetitionPenalty, '> 0');
  if (!(Number.isInteger(argv.maxNewTokens) && argv.maxNewTokens >= 1)) bad('max-new-tokens', argv.maxNewTokens, 'an integer >= 1');
}

/** The model's context length from its HF config; configs spell it differently per family. */
function contextOf(hf: Record<string, unknown>): number {
  for (const key of ['max_position_embeddings', 'model_max_length', 'seq_length', 'n_positions']) {
    const v = hf[key];
    if (typeof v === 'number' && v > 0) return v;
  }
  throw new SftError("the model's config.json gives no max_position_embeddings: pass --max-context N.");
}
