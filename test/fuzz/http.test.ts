// Thousands of mutated HTTP requests against `sft serve`'s server, in process, over a fake model and the
// real init-model tokenizer: methods, request targets, Host / Origin / Content-Type / Content-Length /
// Authorization / Expect headers, and bodies that are truncated, bit-flipped, nested 100,000 deep, huge,
// not UTF-8, or chat and completion requests with a wrong type or extreme value in any field.
// Every request must get a well-formed answer within its time limit: a 2xx in OpenAI's shape, or a 4xx with
// OpenAI's error body; never a 5xx. Requests from a foreign Host or Origin, with a wrong key or a body that
// is not declared JSON never get a 2xx. The server keeps serving throughout (a plain request every 200
// cases must succeed), holds no request or connection at the end, and its memory stays bounded.
// A failure names its case; FUZZ_CASE=N node scripts/test.mjs test/fuzz/http.test.ts runs that case alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { setTimeout as sleep } from 'node:timers/promises';
import { MODEL_ID, rawRequest, startFake, type RawResponse } from '../serve/fake-server.js';
import { rng, type Rand } from './corrupt.js';
import { fuzzCount } from './scale.js';

const SEED = 20261202;
const COUNT = fuzzCount(3000);
const CONCURRENCY = 16;
const PER_CASE_MS = 8000;
const KEY = 'fuzz-key';
/** Room for the prompt and the reply: small, so the longest reply is a few hundred fake tokens. */
const CONTEXT = 256;
/** RSS may grow this much over the run (allocator caches, JIT); a leak of bodies or requests is far more. */
const RSS_GROWTH_LIMIT = 128 * 1024 * 1024;

// ---- what a case is -------------------------------------------------------------------------------------

interface Case {
  method: string;
  target: string;
  headers: [string, string][];
  body: Buffer;
  /** The request's framing is broken (a Content-Length beyond the body, bad chunks): the server may close
   *  the connection without an answer, as the client half-closes after sending. */
  mayClose: boolean;
  /** Why a 2xx would be wrong for this case, if it would. */
  mustRefuse?: string;
  /** What the case is, for the report. */
  notes: string[];
}

const TEXTS = ['hi', 'hello world', '', ' ', '😀🙃', 'é\u0301', '\u0000', '\ud800', '\udfff\ud800', '\u202eevil', '<s>', '</s>', '<|im_end|>', '[INST]', 'a\r\nb', '\\', '"', '中文测试', 'x'.repeat(300)];

/** Values of the wrong type, or of the right type at an extreme, for any field. */
const WEIRD: unknown[] = [
  null, true, false, 0, -0, -1, 1, 1.5, 2, 3, 255, 1e308, -1e308, 2 ** 53 + 1, -(2 ** 31), 2 ** 31, 1e-300, 0.5,
  '', ' ', 'x', '0', '1', 'true', 'null', 'fake', 'user', 'text', ...TEXTS.slice(4, 12),
  [], {}, [1, 2], ['a'], [[1]], [null], [-1], [1e9], [0.5], [299], [300], [[1, 2], [3]], ['a', 'b'],
  { a: 1 }, { type: 'text' }, { type: 'text', text: 7 }, [{ type: 'text', text: 'hi' }], [{ type: 'image_url' }], { include_usage: 'yes' },
];

/** JSON number and string spellings that no JS value serializes to, and some that are not JSON at all. */
const RAW = ['1e400', '-1e400', '123456789012345678901234567890', '1e-400', '-0.0', '1E2', '"\\ud800"', '"\\u0000"', 'NaN', 'Infinity', 'undefined', '01', '.5', "'x'", 'tru', '"\\x41"', '"\u0001"', '[1,]', '{"a"}'];

const CHAT_FIELDS = [
  'model', 'messages', 'messages.0', 'messages.0.role', 'messages.0.content', 'messages.0.content.0', 'messages.0.content.0.text', 'messages.1',
  'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k', 'repetition_penalty', 'seed', 'n', 'stop', 'stop.0', 'stream',
  'stream_options', 'stream_options.include_usage', 'return_token_ids', 'presence_penalty', 'frequency_penalty', 'logprobs', 'top_logprobs',
  'logit_bias', 'echo', 'best_of', 'tools', 'functions', 'tool_choice', 'response_format', 'user', 'unknown_field',
];
const COMPLETION_FIELDS = [
  'model', 'prompt', 'prompt.0', 'prompt.0.0', 'add_special_tokens', 'suffix', 'max_tokens', 'temperature', 'top_p', 'top_k', 'repetition_penalty',
  'seed', 'n', 'stop', 'stream', 'stream_options', 'stream_options.include_usage', 'return_token_ids', 'echo', 'best_of', 'logprobs', 'logit_bias', 'unknown_field',
];

function chatBody(r: Rand): Record<string, unknown> {
  const turns = 1 + r.int(3);
  const messages: Record<string, unknown>[] = r.chance(0.3) ? [{ role: 'system', content: r.pick(TEXTS) }] : [];
  for (let i = 0; i < turns; i++) messages.push({ role: i % 2 === turns % 2 ? 'assistant' : 'user', content: r.chance(0.8) ? r.pick(TEXTS) : [{ type: 'text', text: r.pick(TEXTS) }] });
  return { model: MODEL_ID, messages, ...sampling(r) };
}

function completionBody(r: Rand): Record<string, unknown> {
  const prompt = r.pick([r.pick(TEXTS), [r.pick(TEXTS)], Array.from({ length: 1 + r.int(8) }, () => r.int(300)), [[1, 2, 3]]]);
  return { model: MODEL_ID, prompt, ...sampling(r) };
}

function sampling(r: Rand): Record<string, unknown> {
  const out: Record<string, unknown> = { max_tokens: 1 + r.int(12) };
  if (r.chance(0.4)) out.temperature = r.pick([0, 0.7, 1, 2]);
  if (r.chance(0.2)) out.top_p = r.next();
  if (r.chance(0.2)) out.top_k = r.int(50);
  if (r.chance(0.2)) out.seed = r.int(1000);
  if (r.chance(0.2)) out.stop = r.pick(['x', ['a', 'b'], []]);
  if (r.chance(0.3)) out.stream = true;
  if (r.chance(0.15)) out.stream_options = { include_usage: r.chance(0.5) };
  if (r.chance(0.15)) out.return_token_ids = true;
  return out;
}

/** Sets `value` at a dotted path ("messages.0.content") where the containers on the way exist. */
function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let at: unknown = obj;
  for (const key of keys.slice(0, -1)) {
    if (at === null || typeof at !== 'object') return;
    at = (at as Record<string, unknown>)[key];
  }
  if (at === null || typeof at !== 'object') return;
  const last = keys.at(-1)!;
  if (value === undefined) delete (at as Record<string, unknown>)[last];
  else (at as Record<string, unknown>)[last] = value;
}

const deep = (r: Rand): string => {
  const n = r.pick([129, 1000, 10_000, 100_000]);
  return r.pick([() => '['.repeat(n) + ']'.repeat(n), () => '{"a":'.repeat(n) + '1' + '}'.repeat(n), () => '['.repeat(n)])();
};

/** A request body: a request with fields set to wrong values, or its JSON text broken. */
function body(r: Rand, chat: boolean, notes: string[]): Buffer {
  const obj = chat ? chatBody(r) : completionBody(r);
  const fields = chat ? CHAT_FIELDS : COMPLETION_FIELDS;
  const raws: string[] = [];
  const kind = r.int(100);
  if (kind < 45) {
    for (let k = 1 + r.int(3); k > 0; k--) {
      const field = r.pick(fields);
      const choice = r.int(10);
      // A placeholder string stands for raw JSON text, put in after JSON.stringify.
      const value = choice < 6 ? r.pick(WEIRD) : choice < 8 ? `\u0001RAW${raws.push(r.pick(RAW)) - 1}` : choice < 9 ? undefined : `\u0001RAW${raws.push(deep(r)) - 1}`;
      setPath(obj, field, value);
      notes.push(`${field}=${value === undefined ? '(deleted)' : JSON.stringify(value).slice(0, 60)}`);
    }
  } else if (kind < 50) {
    // In bytes: up to a tenth of the body limit (tokenizing more would be most of the run), or past it.
    const size = r.pick([20_000, 100_000, 1_100_000]);
    const unit = r.pick(['a', '😀', 'ab ']);
    setPath(obj, chat ? 'messages.0.content' : 'prompt', unit.repeat(Math.ceil(size / Buffer.byteLength(unit))));
    notes.push(`huge text ${size} bytes`);
  }
  let text = JSON.stringify(obj).replace(/"\\u0001RAW(\d+)"/g, (_, i: string) => raws[Number(i)]);
  if (kind >= 50 && kind < 58) text = r.pick(['', '[]', '[1,2]', '"x"', '42', 'null', '{}', ' ', '\ufeff{}', deep(r)]);
  let bytes: Buffer = Buffer.from(text, 'utf8');
  if (kind >= 58 && kind < 75) bytes = corrupt(r, bytes, notes);
  return bytes;
}

/** Byte-level damage to JSON text: cut, flipped bits, bytes that are not UTF-8, spliced copies. */
function corrupt(r: Rand, bytes: Buffer, notes: string[]): Buffer {
  const at = r.int(bytes.length + 1);
  const how = r.int(5);
  notes.push(`corrupt ${['truncate', 'bit-flip', 'insert', 'delete', 'duplicate'][how]} at ${at}`);
  if (how === 0) return bytes.subarray(0, at);
  if (how === 1 && bytes.length > 0) {
    const out = Buffer.from(bytes);
    out[at % out.length] ^= 1 << r.int(8);
    return out;
  }
  if (how === 2) return Buffer.concat([bytes.subarray(0, at), Buffer.from(r.pick([[0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0x00], [0x22], [0x5c], [0x7b], [0x5d], [0xef, 0xbb, 0xbf]])), bytes.subarray(at)]);
  if (how === 3) return Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1 + r.int(10))]);
  return Buffer.concat([bytes.subarray(0, at), bytes.subarray(r.int(bytes.length + 1)), bytes.subarray(at)]);
}

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'TRACE', 'CONNECT', 'get', 'FOO', 'PRI'];
const TARGETS = [
  '/health', '/v1/models', `/v1/models/${MODEL_ID}`, '/v1/models/other', '/v1/models/%E0%A4', '/v1/models/%', '/v1/models/..%2F..%2Fetc',
  '/', '//', '/v1', '/v1/', '/v1//chat/completions', '/v1/chat/completions?x=1', '/v1/chat/completions/', '/v1/completions#frag',
  '/V1/COMPLETIONS', '/v1/embeddings', 'http://evil.example/v1/models', '*', 'localhost:1', `/${'a'.repeat(20_000)}`, '/v1/models/%00', '/\u00e9',
];

/** Host values with whether the server answers to them. */
function host(r: Rand, port: number): { value?: string; ours: boolean } {
  if (r.chance(0.88)) return { value: r.pick([`127.0.0.1:${port}`, 'localhost', `localhost:${port}`, `[::1]:${port}`, 'LOCALHOST', '127.0.0.1']), ours: true };
  if (r.chance(0.2)) return { ours: false };
  return { value: r.pick(['evil.example', `evil.example:${port}`, 'localhost.evil.example', '', 'a@localhost', '[::1', ':::', 'x'.repeat(300), '127.0.0.1:99999', 'é.example', 'localhost:port']), ours: false };
}

/** One fuzz case. Most requests are well-formed apart from one or two things, so that they reach the code
 *  behind the checks; the rest break the request line, headers or framing. */
function makeCase(r: Rand, port: number): Case {
  const notes: string[] = [];
  const route = r.int(100);
  const chat = route < 55;
  const post = route < 85;
  const mutateMethod = r.chance(0.08);
  const method = mutateMethod ? r.pick(METHODS) : post ? 'POST' : 'GET';
  const target = route < 55 ? '/v1/chat/completions' : route < 85 ? '/v1/completions' : r.pick(TARGETS);
  let mustRefuse: string | undefined;
  const headers: [string, string][] = [];

  const h = host(r, port);
  if (h.value !== undefined) headers.push(['Host', h.value]);
  if (!h.ours) mustRefuse = `Host ${JSON.stringify(h.value)}`;
  if (r.chance(0.02)) headers.push(['Host', 'evil.example']);

  const origin = r.int(100);
  if (origin >= 82 && origin < 92 && h.value) headers.push(['Origin', `http://${h.value}`]);
  else if (origin >= 92) {
    headers.push(['Origin', r.pick(['http://evil.example', `http://localhost:${port + 1}`, 'null', 'garbage', 'https://127.0.0.1', ''])]);
    mustRefuse ??= 'foreign Origin';
  }

  if (r.chance(0.94)) headers.push(['Authorization', `Bearer ${KEY}`]);
  else {
    const auth = r.pick([undefined, 'Bearer wrong', `Bearer ${KEY}x`, KEY, `bearer ${KEY}`, 'Bearer ', `Bearer ${'k'.repeat(3000)}`, 'Basic Zm9vOmJhcg==']);
    if (auth !== undefined) headers.push(['Authorization', auth]);
    if (target.startsWith('/v1')) mustRefuse ??= 'wrong API key';
  }

  const payload = post || r.chance(0.1) ? body(r, chat, notes) : Buffer.alloc(0);
  if (post) {
    const type = r.chance(0.9) ? 'application/json' : r.pick([undefined, 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=latin1', 'APPLICATION/JSON; charset=UTF-8', 'application/json;', 'application/jsonp', '']);
    if (type !== undefined) headers.push(['Content-Type', type]);
    if (type === undefined || !/^application\/json(;\s*(charset=utf-8)?)?$/i.test(type)) mustRefuse ??= `Content-Type ${JSON.stringify(type)}`;
  }

  let mayClose = false;
  const framing = r.int(100);
  if (payload.length > 0 || post) {
    if (framing < 88) headers.push(['Content-Length', String(payload.length)]);
    else if (framing < 92) headers.push(['Transfer-Encoding', 'chunked']);
    else if (framing < 94) headers.push(['Content-Length', String(payload.length + 1 + r.int(100))]);
    else if (framing < 96) headers.push(['Content-Length', r.pick(['abc', '-1', '1e3', `${payload.length}, ${payload.length + 1}`, '99999999999999999999', ' '])]);
    else if (framing < 98) headers.push(['Content-Length', String(payload.length)], ['Transfer-Encoding', 'chunked']);
    else headers.push(['Content-Length', String(Math.max(0, payload.length - 1 - r.int(20)))]);
    if (framing >= 88) notes.push(`framing ${framing}`);
    mayClose = framing >= 88;
  }
  if (r.chance(0.03)) headers.push(['Expect', r.pick(['100-continue', 'something-else'])]);
  if (r.chance(0.03)) headers.push(['X-Big', 'v'.repeat(r.pick([100, 10_000, 20_000]))]);
  if (r.chance(0.02)) for (let i = 0; i < 300; i++) headers.push([`X-Many-${i}`, String(i)]);
  if (r.chance(0.01)) headers.push(['Bad Header', 'x']);
  if (r.chance(0.01)) headers.push(['X-Latin', 'caf\u00e9 \u00ff']);
  if (framing >= 88 && framing < 92) notes.push('chunked');
  return { method, target, headers, body: frame(r, payload, headers), mayClose: mayClose || mutateMethod, mustRefuse, notes };
}

/** The body as sent: chunked when the headers say so (and now and then with a broken chunk). */
function frame(r: Rand, payload: Buffer, headers: [string, string][]): Buffer {
  if (!headers.some(([k]) => k === 'Transfer-Encoding')) return payload;
  const parts: Buffer[] = [];
  for (let at = 0; at < payload.length; ) {
    const n = 1 + r.int(Math.max(1, payload.length));
    const piece = payload.subarray(at, at + n);
    parts.push(Buffer.from(`${(r.chance(0.03) ? piece.length + 3 : piece.length).toString(16)}\r\n`), piece, Buffer.from('\r\n'));
    at += n;
  }
  parts.push(Buffer.from(r.chance(0.03) ? 'zz\r\n\r\n' : '0\r\n\r\n'));
  return Buffer.concat(parts);
}

function bytesOf(c: Case): Buffer {
  const head = `${c.method} ${c.target} HTTP/1.1\r\n${c.headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
  return Buffer.concat([Buffer.from(head, 'utf8'), c.body]);
}

// ---- what a well-formed answer is -----------------------------------------------------------------------

/** The outcome's name for the counts, or an exception saying what is wrong with the answer. */
function checkAnswer(c: Case, res: RawResponse | undefined): string {
  if (res === undefined) {
    if (!c.mayClose) throw new Error('the server closed the connection without answering');
    return 'closed';
  }
  const { status } = res;
  if (status >= 500) throw new Error(`${status}: ${res.body.slice(0, 300)}`);
  if (status < 200) throw new Error(`status ${status}`);
  // HEAD answers carry no body, whatever the status.
  if (c.method === 'HEAD') return `HEAD ${status}`;
  if (status >= 400) {
    assert.match(res.headers['content-type'] ?? '', /^application\/json/, 'an error answer is JSON');
    const err = (JSON.parse(res.body) as { error?: Record<string, unknown> }).error;
    assert.ok(err, `an OpenAI error body: ${res.body.slice(0, 200)}`);
    assert.deepEqual(Object.keys(err).sort(), ['code', 'message', 'param', 'type']);
    assert.ok(typeof err.message === 'string' && err.message.length > 0, 'the error says what is wrong');
    return `${status} ${String(err.code)}`;
  }
  if (c.mustRefuse) throw new Error(`${status} for a request that must be refused (${c.mustRefuse})`);
  if (status === 204) return String(status);
  // The chat page at / (chat-page.ts): HTML, and only for GET.
  if ((res.headers['content-type'] ?? '').startsWith('text/html')) {
    assert.equal(c.method, 'GET');
    assert.match(res.body, /^<!doctype html>/);
    assert.match(res.headers['content-security-policy'] ?? '', /default-src 'none'/);
    return `${status} page`;
  }
  if ((res.headers['content-type'] ?? '').startsWith('text/event-stream')) {
    const events = res.body.split('\n\n').filter((e) => e !== '');
    assert.equal(events.at(-1), 'data: [DONE]', 'a stream ends with [DONE]');
    for (const e of events.slice(0, -1)) {
      const value = JSON.parse(e.replace(/^data: /, '')) as Record<string, unknown>;
      assert.ok(!('error' in value), `no error mid-stream: ${e.slice(0, 200)}`);
    }
    return `${status} stream`;
  }
  const value = JSON.parse(res.body) as Record<string, unknown>;
  assert.ok(value && typeof value === 'object', 'a JSON answer');
  return String(status);
}

async function runCase(port: number, i: number): Promise<{ outcome?: string; failure?: string }> {
  const c = makeCase(rng(Math.imul(SEED, 1_000_003) + i * 7919), port);
  try {
    const res = await rawRequest(port, bytesOf(c), { timeoutMs: PER_CASE_MS, head: c.method === 'HEAD', halfClose: c.mayClose });
    return { outcome: checkAnswer(c, res) };
  } catch (err) {
    const shown = { case: i, error: String((err as Error).message).slice(0, 300), method: c.method, target: c.target.slice(0, 80), headers: c.headers.slice(0, 12).map(([k, v]) => `${k}: ${v.slice(0, 80)}`), notes: c.notes, body: c.body.subarray(0, 200).toString('latin1') };
    return { failure: JSON.stringify(shown) };
  }
}

const gc = (): void => {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
};

test(`${COUNT} mutated HTTP requests: each a 2xx or an OpenAI 4xx, none hangs, the server keeps serving`, { timeout: 120_000 }, async (t) => {
  const only = process.env.FUZZ_CASE === undefined ? undefined : Number(process.env.FUZZ_CASE);
  const server = await startFake({ apiKey: KEY, maxContext: CONTEXT });
  const plain = (): Promise<RawResponse | undefined> => {
    const text = JSON.stringify({ model: MODEL_ID, messages: [{ role: 'user', content: 'still there?' }], max_tokens: 4 });
    const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${KEY}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n`;
    return rawRequest(server.port, head + text);
  };
  try {
    const cases = only === undefined ? Array.from({ length: COUNT }, (_, i) => i) : [only];
    const counts: Record<string, number> = {};
    const failures: string[] = [];
    /** Runs `ids` CONCURRENCY at a time; a plain request every 200 cases checks the server still serves. */
    const pool = async (ids: number[]): Promise<void> => {
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < ids.length) {
          const i = ids[next++];
          const { outcome, failure } = await runCase(server.port, i);
          if (failure) failures.push(failure);
          else counts[outcome!] = (counts[outcome!] ?? 0) + 1;
          if (i % 200 === 199) {
            const alive = await plain();
            if (alive?.status !== 200) failures.push(`after case ${i}: a plain request got ${alive?.status ?? 'no answer'} ${alive?.body.slice(0, 200) ?? ''}`);
          }
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    };
    // A first stretch warms up the JIT and the allocator, so the RSS measured after it is the baseline.
    const warm = Math.min(200, cases.length);
    await pool(cases.slice(0, warm));
    gc();
    const rssBefore = process.memoryUsage().rss;
    await pool(cases.slice(warm));

    assert.deepEqual(failures.slice(0, 10), [], `${failures.length} failures; replay one with FUZZ_CASE=N`);
    const answered = Object.values(counts).reduce((a, b) => a + b, 0);
    assert.equal(answered, cases.length);
    if (only !== undefined) return;

    // The cases reach every gate and the model behind them.
    const total = (re: RegExp) => Object.entries(counts).filter(([k]) => re.test(k)).reduce((a, [, n]) => a + n, 0);
    for (const [what, re, least] of [
      ['answers', /^200/, 300], ['streams', /stream/, 100], ['Host refusals', /host_not_allowed|invalid_host/, 100], ['Origin refusals', /origin_not_allowed/, 100],
      ['415s', /^415/, 50], ['401s', /^401/, 50], ['bad JSON', /invalid_json/, 200], ['bad fields', /^400 (null|missing|context)/, 100], ['413s', /^413/, 5],
    ] as const) {
      // The floors were set at 3,000 cases; they scale with the count the suite runs.
      const floor = Math.max(1, Math.floor((least * COUNT) / 3000));
      assert.ok(total(re) >= floor, `${what}: ${total(re)} < ${floor}; ${JSON.stringify(counts)}`);
    }
    const alive = await plain();
    assert.equal(alive?.status, 200, 'the server still answers');

    // Nothing is left behind: no request holds the model or waits for it, no connection stays open.
    assert.deepEqual(server.scheduler.stats().running + server.scheduler.stats().queued, 0);
    let open = -1;
    for (let i = 0; i < 100 && open !== 0; i++) {
      open = await new Promise<number>((resolve) => server.server.getConnections((_, n) => resolve(n)));
      if (open) await sleep(20);
    }
    assert.equal(open, 0, 'connections still open');
    gc();
    const growth = process.memoryUsage().rss - rssBefore;
    t.diagnostic(`outcomes ${JSON.stringify(counts)}; RSS ${(rssBefore / 2 ** 20).toFixed(0)} -> ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`);
    assert.ok(growth < RSS_GROWTH_LIMIT, `RSS grew ${(growth / 2 ** 20).toFixed(0)} MiB over ${cases.length - warm} requests`);
  } finally {
    await server.close();
  }
});
