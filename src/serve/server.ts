// The OpenAI-compatible HTTP server on node:http: routes, auth, body limit, errors, disconnects.
//   POST /v1/chat/completions   POST /v1/completions   GET /v1/models[/ID]   GET /health
// Every failure is answered with OpenAI's error body and the server goes on serving.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApiError, toApiError } from './api-error.js';
import { readJsonBody, sendError, sendJson } from './http-io.js';
import { parseChatRequest, parseCompletionRequest, type ModelContext } from './request.js';
import { respond, type Outcome } from './respond.js';
import type { Scheduler } from './scheduler.js';

export interface ServeOptions {
  ctx: ModelContext;
  scheduler: Scheduler;
  /** Largest request body in bytes (default 1 MiB); larger ones get 413. */
  bodyLimit?: number;
  /** Requests allowed to wait for the model (default 64); more get 429. */
  maxQueued?: number;
  /** When set, /v1/* requests need "Authorization: Bearer <apiKey>". */
  apiKey?: string;
  /** One line per request (method, path, status, tokens, seconds). */
  log?: (line: string) => void;
}

export const DEFAULT_BODY_LIMIT = 1 << 20;

export function createServeHandler(opts: ServeOptions): http.RequestListener {
  const started = Math.floor(Date.now() / 1000);
  const bodyLimit = opts.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const maxQueued = opts.maxQueued ?? 64;
  const { ctx, scheduler } = opts;
  const modelCard = { id: ctx.id, object: 'model', created: started, owned_by: 'sft', max_model_len: ctx.maxContext };

  async function route(req: http.IncomingMessage, res: http.ServerResponse, signal: AbortSignal): Promise<Outcome | undefined> {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const only = (want: string): void => {
      if (method !== want) throw new ApiError(405, `${method} ${path} is not allowed; use ${want}.`);
    };
    if (path.startsWith('/v1/') && opts.apiKey !== undefined && req.headers.authorization !== `Bearer ${opts.apiKey}`) {
      throw new ApiError(401, 'Incorrect or missing API key: send "Authorization: Bearer <key>" with the key sft serve was started with.', 'invalid_request_error', null, 'invalid_api_key');
    }
    if (path === '/health') {
      only('GET');
      // The scheduler's kind says how requests share the model: 'fifo' serves one at a time.
      sendJson(res, 200, { status: 'ok', model: ctx.id, scheduler: scheduler.stats() });
      return undefined;
    }
    if (path === '/v1/models') {
      only('GET');
      sendJson(res, 200, { object: 'list', data: [modelCard] });
      return undefined;
    }
    if (path.startsWith('/v1/models/')) {
      only('GET');
      const id = decodeURIComponent(path.slice('/v1/models/'.length));
      if (id !== ctx.id) throw new ApiError(404, `The model \`${id}\` does not exist. This server serves \`${ctx.id}\`.`, 'invalid_request_error', 'model', 'model_not_found');
      sendJson(res, 200, modelCard);
      return undefined;
    }
    const parse = path === '/v1/chat/completions' ? parseChatRequest : path === '/v1/completions' ? parseCompletionRequest : undefined;
    if (!parse) throw new ApiError(404, `Invalid URL (${method} ${path}): sft serve answers /v1/chat/completions, /v1/completions, /v1/models and /health.`);
    only('POST');
    const request = parse(await readJsonBody(req, bodyLimit), ctx);
    if (scheduler.stats().queued >= maxQueued) {
      throw new ApiError(429, `The server has ${maxQueued} requests waiting for the model; retry shortly.`, 'rate_limit_error', null, 'queue_full');
    }
    return respond(res, request, scheduler, ctx.id, signal);
  }

  return (req, res) => {
    const t0 = performance.now();
    const aborter = new AbortController();
    // 'close' before the response finished: the client went away, so its generation stops.
    res.on('close', () => {
      if (!res.writableFinished) aborter.abort(new Error('client disconnected'));
    });
    route(req, res, aborter.signal)
      .catch((err: unknown): Outcome | undefined => {
        const apiErr = toApiError(err);
        if (!res.headersSent) sendError(res, apiErr);
        else res.end();
        return undefined;
      })
      .then((outcome) => {
        if (!opts.log) return;
        const tokens = outcome ? ` ${outcome.usage.prompt_tokens}+${outcome.usage.completion_tokens} tokens ${outcome.finishReason}` : '';
        opts.log(`${req.method} ${req.url} ${res.statusCode}${tokens} ${((performance.now() - t0) / 1000).toFixed(2)}s`);
      });
  };
}

export interface RunningServer {
  server: http.Server;
  /** http://host:port, with the port actually bound (port 0 picks a free one). */
  url: string;
  close(): Promise<void>;
}

export async function startServer(opts: ServeOptions & { host: string; port: number }): Promise<RunningServer> {
  const server = http.createServer(createServeHandler(opts));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    server,
    url: `http://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // Idle keep-alive connections would hold close() open; streams in progress end with them.
        server.closeAllConnections();
      }),
  };
}
