// The OpenAI-compatible HTTP server on node:http: routes, who may call, body limit, errors, disconnects.
//   POST /v1/chat/completions   POST /v1/completions   GET /v1/models[/ID]   GET /health   GET / (chat page)
// Every failure is answered with OpenAI's error body and the server goes on serving.
//
// Who may call: a server on loopback is still reachable from every web page the user opens, so requests
// pass three gates before any route. Host must be a name the server answers to (loopback, its bound
// address, --allowed-hosts): a DNS-rebinding page reaches 127.0.0.1 under a name of its own, and that name
// is in its Host. Origin, which browsers send from pages, must be the server's own or --allowed-origins, and
// only those get CORS headers and preflights. POST bodies must be declared JSON (http-io.ts), a type that
// browsers never send cross-site without a preflight.
import http from 'node:http';
import crypto from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { SftError } from '../errors.js';
import { ApiError, toApiError } from './api-error.js';
import { readJsonBody, sendError, sendJson } from './http-io.js';
import { parseChatRequest, parseCompletionRequest, type ModelContext } from './request.js';
import { respond, type Outcome } from './respond.js';
import { sendChatPage } from './chat-page.js';
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
  /** Host names answered besides loopback and the bound address: "name", ".domain" (it and its
   *  subdomains), "*" (any: DNS rebinding is then the user's risk). */
  allowedHosts?: string[];
  /** Origins (scheme://host[:port]) whose pages may call the API besides the server's own; "*" any. */
  allowedOrigins?: string[];
  /** The address the server listens on (startServer sets it): Host may name it. */
  boundHost?: string;
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
  const access = accessPolicy(opts);
  const keyCheck = opts.apiKey === undefined ? undefined : bearerCheck(opts.apiKey);

  async function route(req: http.IncomingMessage, res: http.ServerResponse, signal: AbortSignal): Promise<Outcome | undefined> {
    checkHost(req, access);
    const crossOrigin = checkOrigin(req, res, access);
    const path = requestPath(req.url ?? '/');
    const method = req.method ?? 'GET';
    if (method === 'OPTIONS' && crossOrigin && req.headers['access-control-request-method'] !== undefined) {
      answerPreflight(req, res);
      return undefined;
    }
    const only = (want: string): void => {
      if (method !== want) throw new ApiError(405, `${method} ${path} is not allowed; use ${want}.`);
    };
    if (path.startsWith('/v1/') && keyCheck && !keyCheck(req.headers.authorization)) {
      throw new ApiError(401, 'Incorrect or missing API key: send "Authorization: Bearer <key>" with the key sft serve was started with.', 'invalid_request_error', null, 'invalid_api_key');
    }
    if (path === '/' || path === '/index.html') {
      // The chat page (chat-page.ts): static, so no key is needed to load it; its requests send the key.
      only('GET');
      sendChatPage(res, ctx.id, keyCheck !== undefined);
      return undefined;
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
      const id = decodePathPart(path.slice('/v1/models/'.length), path);
      if (id !== ctx.id) throw new ApiError(404, `The model \`${id}\` does not exist. This server serves \`${ctx.id}\`.`, 'invalid_request_error', 'model', 'model_not_found');
      sendJson(res, 200, modelCard);
      return undefined;
    }
    const parse = path === '/v1/chat/completions' ? parseChatRequest : path === '/v1/completions' ? parseCompletionRequest : undefined;
    if (!parse) throw new ApiError(404, `Invalid URL (${method} ${path}): sft serve answers /v1/chat/completions, /v1/completions, /v1/models, /health and / (the chat page).`);
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

// ---- the path ---------------------------------------------------------------------------------------------

/** The path of an origin-form request target ("/v1/models?x" -> "/v1/models"), trailing slashes dropped.
 *  Any other form ("http://host/...", "*") is refused: its authority would stand beside the checked Host. */
function requestPath(target: string): string {
  if (!target.startsWith('/')) {
    throw new ApiError(400, `The request target ${JSON.stringify(clip(target))} is not a path: send requests to /v1/... on this server directly.`, 'invalid_request_error', null, 'invalid_path');
  }
  return target.split(/[?#]/, 1)[0].replace(/\/+$/, '') || '/';
}

function decodePathPart(part: string, path: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new ApiError(400, `The path ${JSON.stringify(clip(path))} is not valid percent-encoding (a % must start a UTF-8 byte like %2F).`, 'invalid_request_error', null, 'invalid_path');
  }
}

/** Long header values stay readable in error messages. */
function clip(text: string, max = 200): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

// ---- who may call: Host, Origin, CORS, the API key --------------------------------------------------------

interface Access {
  /** Normalized host names (hostName()) answered: loopback, the bound address, --allowed-hosts names. */
  hosts: Set<string>;
  /** --allowed-hosts ".domain" entries, without the dot. */
  domains: string[];
  anyHost: boolean;
  /** Normalized origins (originOf()) whose pages may call. */
  origins: Set<string>;
  anyOrigin: boolean;
}

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];
const WILDCARD_ADDRESSES = new Set(['', '0.0.0.0', '::', '[::]']);

function accessPolicy(opts: ServeOptions): Access {
  const hosts = new Set(LOOPBACK_NAMES);
  for (const name of boundNames(opts.boundHost)) hosts.add(name);
  const domains: string[] = [];
  const allowedHosts = parseAllowedHosts(opts.allowedHosts ?? []);
  for (const entry of allowedHosts) {
    if (entry.startsWith('.')) domains.push(entry.slice(1));
    else hosts.add(entry);
  }
  const allowedOrigins = parseAllowedOrigins(opts.allowedOrigins ?? []);
  return { hosts, domains, anyHost: allowedHosts.includes('*'), origins: new Set(allowedOrigins), anyOrigin: allowedOrigins.includes('*') };
}

/** The names the bound address answers to: itself, or for 0.0.0.0 / :: every address of this machine,
 *  which is what listening on all of them means. */
function boundNames(bound: string | undefined): string[] {
  if (bound === undefined) return [];
  if (!WILDCARD_ADDRESSES.has(bound)) {
    const name = hostName(bound.includes(':') && !bound.startsWith('[') ? `[${bound}]` : bound);
    return name === undefined ? [] : [name];
  }
  const names: string[] = [];
  for (const addr of Object.values(networkInterfaces()).flat()) {
    if (!addr || addr.scopeid) continue; // link-local IPv6 needs a %zone, which no Host header carries
    const name = hostName(addr.family === 'IPv6' ? `[${addr.address}]` : addr.address);
    if (name !== undefined) names.push(name);
  }
  return names;
}

/** The host name of a Host header ("host" or "host:port"), normalized as URLs are (case, IPv6 and IPv4
 *  spellings, a trailing dot), or undefined when the header is not one. Only the characters of names,
 *  IP literals and a port pass: a "@" or "/" would make URL parsing read a different host. */
export function hostName(header: string): string | undefined {
  if (!/^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::\d{1,5})?$/.test(header)) return undefined;
  try {
    const name = new URL(`http://${header}`).hostname;
    return name.endsWith('.') ? name.slice(0, -1) : name;
  } catch {
    return undefined;
  }
}

/** --allowed-hosts values, checked and normalized: "*", ".domain" or a host name (a port is ignored). */
export function parseAllowedHosts(values: string[], flag = '--allowed-hosts'): string[] {
  return values.map((value) => {
    if (value === '*') return value;
    const domain = value.startsWith('.');
    const name = hostName(domain ? value.slice(1) : value);
    if (name === undefined || name === '') {
      throw new SftError(`${flag} ${JSON.stringify(value)} is not a host name: give names like mybox.lan or 192.168.1.5, ".example.org" for a domain and its subdomains, or "*" for any.`);
    }
    return domain ? `.${name}` : name;
  });
}

/** --allowed-origins values, checked and normalized: "*", "null" or scheme://host[:port]. */
export function parseAllowedOrigins(values: string[], flag = '--allowed-origins'): string[] {
  return values.map((value) => {
    if (value === '*') return value;
    const origin = originOf(value);
    if (origin === undefined) {
      throw new SftError(`${flag} ${JSON.stringify(value)} is not an origin: give scheme://host[:port] as the browser shows it, like http://localhost:3000, or "*" for any.`);
    }
    return origin;
  });
}

/** An origin (scheme://host[:port], or "null" for sandboxed and file pages), normalized; undefined when
 *  `text` is not one. A path, query or credentials make it a URL, not an origin. */
export function originOf(text: string): string | undefined {
  if (text === 'null') return text;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  if (url.username || url.password || url.search || url.hash || !['', '/'].includes(url.pathname) || !url.host) return undefined;
  // URL gives non-web schemes (chrome-extension://id) an opaque origin, so their origin is spelled out here.
  return url.protocol === 'http:' || url.protocol === 'https:' ? url.origin : `${url.protocol}//${url.host}`;
}

function checkHost(req: http.IncomingMessage, access: Access): void {
  const header = req.headers.host;
  if (header === undefined) {
    throw new ApiError(400, 'The request has no Host header: send one naming this server (HTTP/1.1 requires it; curl and HTTP clients add it).', 'invalid_request_error', null, 'invalid_host');
  }
  const name = hostName(header);
  if (name === undefined) {
    throw new ApiError(400, `The Host header ${JSON.stringify(clip(header))} is not a host name with an optional :port.`, 'invalid_request_error', null, 'invalid_host');
  }
  if (access.anyHost || access.hosts.has(name) || access.domains.some((d) => name === d || name.endsWith(`.${d}`))) return;
  const answers = [...access.hosts].slice(0, 6).join(', ') + (access.hosts.size > 6 ? ', …' : '');
  throw new ApiError(
    403,
    `The Host header ${JSON.stringify(clip(header))} names a host this server does not answer to (it answers to ${answers}). ` +
      'This guards against DNS rebinding, where a web page reaches a local server under a name of its own. ' +
      `If clients reach this server as "${clip(name)}", start sft serve with --allowed-hosts ${clip(name)} (or --allowed-hosts '*' to accept any name).`,
    'invalid_request_error',
    null,
    'host_not_allowed',
  );
}

/** Refuses a request from a web page of another origin (403) unless it is allowed; an allowed one gets the
 *  CORS headers that let the page read the answer. Returns whether the request is an allowed cross-origin
 *  one. No Origin header (curl, SDKs, same-origin GETs) passes: such a request is not from another site's page. */
function checkOrigin(req: http.IncomingMessage, res: http.ServerResponse, access: Access): boolean {
  const header = req.headers.origin;
  if (header === undefined) return false;
  const origin = originOf(header);
  // Host has passed checkHost; the server's own pages (were it to serve any) have origin http://<Host>.
  if (origin !== undefined && origin === originOf(`http://${req.headers.host}`)) return false;
  if (origin !== undefined && (access.anyOrigin || access.origins.has(origin))) {
    res.setHeader('access-control-allow-origin', header);
    res.setHeader('vary', 'Origin');
    return true;
  }
  throw new ApiError(
    403,
    `Origin ${JSON.stringify(clip(header))} may not use this server: browsers send Origin from web pages, and only pages of the server's own origin or of --allowed-origins may call it. ` +
      `To let that page call the API, start sft serve with --allowed-origins ${origin ?? clip(header)}.`,
    'invalid_request_error',
    null,
    'origin_not_allowed',
  );
}

/** The answer to an allowed origin's CORS preflight (its CORS headers are already set). The headers it asks
 *  for are granted as named: SDKs add their own (x-stainless-*), and the origin is trusted already. */
function answerPreflight(req: http.IncomingMessage, res: http.ServerResponse): void {
  const asked = req.headers['access-control-request-headers'];
  const headers = asked !== undefined && /^[\w!#$%&'*+.^`|~-]+(?:\s*,\s*[\w!#$%&'*+.^`|~-]+)*$/.test(asked.trim()) ? asked.trim() : 'authorization, content-type';
  res.writeHead(204, { 'access-control-allow-methods': 'GET, POST', 'access-control-allow-headers': headers, 'access-control-max-age': '600' });
  res.end();
}

/** A check of the Authorization header against "Bearer <key>" that takes the same time whatever the header
 *  holds: both sides are hashed to one length first, so timingSafeEqual compares whole buffers and the time
 *  tells nothing about the key's bytes or length. The header is read as the bytes sent (node decodes header
 *  values as latin1), so a UTF-8 key matches. */
function bearerCheck(key: string): (header: string | undefined) => boolean {
  const digest = (bytes: Buffer): Buffer => crypto.createHash('sha256').update(bytes).digest();
  const want = digest(Buffer.from(`Bearer ${key}`, 'utf8'));
  return (header) => crypto.timingSafeEqual(digest(Buffer.from(header ?? '', 'latin1')), want);
}

// ---- the server -------------------------------------------------------------------------------------------

export interface RunningServer {
  server: http.Server;
  /** http://host:port, with the port actually bound (port 0 picks a free one). */
  url: string;
  close(): Promise<void>;
}

export async function startServer(opts: ServeOptions & { host: string; port: number }): Promise<RunningServer> {
  // requireHostHeader off: the handler answers a missing Host itself, with an error body.
  const server = http.createServer({ requireHostHeader: false }, createServeHandler({ ...opts, boundHost: opts.boundHost ?? opts.host }));
  answerMalformedRequests(server);
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

/** node:http answers what it cannot parse, an unsupported Expect and CONNECT with a bare status or a closed
 *  socket; these answers are OpenAI error bodies like every other. */
function answerMalformedRequests(server: http.Server): void {
  server.on('clientError', (err: NodeJS.ErrnoException & { reason?: string }, socket: Socket) => {
    // As node's own handler: write only while no response is under way on the socket, or the bytes would
    // corrupt it; a reset peer gets nothing.
    const inFlight = (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    writeRawError(socket, clientErrorOf(err));
  });
  server.on('checkExpectation', (req, res) => {
    sendError(res, new ApiError(417, `The Expect header ${JSON.stringify(clip(String(req.headers.expect)))} is not supported: only "100-continue" is.`, 'invalid_request_error', null, 'expectation_failed'));
  });
  server.on('connect', (_req: http.IncomingMessage, socket: Socket) => {
    writeRawError(socket, new ApiError(405, 'CONNECT is not allowed: sft serve is not a proxy.', 'invalid_request_error', null, 'method_not_allowed'));
  });
}

function clientErrorOf(err: NodeJS.ErrnoException & { reason?: string }): ApiError {
  if (err.code === 'HPE_HEADER_OVERFLOW') return new ApiError(431, `The request line and headers are larger than the server accepts (${http.maxHeaderSize} bytes); send a shorter URL or fewer, shorter headers.`, 'invalid_request_error', null, 'headers_too_large');
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return new ApiError(408, 'The request did not arrive in time; send it again.', 'invalid_request_error', null, 'request_timeout');
  return new ApiError(400, `The request is not valid HTTP/1.1 (${err.code ?? 'parse error'}${err.reason ? `: ${err.reason}` : ''}).`, 'invalid_request_error', null, 'bad_request');
}

function writeRawError(socket: Socket, err: ApiError): void {
  const text = JSON.stringify(err.body());
  socket.end(
    `HTTP/1.1 ${err.status} ${http.STATUS_CODES[err.status] ?? 'Error'}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
  );
}
