// Reading request bodies and writing JSON and server-sent-event responses on node:http.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError } from './api-error.js';

/** Reads the whole body and parses it as a JSON object. Over `limit` bytes -> 413: the rest of the body is
 *  drained unkept (node:http then reuses the connection), so the client still reads the answer. Not JSON or
 *  not an object -> 400. */
export async function readJsonBody(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const tooLarge = () => new ApiError(413, `The request body is larger than the server's limit of ${limit} bytes.`, 'invalid_request_error', null, 'request_too_large');
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      req.resume();
      throw tooLarge();
    }
    chunks.push(chunk);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw new ApiError(400, `We could not parse the JSON body of your request (${(err as Error).message}). The body must be a JSON object.`, 'invalid_request_error', null, 'invalid_json');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ApiError(400, 'The request body must be a JSON object.', 'invalid_request_error', null, 'invalid_json');
  }
  return body as Record<string, unknown>;
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
