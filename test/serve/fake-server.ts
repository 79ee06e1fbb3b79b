// The HTTP server over a real tokenizer (init-model's, pure TypeScript) and a fake model that answers at
// once, so tests of the HTTP layer (host and origin checks, content types, auth, fuzzing) need no engine
// and run in milliseconds per request. Raw requests go through rawRequest(): any bytes, any headers.
import net from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { getTemplate } from '../../src/data/templates.js';
import type { NativeModel } from '../../src/native/types.js';
import type { Tok } from '../../src/tokenizer/types.js';
import { FifoScheduler } from '../../src/serve/scheduler.js';
import { startServer, type RunningServer, type ServeOptions } from '../../src/serve/server.js';
import type { ModelContext } from '../../src/serve/request.js';

export const MODEL_ID = 'fake';
export const MAX_CONTEXT = 1024;

/** A model whose next token follows from its cache length alone: cheap, deterministic, never EOS-bound. */
class CountingModel {
  private cache = 0;
  constructor(private readonly vocab: number, private readonly avoid: Set<number>) {}
  async feed(ids: Int32Array): Promise<Float32Array> {
    this.cache += ids.length;
    const logits = new Float32Array(this.vocab);
    let next = 3 + (this.cache % (this.vocab - 3));
    while (this.avoid.has(next)) next = 3 + ((next + 1) % (this.vocab - 3));
    logits[next] = 8;
    return logits;
  }
  truncateCache(n: number): void {
    this.cache = Math.min(n, this.cache);
  }
  cacheLength(): number {
    return this.cache;
  }
  resetCache(): void {
    this.cache = 0;
  }
}

let tokPromise: Promise<Tok> | undefined;
function tiny(): Promise<Tok> {
  tokPromise ??= (async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'sft-http-')), 'tiny');
    initModel({ arch: 'llama', outDir: dir, hidden: 32, layers: 1, heads: 2, intermediate: 64, vocab: 300, seed: 1, maxPosition: MAX_CONTEXT, force: true });
    return loadTokenizer(dir);
  })();
  return tokPromise;
}

export async function fakeContext(maxContext = MAX_CONTEXT): Promise<ModelContext> {
  const tok = await tiny();
  return { id: MODEL_ID, tok, template: getTemplate('default'), maxContext, vocabSize: tok.vocabSize };
}

/** A server on loopback (or `host`) over the fake model; options as startServer takes them. */
export async function startFake(
  opts: Partial<ServeOptions> & { host?: string; maxContext?: number } = {},
): Promise<RunningServer & { scheduler: FifoScheduler; port: number }> {
  const ctx = await fakeContext(opts.maxContext);
  // Special tokens (BOS, EOS) are never predicted, so replies run to max_tokens.
  const model = new CountingModel(ctx.vocabSize, new Set([ctx.tok.bosId, ctx.tok.eosId].filter((id): id is number => id !== undefined)));
  const scheduler = new FifoScheduler(model as unknown as NativeModel, ctx.tok);
  const running = await startServer({ ctx, scheduler, host: '127.0.0.1', port: 0, ...opts });
  return { ...running, scheduler, port: Number(new URL(running.url).port) };
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Sends `bytes` as they are on a new connection and reads one response (after any 1xx). Resolves
 *  undefined when the server closes without answering; rejects after `timeoutMs` with nothing complete. */
export function rawRequest(port: number, bytes: Buffer | string, opts: { timeoutMs?: number; head?: boolean; halfClose?: boolean } = {}): Promise<RawResponse | undefined> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let got = Buffer.alloc(0);
    let settled = false;
    const settle = (r: RawResponse | undefined, err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(r);
    };
    const timer = setTimeout(() => settle(undefined, new Error(`no complete response within ${opts.timeoutMs ?? 5000} ms (got ${got.length} bytes)`)), opts.timeoutMs ?? 5000);
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      const r = parseResponse(got, opts.head ?? false, false);
      if (r) settle(r);
    });
    // The server closed (a reset after it answered is the same end for the client): whatever came is the answer.
    const closed = (err?: Error): void => {
      const r = parseResponse(got, opts.head ?? false, true);
      if (r || got.length === 0) settle(r);
      else settle(undefined, err ?? new Error(`the server closed mid-response: ${JSON.stringify(got.toString('latin1').slice(0, 200))}`));
    };
    socket.on('end', () => closed());
    socket.on('error', (err) => closed(err));
    socket.write(bytes, () => {
      if (opts.halfClose) socket.end();
    });
  });
}

/** One HTTP/1.x response from the start of `buf`, when it is complete: framed by content-length, chunked
 *  encoding, or the connection's close (`closed`). 1xx interim responses are skipped. */
export function parseResponse(buf: Buffer, head: boolean, closed: boolean): RawResponse | undefined {
  let start = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', start);
    if (end < 0) return undefined;
    const lines = buf.subarray(start, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(lines[0])}`);
    const status = Number(m[1]);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const rest = buf.subarray(end + 4);
    if (status >= 100 && status < 200) {
      start = end + 4;
      continue;
    }
    if (head || status === 204 || status === 304) return { status, headers, body: '' };
    if (headers['transfer-encoding']?.toLowerCase() === 'chunked') {
      const body = dechunk(rest);
      return body === undefined ? undefined : { status, headers, body: body.toString('utf8') };
    }
    if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      return rest.length >= n ? { status, headers, body: rest.subarray(0, n).toString('utf8') } : undefined;
    }
    return closed ? { status, headers, body: rest.toString('utf8') } : undefined;
  }
}

function dechunk(buf: Buffer): Buffer | undefined {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', at);
    if (eol < 0) return undefined;
    const size = parseInt(buf.subarray(at, eol).toString('latin1'), 16);
    if (size === 0) return Buffer.concat(parts);
    if (buf.length < eol + 2 + size + 2) return undefined;
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

/** A request's bytes: request line, headers as given (nothing added), body. */
export function requestBytes(method: string, path: string, headers: [string, string][], body: Buffer | string = ''): Buffer {
  const head = `${method} ${path} HTTP/1.1\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), typeof body === 'string' ? Buffer.from(body, 'utf8') : body]);
}

/** An ordinary JSON request to the fake server as curl would send it (a string or Buffer body goes as it
 *  is), with extra headers on top; an undefined header is left out. */
export function jsonRequest(port: number, method: string, path: string, body?: unknown, headers: Record<string, string | undefined> = {}): Promise<RawResponse> {
  const text = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  const all: Record<string, string | undefined> = {
    host: `127.0.0.1:${port}`,
    ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(text.length) }),
    ...headers,
  };
  const list = Object.entries(all).filter((e): e is [string, string] => e[1] !== undefined);
  return rawRequest(port, requestBytes(method, path, list, text), { head: method === 'HEAD' }).then((r) => {
    if (!r) throw new Error(`${method} ${path}: the server closed without answering`);
    return r;
  });
}
