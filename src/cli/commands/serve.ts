// `sft serve`: an OpenAI-compatible HTTP API (chat completions, completions, models, health) over a model
// and optional LoRA adapter. Requests share the model through the scheduler in src/serve/scheduler.ts.
// Who may call (Host, Origin, the API key) is decided in src/serve/server.ts; this file reads the flags.
import { readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { deviceFromFlag, withDevice, type DeviceFlag } from '../device-option.js';
import { precisionOptions, withPrecision, type PrecisionArgs } from '../precision-option.js';
import { CHAT_TEMPLATE, getTemplate } from '../../data/templates.js';
import { resolveTemplate } from '../../data/chat-template.js';
import { SftError } from '../../errors.js';

interface ServeArgs extends PrecisionArgs {
  device: DeviceFlag;
  model: string;
  adapter?: string;
  template?: string;
  host: string;
  port: number;
  'model-name'?: string;
  'max-context'?: number;
  'api-key'?: string;
  'api-key-file'?: string;
  'allowed-hosts'?: string[];
  'allowed-origins'?: string[];
  'parse-special-tokens': boolean;
  'max-batch': number;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

const serve: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'OpenAI-compatible HTTP API: /v1/chat/completions, /v1/completions, /v1/models, /health',
  builder: (y: Argv<object>): Argv<ServeArgs> =>
    withPrecision(withDevice(y))
      .option('model', { type: 'string', demandOption: true, describe: 'HF model folder (config.json, weights, tokenizer)' })
      .option('adapter', { type: 'string', describe: 'PEFT LoRA adapter folder to apply' })
      .option('template', { type: 'string', describe: "Chat template for /v1/chat/completions, or chat_template for the model's own (default: the adapter's training template, else the model's chat_template)" })
      .option('host', { type: 'string', default: '127.0.0.1', describe: 'Address to listen on (0.0.0.0 exposes the API to the network)' })
      .option('port', { type: 'number', default: 8000, describe: 'Port to listen on (0 picks a free one)' })
      .option('model-name', { type: 'string', describe: 'Model id clients send (default: the adapter\'s or model\'s folder name)' })
      .option('max-context', { type: 'number', describe: "Most tokens prompt + completion may take (default: the model's max_position_embeddings)" })
      .option('api-key-file', { type: 'string', describe: 'Require "Authorization: Bearer KEY" on /v1/* requests, KEY being the first line of this file (or set SFT_API_KEY)' })
      .option('api-key', { type: 'string', describe: 'As --api-key-file, the key given here: other users see it in `ps`' })
      .option('allowed-hosts', {
        type: 'string',
        array: true,
        describe: "Host names clients use besides localhost and the --host address (comma-separated; .example.org for a domain; '*' any, which allows DNS rebinding)",
      })
      .option('allowed-origins', {
        type: 'string',
        array: true,
        describe: "Origins of web pages that may call the API, like http://localhost:3000 (comma-separated; '*' any)",
      })
      .option('max-batch', {
        type: 'number',
        default: 8,
        describe: 'Requests generated together (continuous batching: one engine step feeds each its next token; 1..8, 1 = one at a time)',
      })
      .option('parse-special-tokens', { type: 'boolean', default: false, describe: 'Special-token strings in chat messages (<|im_end|>, </s>, ...) become their ids; default: text' }),
  handler: async (argv) => {
    // The key first: a bad key file fails before anything is loaded, and the notice comes before any other output.
    const apiKey = resolveApiKey(argv['api-key'], argv['api-key-file'], process.env.SFT_API_KEY);
    // Loaded on use: the engine (native addon) stays out of `sft --help`.
    const { parseAllowedHosts, parseAllowedOrigins, startServer } = await import('../../serve/server.js');
    const allowedHosts = parseAllowedHosts(commaList(argv['allowed-hosts']));
    const allowedOrigins = parseAllowedOrigins(commaList(argv['allowed-origins']));
    if (!Number.isInteger(argv.port) || argv.port < 0 || argv.port > 65535) throw new SftError(`--port must be an integer 0..65535, got ${argv.port}.`);
    // A misspelt name fails before the model is loaded; "chat_template" needs the tokenizer.
    if (argv.template !== undefined && argv.template !== CHAT_TEMPLATE) getTemplate(argv.template);
    const { loadModel } = await import('../../model/load.js');
    const maxBatch = argv['max-batch'];
    if (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > 8) throw new SftError(`--max-batch must be an integer 1..8, got ${maxBatch}.`);
    const { FifoScheduler } = await import('../../serve/scheduler.js');
    const { BatchScheduler } = await import('../../serve/batch-scheduler.js');
    const loaded = await loadModel({ modelDir: argv.model, adapterDir: argv.adapter, device: await deviceFromFlag(argv.device), ...precisionOptions(argv) });
    const template = argv.template === undefined ? loaded.template : resolveTemplate(argv.template, loaded.tok);
    const maxContext = argv.maxContext ?? contextOf(loaded.hf);
    if (!Number.isInteger(maxContext) || maxContext < 2) throw new SftError(`--max-context must be an integer >= 2, got ${maxContext}.`);
    const id = argv.modelName ?? basename(resolve(argv.adapter ?? argv.model));

    // Continuous batching on the CPU, where decode()'s rows are checked bit for bit against lone feeds; the
    // CUDA decode step has not run on a GPU yet, so a GPU serves one request at a time.
    const batching = maxBatch > 1 && loaded.native.device !== 'cuda';
    const scheduler = batching ? new BatchScheduler(loaded.model, loaded.tok, { maxBatch }) : new FifoScheduler(loaded.model, loaded.tok);
    let running;
    try {
      running = await startServer({
        ctx: { id, tok: loaded.tok, template, maxContext, vocabSize: loaded.native.vocabSize, parseSpecialTokens: argv['parse-special-tokens'] },
        scheduler,
        apiKey,
        allowedHosts,
        allowedOrigins,
        host: argv.host,
        port: argv.port,
        log: (line) => process.stderr.write(`${line}\n`),
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EADDRINUSE') throw new SftError(`port ${argv.port} on ${argv.host} is in use: pick another with --port (0 = any free port).`);
      if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND') throw new SftError(`--host ${argv.host} is not an address of this machine.`);
      throw err;
    }
    process.stderr.write(
      `sft serve: model "${id}" (template ${template.name}, context ${maxContext} tokens) at ${running.url}/v1\n` +
        `  chat page: ${running.url}/\n` +
        (batching
          ? `  up to ${maxBatch} requests generate together (continuous batching), the rest wait in order\n`
          : `  requests are queued and generated one at a time${maxBatch > 1 ? ' (continuous batching awaits a GPU check of its decode step)' : ''}\n`),
    );
    if (!LOOPBACK.has(argv.host)) {
      process.stderr.write(`  listening on ${argv.host}: anyone who can reach this port can use the model${apiKey ? '' : ' (no API key set: --api-key-file or SFT_API_KEY)'}\n`);
      if (allowedHosts.length === 0) process.stderr.write("  clients must use this machine's address; to let them use a name, add --allowed-hosts NAME\n");
    }
    const server = running;
    await new Promise<void>((done) => {
      const stop = (): void => {
        process.stderr.write('sft serve: shutting down\n');
        server.close().then(done, done);
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
  },
};

export default serve;

/** The model's context length from its HF config; configs spell it differently per family. */
function contextOf(hf: Record<string, unknown>): number {
  for (const key of ['max_position_embeddings', 'model_max_length', 'seq_length', 'n_positions']) {
    const v = hf[key];
    if (typeof v === 'number' && v > 0) return v;
  }
  throw new SftError("the model's config.json gives no max_position_embeddings: pass --max-context N.");
}

/** The API key from --api-key-file, --api-key or SFT_API_KEY, in that order; undefined for none. A key on the
 *  command line is visible to every user of the machine (ps, /proc/PID/cmdline), so it gets a notice. */
export function resolveApiKey(flag: string | undefined, file: string | undefined, env: string | undefined): string | undefined {
  if (flag !== undefined && file !== undefined) throw new SftError('give the API key once: --api-key-file PATH or --api-key KEY, not both.');
  if (file !== undefined) return readKeyFile(file);
  if (flag !== undefined) {
    if (flag.trim() === '') throw new SftError('--api-key is empty: give a key, or leave the flag out to serve without one.');
    process.stderr.write('sft serve: note: --api-key is visible to other users of this machine (ps); prefer --api-key-file PATH or SFT_API_KEY\n');
    return flag;
  }
  if (env === undefined) return undefined;
  // Set but empty is a mistake (SFT_API_KEY=$(cat missing-file)), not a request to serve without a key.
  if (env.trim() === '') throw new SftError('SFT_API_KEY is set but empty: set it to the key, or unset it to serve without one.');
  return env.trim();
}

/** The first line of `path`, trimmed. */
function readKeyFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'it is a folder' : e.message;
    throw new SftError(`--api-key-file ${path}: cannot read it (${why}); give a file whose first line is the key.`);
  }
  const key = text.split(/\r?\n/, 1)[0].trim();
  if (key === '') throw new SftError(`--api-key-file ${path}: its first line is empty; write the key on the first line.`);
  return key;
}

/** A repeatable, comma-separated flag's values. */
function commaList(values: string[] | undefined): string[] {
  return (values ?? []).flatMap((v) => String(v).split(',')).map((v) => v.trim()).filter((v) => v !== '');
}
