// `sft serve`: an OpenAI-compatible HTTP API (chat completions, completions, models, health) over a model
// and optional LoRA adapter. Requests share the model through the scheduler in src/serve/scheduler.ts.
import { basename, resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { deviceFromFlag, withDevice, type DeviceFlag } from '../device-option.js';
import { getTemplate } from '../../data/templates.js';
import { SftError } from '../../errors.js';

interface ServeArgs {
  device: DeviceFlag;
  model: string;
  adapter?: string;
  template?: string;
  host: string;
  port: number;
  'model-name'?: string;
  'max-context'?: number;
  'api-key'?: string;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

const serve: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'OpenAI-compatible HTTP API: /v1/chat/completions, /v1/completions, /v1/models, /health',
  builder: (y: Argv<object>): Argv<ServeArgs> =>
    withDevice(y)
      .option('model', { type: 'string', demandOption: true, describe: 'HF model folder (config.json, weights, tokenizer)' })
      .option('adapter', { type: 'string', describe: 'PEFT LoRA adapter folder to apply' })
      .option('template', { type: 'string', describe: "Chat template for /v1/chat/completions (default: the adapter's or the model's)" })
      .option('host', { type: 'string', default: '127.0.0.1', describe: 'Address to listen on (0.0.0.0 exposes the API to the network)' })
      .option('port', { type: 'number', default: 8000, describe: 'Port to listen on (0 picks a free one)' })
      .option('model-name', { type: 'string', describe: 'Model id clients send (default: the adapter\'s or model\'s folder name)' })
      .option('max-context', { type: 'number', describe: "Most tokens prompt + completion may take (default: the model's max_position_embeddings)" })
      .option('api-key', { type: 'string', describe: 'Require "Authorization: Bearer KEY" on /v1/* requests' }),
  handler: async (argv) => {
    if (!Number.isInteger(argv.port) || argv.port < 0 || argv.port > 65535) throw new SftError(`--port must be an integer 0..65535, got ${argv.port}.`);
    const chosenTemplate = argv.template === undefined ? undefined : getTemplate(argv.template);
    // Loaded on use: the engine (native addon) stays out of `sft --help`.
    const { loadModel } = await import('../../model/load.js');
    const { FifoScheduler } = await import('../../serve/scheduler.js');
    const { startServer } = await import('../../serve/server.js');
    const loaded = await loadModel({ modelDir: argv.model, adapterDir: argv.adapter, device: await deviceFromFlag(argv.device) });
    const template = chosenTemplate ?? getTemplate(loaded.templateName);
    const maxContext = argv.maxContext ?? contextOf(loaded.hf);
    if (!Number.isInteger(maxContext) || maxContext < 2) throw new SftError(`--max-context must be an integer >= 2, got ${maxContext}.`);
    const id = argv.modelName ?? basename(resolve(argv.adapter ?? argv.model));

    let running;
    try {
      running = await startServer({
        ctx: { id, tok: loaded.tok, template, maxContext, vocabSize: loaded.native.vocabSize },
        scheduler: new FifoScheduler(loaded.model, loaded.tok),
        apiKey: argv.apiKey,
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
        '  requests are queued and generated one at a time (one KV cache)\n',
    );
    if (!LOOPBACK.has(argv.host)) {
      process.stderr.write(`  listening on ${argv.host}: anyone who can reach this port can use the model${argv.apiKey ? '' : ' (no --api-key set)'}\n`);
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
