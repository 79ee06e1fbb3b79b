// What keeps a web page from driving `sft serve` on loopback: the Host check (DNS rebinding), the Origin
// check and CORS preflights (cross-site pages), JSON-only bodies (the "simple request" CSRF path), the API
// key compared in constant time, and request shapes that once became 500s. Every refusal is an OpenAI error
// body that names the header and says how to allow it. The model is a fake (fake-server.ts).
import { after, before, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { networkInterfaces } from 'node:os';
import { jsonRequest, MODEL_ID, rawRequest, requestBytes, startFake, type RawResponse } from './fake-server.js';

type Fake = Awaited<ReturnType<typeof startFake>>;
let plain: Fake;
before(async () => {
  plain = await startFake();
});
after(() => plain.close());

const chat = { model: MODEL_ID, messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 };

/** A 4xx with OpenAI's error body whose message matches every pattern in `says`. */
function refused(r: RawResponse, status: number, code: string, ...says: RegExp[]): void {
  assert.equal(r.status, status, r.body);
  assert.match(r.headers['content-type'] ?? '', /^application\/json/);
  const body = JSON.parse(r.body) as { error: Record<string, unknown> };
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(body.error.code, code, r.body);
  for (const re of says) assert.match(String(body.error.message), re);
}

test('Host: loopback names, with or without the port, are answered; any other name is refused', async () => {
  const p = plain.port;
  for (const host of ['localhost', `localhost:${p}`, `127.0.0.1:${p}`, '127.0.0.1', `[::1]:${p}`, '[::1]', `LocalHost:${p}`, 'localhost.']) {
    assert.equal((await jsonRequest(p, 'GET', '/health', undefined, { host })).status, 200, host);
    assert.equal((await jsonRequest(p, 'GET', '/v1/models', undefined, { host })).status, 200, host);
  }
  // A DNS-rebinding page names its own domain, which now resolves to 127.0.0.1.
  for (const host of ['evil.example', `evil.example:${p}`, 'localhost.evil.example', '127.0.0.1.nip.io', `attacker.localhost.com:${p}`]) {
    for (const [method, path, body] of [['GET', '/health'], ['GET', '/v1/models'], ['POST', '/v1/chat/completions', chat]] as const) {
      refused(await jsonRequest(p, method, path, body, { host }), 403, 'host_not_allowed', /Host header/, new RegExp(`"${host.replace(/[.]/g, '\\.')}"`), /--allowed-hosts/);
    }
  }
  // Not a host at all: userinfo, a path, spaces.
  for (const host of ['evil.example@localhost', 'localhost/x', 'local host', '']) {
    refused(await jsonRequest(p, 'GET', '/health', undefined, { host }), 400, 'invalid_host', /Host header/);
  }
});

test('Host: a request without one (HTTP/1.0) gets 400 with an error body', async () => {
  const r = await rawRequest(plain.port, 'GET /health HTTP/1.0\r\n\r\n');
  assert.ok(r);
  refused(r, 400, 'invalid_host', /Host header/);
});

test('--allowed-hosts: listed names and .domain suffixes are answered, "*" answers any', async () => {
  const listed = await startFake({ allowedHosts: ['mybox.lan', '.example.org'] });
  try {
    for (const host of ['mybox.lan', `mybox.lan:${listed.port}`, 'example.org', 'api.example.org:8000', 'localhost']) {
      assert.equal((await jsonRequest(listed.port, 'GET', '/health', undefined, { host })).status, 200, host);
    }
    for (const host of ['other.lan', 'badexample.org', 'mybox.lan.evil.example']) {
      refused(await jsonRequest(listed.port, 'GET', '/health', undefined, { host }), 403, 'host_not_allowed');
    }
  } finally {
    await listed.close();
  }
  const any = await startFake({ allowedHosts: ['*'] });
  try {
    assert.equal((await jsonRequest(any.port, 'GET', '/health', undefined, { host: 'whatever.example:1' })).status, 200);
  } finally {
    await any.close();
  }
});

test('bound to 0.0.0.0: the machine\'s own addresses are answered, names only when allowed', async () => {
  const all = await startFake({ host: '0.0.0.0' });
  try {
    const own = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
    for (const host of ['localhost', '127.0.0.1', ...(own ? [`${own}:${all.port}`] : [])]) {
      assert.equal((await jsonRequest(all.port, 'GET', '/health', undefined, { host })).status, 200, host);
    }
    refused(await jsonRequest(all.port, 'GET', '/health', undefined, { host: 'mybox.lan' }), 403, 'host_not_allowed', /--allowed-hosts mybox\.lan/);
    refused(await jsonRequest(all.port, 'GET', '/health', undefined, { host: '203.0.113.9' }), 403, 'host_not_allowed');
  } finally {
    await all.close();
  }
});

test('Origin: none (curl, SDKs) and the server\'s own are served; a foreign page is refused with 403', async () => {
  const p = plain.port;
  assert.equal((await jsonRequest(p, 'POST', '/v1/chat/completions', chat)).status, 200);
  assert.equal((await jsonRequest(p, 'POST', '/v1/chat/completions', chat, { origin: `http://127.0.0.1:${p}` })).status, 200);
  assert.equal((await jsonRequest(p, 'GET', '/v1/models', undefined, { host: `localhost:${p}`, origin: `http://localhost:${p}` })).status, 200);
  for (const origin of ['http://evil.example', `http://localhost:${p + 1}`, 'null', `https://127.0.0.1:${p}`, 'garbage']) {
    for (const [method, path, body] of [['GET', '/health'], ['GET', '/v1/models'], ['POST', '/v1/chat/completions', chat], ['POST', '/v1/completions', { model: MODEL_ID, prompt: 'x' }]] as const) {
      const r = await jsonRequest(p, method, path, body, { origin });
      refused(r, 403, 'origin_not_allowed', /Origin/, /--allowed-origins/);
      assert.equal(r.headers['access-control-allow-origin'], undefined);
    }
  }
});

test('CORS: a preflight from a foreign origin is not granted; --allowed-origins grants it and its requests', async () => {
  const preflight = (port: number, origin: string) =>
    jsonRequest(port, 'OPTIONS', '/v1/chat/completions', undefined, { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, x-stainless-os' });
  const denied = await preflight(plain.port, 'http://evil.example');
  refused(denied, 403, 'origin_not_allowed');
  assert.equal(denied.headers['access-control-allow-origin'], undefined);

  const app = 'http://localhost:3000';
  const open = await startFake({ allowedOrigins: [app, 'https://ui.example.org'] });
  try {
    const granted = await preflight(open.port, app);
    assert.equal(granted.status, 204);
    assert.equal(granted.headers['access-control-allow-origin'], app);
    assert.match(granted.headers['access-control-allow-methods'] ?? '', /POST/);
    assert.match(granted.headers['access-control-allow-headers'] ?? '', /authorization/);
    assert.match(granted.headers.vary ?? '', /Origin/i);
    const r = await jsonRequest(open.port, 'POST', '/v1/chat/completions', chat, { origin: app });
    assert.equal(r.status, 200);
    assert.equal(r.headers['access-control-allow-origin'], app);
    // Errors reach the page too, so its code can read them.
    const bad = await jsonRequest(open.port, 'POST', '/v1/chat/completions', { ...chat, n: 2 }, { origin: app });
    assert.equal(bad.status, 400);
    assert.equal(bad.headers['access-control-allow-origin'], app);
    refused(await preflight(open.port, 'http://localhost:3001'), 403, 'origin_not_allowed');
    assert.equal((await jsonRequest(open.port, 'GET', '/v1/models', undefined, { origin: 'https://ui.example.org' })).status, 200);
  } finally {
    await open.close();
  }
  const any = await startFake({ allowedOrigins: ['*'] });
  try {
    assert.equal((await preflight(any.port, 'http://anything.example')).status, 204);
  } finally {
    await any.close();
  }
});

test('POST bodies must be application/json: text/plain, forms, multipart and none get 415', async () => {
  const p = plain.port;
  const body = JSON.stringify(chat);
  for (const type of ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonx', 'json', undefined]) {
    for (const path of ['/v1/chat/completions', '/v1/completions']) {
      refused(await jsonRequest(p, 'POST', path, body, { 'content-type': type }), 415, 'unsupported_media_type', /Content-Type/, /application\/json/);
    }
  }
  refused(await jsonRequest(p, 'POST', '/v1/chat/completions', body, { 'content-type': 'application/json; charset=latin1' }), 415, 'unsupported_media_type', /charset/);
  for (const type of ['application/json', 'application/json; charset=utf-8', 'Application/JSON;charset="UTF-8"', 'application/json ; charset=utf8']) {
    assert.equal((await jsonRequest(p, 'POST', '/v1/chat/completions', body, { 'content-type': type })).status, 200, type);
  }
  // The server still answers on the same footing afterwards.
  assert.equal((await jsonRequest(p, 'GET', '/health')).status, 200);
});

test('the API key is compared in constant time, whatever its length', async () => {
  const locked = await startFake({ apiKey: 'sesame' });
  const spy = mock.method(crypto, 'timingSafeEqual');
  try {
    for (const auth of ['Bearer sesam', 'Bearer sesamee', 'Bearer ', 'sesame', 'Bearer SESAME', `Bearer ${'x'.repeat(5000)}`, undefined]) {
      refused(await jsonRequest(locked.port, 'GET', '/v1/models', undefined, { authorization: auth }), 401, 'invalid_api_key', /Authorization/);
    }
    assert.equal((await jsonRequest(locked.port, 'GET', '/v1/models', undefined, { authorization: 'Bearer sesame' })).status, 200);
    assert.ok(spy.mock.callCount() >= 7, `timingSafeEqual called ${spy.mock.callCount()} times`);
    for (const call of spy.mock.calls) assert.equal((call.arguments[0] as Buffer).length, (call.arguments[1] as Buffer).length);
  } finally {
    spy.mock.restore();
    await locked.close();
  }
});

test('JSON nested 100,000 deep, in any field, is a 400, not a stack overflow', async () => {
  const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
  const base = JSON.stringify(chat).slice(0, -1);
  for (const field of ['temperature', 'logit_bias', 'model', 'stop', 'seed']) {
    const r = await jsonRequest(plain.port, 'POST', '/v1/chat/completions', `${base},"${field}":${deep(100_000)}}`);
    refused(r, 400, 'invalid_json', /nest/);
  }
  const prompt = await jsonRequest(plain.port, 'POST', '/v1/completions', `{"model":"${MODEL_ID}","prompt":${deep(100_000)}}`);
  refused(prompt, 400, 'invalid_json');
  // Nesting that real requests use is fine.
  const parts = { ...chat, messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }] };
  assert.equal((await jsonRequest(plain.port, 'POST', '/v1/chat/completions', parts)).status, 200);
});

test('a message of a million tokens is a context-length 400, not a stack overflow', async () => {
  const content = '😀'.repeat(240_000); // 960 KB: just under the body limit, a few tokens per emoji
  for (const [path, body] of [['/v1/chat/completions', { ...chat, messages: [{ role: 'user', content }] }], ['/v1/completions', { model: MODEL_ID, prompt: content }]] as const) {
    refused(await jsonRequest(plain.port, 'POST', path, body), 400, 'context_length_exceeded', /maximum context length/);
  }
});

test('odd request lines and bodies get 4xx with an error body, never 5xx', async () => {
  const p = plain.port;
  refused(await jsonRequest(p, 'GET', '/v1/models/%E0%A4'), 400, 'invalid_path', /percent/);
  refused(await jsonRequest(p, 'GET', 'http://evil.example/v1/models'), 400, 'invalid_path');
  refused(await jsonRequest(p, 'POST', '/v1/chat/completions', Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), 400, 'invalid_json', /UTF-8/);
  // Not HTTP at all: node's parser refuses it, and the answer is still OpenAI's shape.
  const garbage = await rawRequest(p, 'NOT HTTP\r\n\r\n');
  assert.ok(garbage);
  refused(garbage, 400, 'bad_request');
  const hugeHeader = await rawRequest(p, requestBytes('GET', '/health', [['host', 'localhost'], ['x-big', 'a'.repeat(100_000)]]));
  assert.ok(hugeHeader);
  refused(hugeHeader, 431, 'headers_too_large');
  assert.equal((await jsonRequest(p, 'GET', '/health')).status, 200);
});

test('a client that sends too large a chunked body and leaves leaves no connection open', async () => {
  const body = Buffer.from(JSON.stringify({ ...chat, messages: [{ role: 'user', content: 'a'.repeat(1_400_000) }] }));
  const chunked = Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]);
  const head = [['host', 'localhost'], ['content-type', 'application/json'], ['transfer-encoding', 'chunked']] as [string, string][];
  const r = await rawRequest(plain.port, requestBytes('POST', '/v1/chat/completions', head, chunked));
  assert.ok(r);
  refused(r, 413, 'request_too_large');
  let open = -1;
  for (let i = 0; i < 50 && open !== 0; i++) {
    open = await new Promise<number>((resolve) => plain.server.getConnections((_, n) => resolve(n)));
    if (open) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(open, 0, 'the server still holds the connection');
});
