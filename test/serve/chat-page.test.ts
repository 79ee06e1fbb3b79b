// The chat page at GET / of `sft serve`, in a real browser: headless Chromium (Debian's, installed by
// .ci/run) loads it from a server over a small random Llama, a message is typed and sent with Enter, and the
// answer the page streamed equals the API's own answer to the same messages (greedy); likewise the second
// turn of a conversation with a system prompt, Stop mid-answer, and a server that needs an API key. The page
// must run under its Content-Security-Policy with no error in the console.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { loadModel, type LoadedModel } from '../../src/model/load.js';
import { FifoScheduler, type Scheduler } from '../../src/serve/scheduler.js';
import type { GenerateOptions } from '../../src/chat/generate.js';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { Browser, chromiumPath } from '../helpers/chromium.js';

const binary = chromiumPath();
const skip = binary ? false : 'no Chromium (apt-get install chromium; .ci/run installs it)';
const CONTEXT = 2048;
const KEY = 'page-test-key';

let model: LoadedModel;
let server: RunningServer;
let keyed: RunningServer;
let browser: Browser;
const logs: string[] = [];

/** The scheduler with a pause after each token: the tiny model would finish 1,500 tokens before the
 *  Stop click lands, and Stop must be seen ending a generation that is still running. */
function paced(inner: Scheduler, ms: number): Scheduler {
  return {
    stats: () => inner.stats(),
    async *run(promptIds: number[], options: GenerateOptions, signal?: AbortSignal) {
      const gen = inner.run(promptIds, options, signal);
      try {
        for (;;) {
          const step = await gen.next();
          if (step.done) return step.value;
          yield step.value;
          await new Promise((r) => setTimeout(r, ms));
        }
      } finally {
        await gen.return(undefined as never);
      }
    },
  };
}

before(async () => {
  if (skip) return;
  const dir = join(mkdtempSync(join(tmpdir(), 'sft-page-')), 'tiny');
  initModel({ arch: 'llama', outDir: dir, hidden: 64, layers: 2, heads: 4, intermediate: 128, vocab: 400, seed: 3, maxPosition: CONTEXT, force: true });
  model = await loadModel({ modelDir: dir });
  const ctx = { id: 'tiny<chat>', tok: model.tok, template: model.template, maxContext: CONTEXT, vocabSize: model.native.vocabSize };
  // One scheduler for both servers: the model has one KV cache, and the scheduler queues requests on it.
  const scheduler = new FifoScheduler(model.model, model.tok);
  server = await startServer({ ctx, scheduler: paced(scheduler, 2), host: '127.0.0.1', port: 0, log: (line) => logs.push(line) });
  keyed = await startServer({ ctx, scheduler, host: '127.0.0.1', port: 0, apiKey: KEY });
  browser = await Browser.launch(binary as string);
});
after(async () => {
  // Each closes whatever the others did: a server left open would keep this test file from exiting.
  await Promise.allSettled([browser?.close(), server?.close(), keyed?.close()]);
});

type Message = { role: string; content: string };

/** The API's non-streamed answer to `messages` at temperature 0. */
async function apiAnswer(url: string, messages: Message[], maxTokens: number, key?: string): Promise<{ text: string; finish: string }> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify({ model: 'tiny<chat>', messages, temperature: 0, max_tokens: maxTokens }),
  });
  assert.equal(res.status, 200);
  const body = (await res.json()) as { choices: { message: { content: string }; finish_reason: string }[] };
  return { text: body.choices[0].message.content, finish: body.choices[0].finish_reason };
}

/** Sets a settings field of the page. */
function setField(id: string, value: string): Promise<unknown> {
  return browser.evaluate(`document.getElementById(${JSON.stringify(id)}).value = ${JSON.stringify(value)}`);
}

/** Types `text` into the message box, sends it with Enter, waits for the answer; returns it and its chunk count. */
async function say(text: string): Promise<{ text: string; chunks: number; done: string }> {
  const before = await browser.evaluate<number>('document.querySelectorAll(".msg.assistant").length');
  await browser.evaluate('document.getElementById("input").focus()');
  await browser.type(text);
  await browser.waitFor(`document.querySelectorAll(".msg.assistant").length > ${before} && document.querySelectorAll(".msg.assistant")[document.querySelectorAll(".msg.assistant").length - 1].dataset.done`);
  return browser.evaluate(`(() => { const all = document.querySelectorAll(".msg.assistant"); const m = all[all.length - 1];
    return { text: m.textContent, chunks: Number(m.dataset.chunks || 0), done: m.dataset.done }; })()`);
}

test('the page streams the same greedy answers as the API, over two turns with a system prompt', { skip }, async () => {
  await browser.goto(`${server.url}/`);
  assert.equal(await browser.evaluate('document.title'), 'tiny<chat> · sft chat');
  assert.equal(await browser.evaluate('document.getElementById("key").hidden'), true);
  await setField('temperature', '0');
  await setField('max_tokens', '24');

  const first = await say('hello world');
  const want1 = await apiAnswer(server.url, [{ role: 'user', content: 'hello world' }], 24);
  assert.ok(want1.text.length > 0);
  assert.equal(first.text, want1.text);
  assert.equal(first.done, want1.finish);
  assert.ok(first.chunks > 1, `streamed in ${first.chunks} chunks`);

  // A new chat with a system prompt, two turns: the second answer follows the whole conversation.
  await browser.evaluate('document.getElementById("clear").click()');
  await setField('system', 'You answer briefly.');
  const a = await say('one');
  const b = await say('two');
  const convo: Message[] = [
    { role: 'system', content: 'You answer briefly.' },
    { role: 'user', content: 'one' },
  ];
  assert.equal(a.text, (await apiAnswer(server.url, convo, 24)).text);
  convo.push({ role: 'assistant', content: a.text }, { role: 'user', content: 'two' });
  assert.equal(b.text, (await apiAnswer(server.url, convo, 24)).text);
  assert.equal(await browser.evaluate('document.querySelectorAll(".msg.user").length'), 2);
  assert.deepEqual(browser.problems(), []);
});

test('Stop ends the answer mid-stream and the server is free again', { skip }, async () => {
  await browser.goto(`${server.url}/`);
  await setField('temperature', '0');
  await setField('max_tokens', '1500');
  // The answer is long enough to stop: greedy runs to the token limit on this model and prompt.
  assert.equal((await apiAnswer(server.url, [{ role: 'user', content: 'tell me more' }], 64)).finish, 'length');
  await browser.evaluate('document.getElementById("input").focus()');
  await browser.type('tell me more');
  await browser.waitFor('Number((document.querySelector(".msg.assistant") || {dataset: {}}).dataset.chunks || 0) >= 3');
  await browser.evaluate('document.getElementById("stop").click()');
  const done = await browser.waitFor<string>('document.querySelector(".msg.assistant").dataset.done');
  assert.equal(done, 'stopped');
  const chunks = await browser.evaluate<number>('Number(document.querySelector(".msg.assistant").dataset.chunks)');
  assert.ok(chunks < 1500, `stopped after ${chunks} chunks`);
  // The server saw the client go and ended the generation early.
  let line: string | undefined;
  for (let i = 0; i < 250 && line === undefined; i++) {
    line = logs.find((l) => l.includes('aborted'));
    if (line === undefined) await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(line !== undefined && Number(/\+(\d+) tokens/.exec(line)?.[1]) < 1500, logs.join('\n'));
  // The generation stops server-side within a token; the next request is served at once.
  const t0 = Date.now();
  for (;;) {
    const health = (await (await fetch(`${server.url}/health`)).json()) as { scheduler: { running: number } };
    if (health.scheduler.running === 0) break;
    assert.ok(Date.now() - t0 < 5000, 'the stopped generation is still running after 5 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(await browser.evaluate('document.getElementById("send").disabled'), false);
  assert.deepEqual(browser.problems(), []);
});

test('with an API key: the page asks for it, shows the 401 message without it, and works with it', { skip }, async () => {
  await browser.goto(`${keyed.url}/`);
  assert.equal(await browser.evaluate('document.getElementById("key").hidden'), false);
  await setField('temperature', '0');
  await setField('max_tokens', '8');
  const refused = await say('hi');
  assert.equal(refused.done, 'error');
  const shown = await browser.evaluate<string>('document.querySelector(".msg.error").textContent');
  assert.match(shown, /Incorrect or missing API key/);
  await browser.evaluate('document.getElementById("clear").click()');
  await setField('key', KEY);
  const ok = await say('hi');
  assert.equal(ok.text, (await apiAnswer(keyed.url, [{ role: 'user', content: 'hi' }], 8, KEY)).text);
  // The 401 was a fetch result, not a page error; nothing else went wrong.
  assert.deepEqual(browser.problems().filter((p) => !p.includes('401')), []);
});

/** A raw GET with the given headers (fetch cannot set Host). */
function rawGet(url: string, path: string, headers: Record<string, string>): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, { headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('the page is served only to allowed hosts, with a nonce CSP and the model id escaped', async () => {
  if (skip) {
    // Without a browser the HTTP side still runs: a server over the fake model.
    const { startFake } = await import('./fake-server.js');
    const fake = await startFake();
    try {
      await checkHeaders(fake.url, 'fake');
    } finally {
      await fake.close();
    }
    return;
  }
  await checkHeaders(server.url, 'tiny<chat>');
});

async function checkHeaders(url: string, id: string): Promise<void> {
  const host = new URL(url).host;
  const page = await rawGet(url, '/', { host });
  assert.equal(page.status, 200);
  assert.match(String(page.headers['content-type']), /^text\/html/);
  const csp = String(page.headers['content-security-policy']);
  const nonce = /script-src 'nonce-([^']+)'/.exec(csp)?.[1];
  assert.ok(nonce, csp);
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.ok(page.body.includes(`<script nonce="${nonce}">`));
  // The script at least parses (the browser tests run it; this holds where there is no browser).
  const script = page.body.slice(page.body.indexOf('<script'), page.body.indexOf('</script>')).replace(/^<script[^>]*>/, '');
  assert.doesNotThrow(() => new Function(script));
  // Every script on the page carries the nonce; no external reference of any kind.
  assert.equal((page.body.match(/<script/g) ?? []).length, 1);
  assert.doesNotMatch(page.body, /(src|href)=["']?(https?:)?\/\//);
  // The id is escaped in the HTML and in the script's JSON: "<chat>" never appears as markup.
  if (id.includes('<')) assert.ok(!page.body.includes(id), 'the model id is escaped');
  // A second load gets a fresh nonce.
  const again = await rawGet(url, '/', { host });
  assert.notEqual(/nonce-([^']+)/.exec(String(again.headers['content-security-policy']))?.[1], nonce);
  // DNS rebinding: a page under another name reaches the port, but its Host gives it away.
  assert.equal((await rawGet(url, '/', { host: 'evil.example' })).status, 403);
  // Another site's page may not fetch it either.
  assert.equal((await rawGet(url, '/', { host, origin: 'http://evil.example' })).status, 403);
  const post = await fetch(`${url}/`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(post.status, 405);
}
