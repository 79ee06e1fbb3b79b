// Reading request bodies and writing JSON and server-sent-event responses on node:http.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError } from './api-error.js';

/** Deeper nesting than any request needs. JSON.parse copes with any depth, but what later walks a value
 *  (JSON.stringify and String() in error messages) recurses and would overflow the stack: a 500 for a bad
 *  request. serde_json stops at the same depth. */
export const MAX_JSON_DEPTH = 128;

/** Reads the whole body and parses it as a JSON object. Not declared application/json -> 415. Over `limit`
 *  bytes -> 413: the rest of the body is drained unkept (node:http then reuses the connection), so the
 *  client still reads the answer. Not UTF-8, not JSON, nested too deep or not an object -> 400. */
export async function readJsonBody(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const refuse = (err: ApiError): never => {
    req.resume();
    throw err;
  };
  const typeError = contentTypeError(req.headers['content-type']);
  if (typeError) refuse(typeError);
  const tooLarge = () => new ApiError(413, `The request body is larger than the server's limit of ${limit} bytes.`, 'invalid_request_error', null, 'request_too_large');
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) refuse(tooLarge());
  return parseJsonObject(await readBody(req, limit, tooLarge));
}

/** The body's bytes, or `tooLarge()` once they pass `limit`; the rest then flows on unkept. Listeners, not
 *  for-await: leaving a for-await early destroys the request, which leaves its socket paused, so the server
 *  would never see the client go away and the connection would stay open. */
function readBody(req: IncomingMessage, limit: number, tooLarge: () => ApiError): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= limit) {
        chunks.push(chunk);
        return;
      }
      req.off('data', onData).off('end', onEnd);
      req.resume();
      reject(tooLarge());
    };
    const onEnd = (): void => resolve(Buffer.concat(chunks));
    req.on('data', onData).on('end', onEnd).on('error', reject);
  });
}

/** Why a POST body's Content-Type is refused (415), or undefined when it is JSON in UTF-8. Only JSON is
 *  read: a web page can send text/plain, form and multipart bodies to any site without a CORS preflight,
 *  so accepting them would let any page the user opens post to the API. */
export function contentTypeError(header: string | undefined): ApiError | undefined {
  const refuse = (message: string) => new ApiError(415, message, 'invalid_request_error', null, 'unsupported_media_type');
  const send = 'send the JSON body with "Content-Type: application/json"';
  if (header === undefined) return refuse(`The request has no Content-Type header: ${send}.`);
  const [type, ...params] = header.split(';');
  if (type.trim().toLowerCase() !== 'application/json') return refuse(`Content-Type ${JSON.stringify(header.slice(0, 200))} is not accepted: ${send}.`);
  for (const param of params) {
    const [key, value = ''] = param.split('=');
    const charset = value.trim().replace(/^"(.*)"$/, '$1').toLowerCase();
    if (key.trim().toLowerCase() === 'charset' && !['utf-8', 'utf8', 'us-ascii'].includes(charset)) {
      return refuse(`Content-Type ${JSON.stringify(header.slice(0, 200))}: the body must be JSON in UTF-8; send charset=utf-8 or no charset.`);
    }
  }
  return undefined;
}

function parseJsonObject(bytes: Buffer): Record<string, unknown> {
  const invalid = (message: string) => new ApiError(400, message, 'invalid_request_error', null, 'invalid_json');
  let text: string;
  try {
    // fatal: a byte that is not UTF-8 is an error, not a U+FFFD put into the prompt in its place.
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw invalid('The request body is not valid UTF-8: JSON bodies must be encoded as UTF-8.');
  }
  if (nestsDeeperThan(text, MAX_JSON_DEPTH)) {
    throw invalid(`The JSON body nests arrays and objects more than ${MAX_JSON_DEPTH} deep; no request needs that many.`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw invalid(`We could not parse the JSON body of your request (${(err as Error).message}). The body must be a JSON object.`);
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw invalid('The request body must be a JSON object.');
  return body as Record<string, unknown>;
}

/** Whether JSON text opens more than `max` arrays and objects inside one another; brackets inside strings
 *  do not count. One pass over the text, before anything is built from it. */
function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // a backslash: the next character is escaped, a quote included
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

export function sendError(res: ServerResponse, err: ApiError): void {
  sendJson(res, err.status, err.body());
}

/** A text/event-stream response: one `data: <json>` event per chunk, then `data: [DONE]` as OpenAI ends. */
export class SseWriter {
  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
    // Headers go out now, so a client sees the stream open while its request waits in the queue.
    res.flushHeaders();
  }

  send(value: unknown): void {
    if (!this.res.writableEnded) this.res.write(`data: ${JSON.stringify(value)}\n\n`);
  }

  end(): void {
    if (this.res.writableEnded) return;
    this.res.write('data: [DONE]\n\n');
    this.res.end();
  }
}
