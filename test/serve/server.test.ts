// `sft serve`'s HTTP API through the official openai client, on a small random Llama model (init-model) on
// loopback: answers equal what `sft score` (argmax of full forwards) and `sft chat` (generate(), ChatSession)
// compute on a second copy of the model, alone or with many requests at once; bad requests get OpenAI's
// error body and the server keeps serving; a client that goes away stops its generation.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { initModel } from '../../src/model/init.js';
import { loadModel, type LoadedModel } from '../../src/model/load.js';
import { encodePrompt } from '../../src/data/encode.js';
import { ChatSession, stopSet } from '../../src/chat/session.js';
import { FifoScheduler } from '../../src/serve/scheduler.js';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { argmaxContinuation, generated, GREEDY } from './reference.js';

const CONTEXT = 4096;
const dir = join(mkdtempSync(join(tmpdir(), 'sft-serve-')), 'tiny');
// Llama rather than Qwen2: init-model's Qwen2 ties its embeddings, and its greedy output repeats one token.
initModel({ arch: 'llama', outDir: dir, hidden: 64, layers: 2, heads: 4, intermediate: 128, vocab: 400, seed: 3, maxPosition: CONTEXT, force: true });

let served: LoadedModel;
let ref: LoadedModel;
let server: RunningServer;
let client: OpenAI;
const logs: string[] = [];

before(async () => {
  served = await loadModel({ modelDir: dir });
  ref = await loadModel({ modelDir: dir });
  server = await startServer({
    ctx: { id: 'tiny', tok: served.tok, template: served.template, maxContext: CONTEXT, vocabSize: served.native.vocabSize },
    scheduler: new FifoScheduler(served.model, served.tok),
    host: '127.0.0.1',
    port: 0,
    log: (line) => logs.push(line),
  });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
});
after(() => server.close());

// vLLM's return_token_ids extension; the openai client sends extra fields as they are.
type WithIds = { token_ids: number[]; prompt_token_ids?: number[] };
const template = () => ref.template;
const eos = () => ref.tok.eosId!;
const chatPrompt = (text: string) => encodePrompt({ turns: [{ role: 'user', content: text }] }, template(), ref.tok);

test('models and health', async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => [m.id, m.object, m.owned_by]), [['tiny', 'model', 'sft']]);
  assert.equal((await client.models.retrieve('tiny')).id, 'tiny');
  const health = await (await fetch(`${server.url}/health`)).json();
  assert.deepEqual(health, { status: 'ok', model: 'tiny', scheduler: { kind: 'fifo', maxBatch: 1, running: 0, queued: 0, served: 0 } });
});

test('completion, greedy: the argmax of full forwards token by token, and generate() at temperature 0', async () => {
  // A text prompt starts with BOS, as Hugging Face's Llama tokenizer adds it.
  const promptIds = [ref.tok.bosId!, ...ref.tok.encode('hello world')];
  const r = await client.completions.create({ model: 'tiny', prompt: 'hello world', max_tokens: 12, temperature: 0, return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming);
  const choice = r.choices[0] as typeof r.choices[0] & WithIds;
  const want = await argmaxContinuation(ref.model, promptIds, 12, [eos()]);
  assert.deepEqual(choice.token_ids, want);
  assert.deepEqual(choice.prompt_token_ids, promptIds);
  const gen = await generated(ref.model, ref.tok, promptIds, { ...GREEDY, maxNewTokens: 12, stopIds: [eos()] });
  assert.deepEqual(choice.token_ids, gen.ids);
  assert.equal(choice.text, gen.text);
  assert.equal(choice.finish_reason, want.includes(eos()) ? 'stop' : 'length');
  assert.equal(r.object, 'text_completion');
  assert.equal(r.model, 'tiny');
  assert.match(r.id, /^cmpl-/);
  assert.deepEqual(r.usage, { prompt_tokens: promptIds.length, completion_tokens: want.length, total_tokens: promptIds.length + want.length });

  // Streamed: the same text and ids in pieces, finish_reason on the last chunk.
  const stream = await client.completions.create({ model: 'tiny', prompt: 'hello world', max_tokens: 12, temperature: 0, stream: true, return_token_ids: true } as OpenAI.CompletionCreateParamsStreaming);
  let text = '';
  const ids: number[] = [];
  const finishes: (string | null)[] = [];
  for await (const chunk of stream) {
    const c = chunk.choices[0] as typeof chunk.choices[0] & WithIds;
    text += c.text;
    ids.push(...c.token_ids);
    finishes.push(c.finish_reason);
  }
  assert.equal(text, choice.text);
  assert.deepEqual(ids, want);
  assert.deepEqual(finishes.slice(0, -1).filter((f) => f !== null), []);
  assert.equal(finishes.at(-1), choice.finish_reason);
});

test('chat, greedy: what sft chat (ChatSession) answers; streamed with include_usage', async () => {
  const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'what is a cat?' }];
  const r = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 20, temperature: 0, return_token_ids: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const session = new ChatSession(ref.model, ref.tok, { template: template(), maxContext: CONTEXT, maxNewTokens: 20, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 0 });
  ref.model.resetCache();
  const gen = session.send('what is a cat?');
  let step = await gen.next();
  while (!step.done) step = await gen.next();
  const want = step.value;
  const choice = r.choices[0] as typeof r.choices[0] & WithIds;
  assert.equal(choice.message.role, 'assistant');
  assert.equal(choice.message.content, want.text);
  assert.deepEqual(choice.token_ids.filter((id) => !stopSet(template(), ref.tok, []).stopIds.includes(id)), want.ids);
  assert.equal(choice.finish_reason, want.finishReason);
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  const promptTokens = chatPrompt('what is a cat?').length;
  assert.deepEqual(r.usage, { prompt_tokens: promptTokens, completion_tokens: choice.token_ids.length, total_tokens: promptTokens + choice.token_ids.length });

  const stream = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true } });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
  assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), want.text);
  assert.equal(chunks.at(-2)!.choices[0].finish_reason, want.finishReason);
  assert.deepEqual(chunks.at(-1)!.choices, []);
  assert.deepEqual(chunks.at(-1)!.usage, r.usage);
  assert.ok(chunks.slice(0, -1).every((c) => c.object === 'chat.completion.chunk' && c.usage === null));
});

test('seeded sampling uses sft chat\'s sampler with the request\'s parameters', async () => {
  const promptIds = chatPrompt('tell me something');
  const opts = { temperature: 0.9, top_p: 0.8, top_k: 40, repetition_penalty: 1.3, seed: 11, max_tokens: 25 };
  const r = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'tell me something' }], ...opts, return_token_ids: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const want = await generated(ref.model, ref.tok, promptIds, {
    maxNewTokens: 25, temperature: 0.9, topP: 0.8, topK: 40, repetitionPenalty: 1.3, seed: 11, stopIds: stopSet(template(), ref.tok, []).stopIds, stopStrings: [],
  });
  assert.deepEqual((r.choices[0] as typeof r.choices[0] & WithIds).token_ids, want.ids);
  assert.equal(r.choices[0].message.content, want.text);
});

test('a stop string ends the text before it with finish_reason "stop"', async () => {
  const long = await client.completions.create({ model: 'tiny', prompt: 'the sky', max_tokens: 40, temperature: 0 });
  const full = long.choices[0].text;
  const stop = [...full].slice(10, 13).join('');
  assert.ok(stop.length >= 3 && full.indexOf(stop) > 0, JSON.stringify(full));
  const r = await client.completions.create({ model: 'tiny', prompt: 'the sky', max_tokens: 40, temperature: 0, stop: ['never-there', stop] });
  assert.equal(r.choices[0].text, full.slice(0, full.indexOf(stop)));
  assert.equal(r.choices[0].finish_reason, 'stop');
});

test('many requests at once each get exactly what they get alone', async () => {
  const jobs = Array.from({ length: 8 }, (_, i) => ({ text: `request number ${i}`, chat: i % 2 === 0, stream: i % 3 === 0, seed: i % 4 === 1 ? 100 + i : undefined }));
  const ask = async (j: (typeof jobs)[number]): Promise<string> => {
    const common = { model: 'tiny', max_tokens: 15, temperature: j.seed === undefined ? 0 : 1, seed: j.seed };
    if (j.chat) {
      const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: j.text }];
      if (!j.stream) return (await client.chat.completions.create({ ...common, messages })).choices[0].message.content ?? '';
      let s = '';
      for await (const c of await client.chat.completions.create({ ...common, messages, stream: true })) s += c.choices[0]?.delta.content ?? '';
      return s;
    }
    if (!j.stream) return (await client.completions.create({ ...common, prompt: j.text })).choices[0].text;
    let s = '';
    for await (const c of await client.completions.create({ ...common, prompt: j.text, stream: true })) s += c.choices[0].text;
    return s;
  };
  const got = await Promise.all(jobs.map(ask));
  for (const [i, j] of jobs.entries()) {
    const promptIds = j.chat ? chatPrompt(j.text) : [ref.tok.bosId!, ...ref.tok.encode(j.text)];
    const stopIds = j.chat ? stopSet(template(), ref.tok, []).stopIds : [eos()];
    const sampling = j.seed === undefined ? GREEDY : { ...GREEDY, temperature: 1, seed: j.seed };
    const want = await generated(ref.model, ref.tok, promptIds, { ...sampling, maxNewTokens: 15, stopIds });
    assert.equal(got[i], want.text, `request ${i} (${JSON.stringify(j)})`);
  }
});

test('bad requests get 4xx with an OpenAI error body, and the server goes on serving', async () => {
  const post = async (path: string, body: string) => {
    const res = await fetch(`${server.url}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    return { status: res.status, body: (await res.json()) as { error: Record<string, unknown> } };
  };
  const shape = (e: { error: Record<string, unknown> }) => Object.keys(e.error).sort().join(',');

  const malformed = await post('/v1/chat/completions', '{"model": "tiny", "messages": [');
  assert.equal(malformed.status, 400);
  assert.equal(shape(malformed.body), 'code,message,param,type');
  assert.equal(malformed.body.error.type, 'invalid_request_error');
  assert.equal((await post('/v1/completions', '[1, 2]')).status, 400);

  const unknownModel = await client.completions.create({ model: 'gpt-4', prompt: 'x' }).catch((e: unknown) => e);
  assert.ok(unknownModel instanceof OpenAI.NotFoundError);
  assert.equal(unknownModel.code, 'model_not_found');
  assert.equal(unknownModel.param, 'model');

  const tooLong = await client.completions.create({ model: 'tiny', prompt: Array(CONTEXT + 5).fill(5), max_tokens: 1 }).catch((e: unknown) => e);
  assert.ok(tooLong instanceof OpenAI.BadRequestError);
  assert.equal(tooLong.code, 'context_length_exceeded');

  const n2 = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'x' }], n: 2 }).catch((e: unknown) => e);
  assert.ok(n2 instanceof OpenAI.BadRequestError);
  assert.equal(n2.param, 'n');

  // Over the 1 MiB body limit: with a content-length (the client's way) and chunked without one.
  const huge = await client.completions.create({ model: 'tiny', prompt: 'a'.repeat(1_200_000) }).catch((e: unknown) => e);
  assert.ok(huge instanceof OpenAI.APIError);
  assert.equal(huge.status, 413);
  assert.equal(huge.code, 'request_too_large');
  const chunked = await chunkedPost('/v1/completions', 1_500_000);
  assert.equal(chunked.status, 413);
  assert.equal(JSON.parse(chunked.body).error.code, 'request_too_large');

  const route = await post('/v1/embeddings', '{}');
  assert.equal(route.status, 404);
  assert.equal(shape(route.body), 'code,message,param,type');
  assert.equal((await fetch(`${server.url}/v1/completions`)).status, 405);

  const ok = await client.completions.create({ model: 'tiny', prompt: 'hello world', max_tokens: 12, temperature: 0 });
  const want = await generated(ref.model, ref.tok, [ref.tok.bosId!, ...ref.tok.encode('hello world')], { ...GREEDY, maxNewTokens: 12, stopIds: [eos()] });
  assert.equal(ok.choices[0].text, want.text);
});

/** POST a body of `size` bytes in chunks with no content-length. */
function chunkedPost(path: string, size: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    const piece = Buffer.alloc(64 * 1024, 'a');
    for (let sent = 0; sent < size; sent += piece.length) req.write(piece);
    req.end();
  });
}

test('a client that disconnects stops its generation, queued or streaming', async () => {
  const long = { model: 'tiny', prompt: 'once', max_tokens: CONTEXT - 10, temperature: 0, stream: true as const };
  logs.length = 0;
  const first = await client.completions.create(long);
  // A second request waits behind the first; its client gives up while it waits.
  const queuedCtl = new AbortController();
  const queued = client.completions.create({ ...long, prompt: 'twice' }, { signal: queuedCtl.signal }).then(
    async (s) => {
      for await (const _ of s);
    },
    (e: unknown) => e,
  );
  let chunks = 0;
  for await (const _ of first) {
    if (++chunks === 3) {
      queuedCtl.abort();
      await queued;
      first.controller.abort();
      break;
    }
  }
  // The server notices, stops generating and frees the model.
  for (let i = 0; i < 200 && logs.length < 2; i++) await sleep(10);
  const lines = logs.filter((l) => l.startsWith('POST /v1/completions'));
  assert.equal(lines.length, 2, logs.join('\n'));
  for (const line of lines) {
    const m = / (\d+)\+(\d+) tokens aborted /.exec(line);
    assert.ok(m, line);
    assert.ok(Number(m[2]) < 1000, line);
  }
  assert.ok(lines.some((l) => / \d+\+0 tokens aborted /.test(l)), 'the queued request never generated');
  const health = (await (await fetch(`${server.url}/health`)).json()) as { scheduler: { running: number; queued: number } };
  assert.equal(health.scheduler.running, 0);
  assert.equal(health.scheduler.queued, 0);
  const ok = await client.completions.create({ model: 'tiny', prompt: 'hello world', max_tokens: 12, temperature: 0 });
  assert.equal(ok.choices[0].text, (await generated(ref.model, ref.tok, [ref.tok.bosId!, ...ref.tok.encode('hello world')], { ...GREEDY, maxNewTokens: 12, stopIds: [eos()] })).text);
});

test('with an API key, /v1 requests need it and /health does not', async () => {
  const locked = await startServer({
    ctx: { id: 'tiny', tok: served.tok, template: served.template, maxContext: CONTEXT, vocabSize: served.native.vocabSize },
    scheduler: new FifoScheduler(served.model, served.tok),
    apiKey: 'sesame',
    host: '127.0.0.1',
    port: 0,
  });
  try {
    const wrong = await new OpenAI({ baseURL: `${locked.url}/v1`, apiKey: 'guess', maxRetries: 0 }).models.list().catch((e: unknown) => e);
    assert.ok(wrong instanceof OpenAI.AuthenticationError);
    assert.equal(wrong.code, 'invalid_api_key');
    const right = new OpenAI({ baseURL: `${locked.url}/v1`, apiKey: 'sesame', maxRetries: 0 });
    assert.equal((await right.completions.create({ model: 'tiny', prompt: 'hi', max_tokens: 2 })).usage?.completion_tokens, 2);
    assert.equal((await fetch(`${locked.url}/health`)).status, 200);
  } finally {
    await locked.close();
  }
});
