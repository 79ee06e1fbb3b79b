// Weights & Biases, opt-in and never in training's way. It runs when report_to names "wandb" (or
// "all") and WANDB_API_KEY is set; otherwise one line says why it is off. metrics.jsonl is written
// either way, so nothing depends on wandb being reachable.
//
// @wandb/sdk 0.5.1 is not safe to run in sft's own thread, so it runs in a worker thread:
// - its requests have no timeout and retry for many minutes: every call here races a timer, and a
//   worker can be terminated with whatever it still has pending;
// - some failures (the server refuses to create the run, e.g. HTTP 403 on a project you cannot
//   write to) are thrown from an event listener, which would kill the process: in a worker they
//   only end the worker;
// - init() adds SIGINT/SIGTERM handlers that call process.exit(), which would stop sft before it
//   saves its Ctrl-C checkpoint: signals are not delivered to worker threads.
// Any failure becomes one warning, and wandb is off for the rest of the run.
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { basename, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

/** The calls sft makes; the real client runs @wandb/sdk in a worker (tests inject fakes). */
export interface WandbClient {
  /** Starts the run; resolves to its URL when the SDK knows it. */
  init(opts: WandbInit): Promise<string | undefined>;
  log(metrics: Record<string, number>, step: number): Promise<void>;
  finish(): Promise<void>;
  /** Drops everything still pending (requests that hang, retries): called once, at the end. */
  kill(): void;
}

export interface WandbInit {
  project: string;
  name: string;
  entity?: string;
  config: Record<string, unknown>;
}

export interface WandbSettings {
  report_to: readonly string[];
  output_dir: string;
  /** HF's run_name, when the config has one; the run is named after output_dir otherwise. */
  run_name?: string | null;
}

export interface WandbOptions {
  print: (line: string) => void;
  /** Default process.env: WANDB_API_KEY, WANDB_PROJECT, WANDB_ENTITY are read from it. */
  env?: NodeJS.ProcessEnv;
  /** Default: @wandb/sdk in a worker thread. */
  client?: () => WandbClient;
  /** Longest wait for any one call, in ms (default 10 s). */
  timeoutMs?: number;
}

export const WANDB_TIMEOUT_MS = 10_000;

export function wandbRequested(reportTo: readonly string[]): boolean {
  return reportTo.includes('wandb') || reportTo.includes('all');
}

/** A live wandb run. log() never blocks or throws; close() waits at most two timeouts. */
export class WandbLogger {
  private off = false;
  private queue: Promise<void> = Promise.resolve();

  private constructor(
    private readonly client: WandbClient,
    private readonly print: (line: string) => void,
    private readonly timeoutMs: number,
  ) {}

  /**
   * Starts a run when report_to asks for wandb and WANDB_API_KEY is set, printing where it is;
   * otherwise prints why it is off (only when report_to asked for it) and returns undefined.
   * Never throws: a run that cannot start is a warning.
   */
  static async open(settings: WandbSettings, config: Record<string, unknown>, opts: WandbOptions): Promise<WandbLogger | undefined> {
    if (!wandbRequested(settings.report_to)) return undefined;
    const env = opts.env ?? process.env;
    const asked = `report_to=${settings.report_to.join(',')}`;
    if (!env.WANDB_API_KEY) {
      opts.print(`wandb: off — ${asked} but WANDB_API_KEY is not set (export it, or drop wandb from report_to); metrics go to ${settings.output_dir}/metrics.jsonl`);
      return undefined;
    }
    const init: WandbInit = {
      project: env.WANDB_PROJECT || 'sft',
      name: settings.run_name || basename(resolve(settings.output_dir)),
      config,
    };
    if (env.WANDB_ENTITY) init.entity = env.WANDB_ENTITY;
    let client: WandbClient;
    try {
      client = (opts.client ?? (() => new WorkerWandbClient(env)))();
    } catch (err) {
      opts.print(`wandb: warning: could not load @wandb/sdk (${reason(err)}); wandb is off for this run, metrics go to ${settings.output_dir}/metrics.jsonl`);
      return undefined;
    }
    const logger = new WandbLogger(client, opts.print, opts.timeoutMs ?? WANDB_TIMEOUT_MS);
    const url = await logger.guard('could not start the run', () => client.init(init));
    if (logger.off) return undefined;
    opts.print(`wandb: run "${init.name}" in project "${init.project}"${url ? ` at ${url}` : ''}`);
    return logger;
  }

  /** Queues one log call behind the previous ones; returns at once. */
  log(metrics: Record<string, number>, step: number): void {
    if (this.off) return;
    this.queue = this.queue.then(async () => {
      if (!this.off) await this.guard(`could not log step ${step}`, () => this.client.log(metrics, step));
    });
  }

  /** Waits for queued logs, finishes the run and stops the SDK. */
  async close(): Promise<void> {
    await this.queue;
    if (this.off) return; // a failure has already stopped the client
    await this.guard('could not finish the run', () => this.client.finish());
    if (this.off) return;
    this.off = true;
    this.client.kill();
  }

  /** Runs one call against a timer; the first failure prints the warning and turns wandb off. */
  private async guard<T>(what: string, call: () => Promise<T>): Promise<T | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.timeoutMs / 1000} s`)), this.timeoutMs);
    });
    try {
      return await Promise.race([Promise.resolve().then(call), timeout]);
    } catch (err) {
      if (!this.off) {
        this.off = true;
        this.print(`wandb: warning: ${what} (${reason(err)}); wandb is off for the rest of this run — metrics are still written to metrics.jsonl`);
        this.client.kill();
      }
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }
}

function reason(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0].slice(0, 200) || 'unknown error';
}

// ---- @wandb/sdk in a worker thread ----------------------------------------------------------------

// CommonJS, run by `new Worker(..., { eval: true })`: one message per call, one answer per message.
// The SDK's console output comes back as messages (a piped stdout would keep sft's process alive).
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { format } = require('node:util');
console.log = console.info = console.warn = console.error = (...a) => parentPort.postMessage({ said: format(...a) });
let sdk, run;
parentPort.on('message', async (m) => {
  try {
    let value;
    if (m.op === 'init') {
      const mod = await import(workerData.sdkUrl);
      sdk = mod.wandb || (mod.default && mod.default.wandb) || mod.default;
      run = await sdk.init(m.args);
      value = typeof run.url === 'function' ? run.url() : undefined;
    } else if (m.op === 'log') {
      run.log(m.metrics, m.step);
    } else if (m.op === 'finish') {
      await run.finish();
    }
    parentPort.postMessage({ id: m.id, ok: true, value });
  } catch (e) {
    parentPort.postMessage({ id: m.id, ok: false, error: String((e && e.message) || e) });
  }
});
`;

interface Reply { id?: number; ok?: boolean; value?: string; error?: string; said?: string }

/** @wandb/sdk from sft's own node_modules (its CommonJS build: import.meta.resolve is not there
 *  when tsx runs this file as CommonJS). */
function sdkUrl(): string {
  return pathToFileURL(createRequire(import.meta.url).resolve('@wandb/sdk')).href;
}

export class WorkerWandbClient implements WandbClient {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (v: string | undefined) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private dead: Error | undefined;
  /** The SDK's first console line: the detail behind a bare failure (e.g. a refused connection). */
  private said = '';

  /** `env` is the worker's environment: the SDK reads WANDB_API_KEY and WANDB_BASE_URL from it. */
  constructor(env: NodeJS.ProcessEnv = process.env, url = sdkUrl()) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { sdkUrl: url }, env, execArgv: [] });
    // The worker never keeps sft alive: a run that ends without close() still exits.
    this.worker.unref();
    this.worker.on('message', (r: Reply) => {
      if (r.said !== undefined) {
        if (!this.said) this.said = r.said.split('\n').find((l) => l.trim()) ?? '';
        return;
      }
      const p = this.pending.get(r.id ?? -1);
      if (!p) return;
      this.pending.delete(r.id!);
      if (r.ok) p.resolve(r.value);
      else p.reject(new Error(this.detail(r.error ?? 'failed')));
    });
    this.worker.on('error', (e) => this.fail(new Error(this.detail(e.message))));
    this.worker.on('exit', (code) => this.fail(new Error(`the wandb worker stopped (exit code ${code})`)));
  }

  init(opts: WandbInit): Promise<string | undefined> {
    return this.call({ op: 'init', args: opts });
  }
  async log(metrics: Record<string, number>, step: number): Promise<void> {
    await this.call({ op: 'log', metrics, step });
  }
  async finish(): Promise<void> {
    await this.call({ op: 'finish' });
  }
  kill(): void {
    this.fail(new Error('stopped'));
    void this.worker.terminate();
  }

  private call(msg: Record<string, unknown>): Promise<string | undefined> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id });
    });
  }

  private fail(err: Error): void {
    this.dead ??= err;
    for (const p of this.pending.values()) p.reject(this.dead);
    this.pending.clear();
  }

  private detail(msg: string): string {
    return this.said && !msg.includes(this.said) ? `${msg}; wandb said: ${this.said.trim().slice(0, 160)}` : msg;
  }
}
