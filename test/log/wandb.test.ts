// wandb: opt-in, guarded, never in training's way. The guard is tested with fake clients injected;
// the real @wandb/sdk (in its worker thread) is tested against a fake W&B server on 127.0.0.1:
// refused, hanging, refusing to create the run (which kills a process that runs the SDK in its own
// thread), and working — no network.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WandbLogger, wandbRequested, type WandbClient, type WandbInit } from '../../src/log/wandb.js';

const KEY = { WANDB_API_KEY: 'k'.repeat(40) };
const settings = { report_to: ['wandb'], output_dir: '/tmp/runs/my-run' };

interface Fake extends WandbClient { calls: string[]; inits: WandbInit[] }

/** A fake client whose calls succeed unless `behave` says otherwise for that call. */
function fake(behave: Partial<Record<'init' | 'log' | 'finish', 'reject' | 'hang'>> = {}, failLogAt = -1): Fake {
  const calls: string[] = [];
  const inits: WandbInit[] = [];
  const act = <T>(what: 'init' | 'log' | 'finish', value: T): Promise<T> => {
    if (behave[what] === 'reject') return Promise.reject(new Error(`${what} exploded\nsecond line`));
    if (behave[what] === 'hang') return new Promise(() => {});
    return Promise.resolve(value);
  };
  return {
    calls,
    inits,
    init(o) {
      calls.push('init');
      inits.push(o);
      return act('init', 'https://wandb.example/run');
    },
    log(m, step) {
      calls.push(`log ${step} ${JSON.stringify(m)}`);
      if (step === failLogAt) return Promise.reject(new Error('log exploded'));
      return act('log', undefined);
    },
    finish() {
      calls.push('finish');
      return act('finish', undefined);
    },
    kill() {
      calls.push('kill');
    },
  };
}

async function open(client: Fake | (() => never), over: Partial<typeof settings & { run_name: string | null }> = {}, env: NodeJS.ProcessEnv = KEY, timeoutMs = 10_000) {
  const lines: string[] = [];
  const w = await WandbLogger.open({ ...settings, ...over }, { learning_rate: 1e-4 }, {
    print: (l) => lines.push(l), env, timeoutMs, client: typeof client === 'function' ? client : () => client,
  });
  return { w, lines };
}

test('wandb is on only when report_to asks for it (or "all") and WANDB_API_KEY is set', async () => {
  assert.equal(wandbRequested(['none']), false);
  assert.equal(wandbRequested(['tensorboard']), false);
  assert.equal(wandbRequested(['all']), true);
  assert.equal(wandbRequested(['tensorboard', 'wandb']), true);

  const quiet = fake();
  const none = await open(quiet, { report_to: ['none'] });
  assert.equal(none.w, undefined);
  assert.deepEqual(none.lines, []); // not asked for: not a word
  assert.deepEqual(quiet.calls, []);

  const noKey = await open(fake(), { report_to: ['all'] }, {});
  assert.equal(noKey.w, undefined);
  assert.equal(noKey.lines.length, 1);
  assert.match(noKey.lines[0], /^wandb: off — report_to=all but WANDB_API_KEY is not set .*metrics\.jsonl/);
});

test('a run is named after run_name or output_dir, in WANDB_PROJECT or "sft"; logs go in order, then finish', async () => {
  const c = fake();
  const { w, lines } = await open(c);
  assert.ok(w);
  assert.deepEqual(c.inits, [{ project: 'sft', name: 'my-run', config: { learning_rate: 1e-4 } }]);
  assert.deepEqual(lines, ['wandb: run "my-run" in project "sft" at https://wandb.example/run']);
  w.log({ 'train/loss': 2 }, 1);
  w.log({ 'train/loss': 1 }, 2);
  await w.close();
  assert.deepEqual(c.calls, ['init', 'log 1 {"train/loss":2}', 'log 2 {"train/loss":1}', 'finish', 'kill']);

  const d = fake();
  await open(d, { run_name: 'lr-sweep-3' }, { ...KEY, WANDB_PROJECT: 'firefly', WANDB_ENTITY: 'team' });
  assert.deepEqual(d.inits[0], { project: 'firefly', name: 'lr-sweep-3', entity: 'team', config: { learning_rate: 1e-4 } });
});

test('a failing or hanging init is one warning, and no run', async () => {
  for (const how of ['reject', 'hang'] as const) {
    const c = fake({ init: how });
    const t0 = Date.now();
    const { w, lines } = await open(c, {}, KEY, 100);
    assert.equal(w, undefined);
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0], how === 'reject' ? /^wandb: warning: could not start the run \(init exploded\); wandb is off/ : /could not start the run \(no answer within 0\.1 s\)/);
    assert.deepEqual(c.calls, ['init', 'kill']);
  }
  const broken = await open(() => { throw new Error('Cannot find package'); });
  assert.equal(broken.w, undefined);
  assert.match(broken.lines[0], /could not load @wandb\/sdk \(Cannot find package\)/);
});

test('the first failing log is one warning; later calls are dropped and close() still returns', async () => {
  const c = fake({}, 2);
  const { w, lines } = await open(c);
  assert.ok(w);
  for (let s = 1; s <= 4; s++) w.log({ 'train/loss': s }, s);
  await w.close();
  assert.deepEqual(c.calls, ['init', 'log 1 {"train/loss":1}', 'log 2 {"train/loss":2}', 'kill']);
  assert.equal(lines.length, 2);
  assert.match(lines[1], /^wandb: warning: could not log step 2 \(log exploded\); wandb is off for the rest of this run/);
  w.log({ 'train/loss': 9 }, 9); // after close: ignored, no throw
});

test('a hanging log or finish costs one timeout, not the run', async () => {
  for (const how of ['log', 'finish'] as const) {
    const c = fake({ [how]: 'hang' });
    const { w, lines } = await open(c, {}, KEY, 100);
    assert.ok(w);
    const t0 = Date.now();
    w.log({ 'train/loss': 1 }, 1);
    w.log({ 'train/loss': 0.5 }, 2);
    await w.close();
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(lines.length, 2);
    assert.match(lines[1], how === 'log' ? /could not log step 1 \(no answer within 0\.1 s\)/ : /could not finish the run \(no answer within 0\.1 s\)/);
    assert.equal(c.calls.filter((x) => x.startsWith('log')).length, how === 'log' ? 1 : 2);
  }
});

// ---- the real SDK against a fake server ------------------------------------------------------------

type Mode = 'ok' | 'hang' | 'forbidden';

/** Answers the SDK's two GraphQL calls and its file_stream posts; keeps the streamed history. */
async function fakeServer(mode: Mode): Promise<{ url: string; history: Record<string, unknown>[]; finished: boolean[]; server: Server }> {
  const history: Record<string, unknown>[] = [];
  const finished: boolean[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      if (mode === 'hang') return; // never answers
      res.setHeader('content-type', 'application/json');
      if (body.includes('query Viewer')) return res.end(JSON.stringify({ data: { viewer: { id: '1', entity: 'me', flags: '', teams: { edges: [] } } } }));
      if (body.includes('mutation UpsertBucket')) {
        if (mode === 'forbidden') return (res.statusCode = 403), res.end('{"errors":[{"message":"permission denied"}]}');
        return res.end(JSON.stringify({ data: { upsertBucket: { bucket: { id: 'b', name: 'r', displayName: 'my-run', project: { id: 'p', name: 'sft', entity: { id: 'e', name: 'me' } } }, inserted: true } } }));
      }
      if (req.url?.endsWith('/file_stream')) {
        const msg = JSON.parse(body) as { complete?: boolean; files?: Record<string, { content: string[] }> };
        if (msg.complete) finished.push(true);
        for (const line of msg.files?.['wandb-history.jsonl']?.content ?? []) history.push(JSON.parse(line) as Record<string, unknown>);
      }
      res.end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, history, finished, server };
}

async function openReal(baseUrl: string, timeoutMs: number) {
  const lines: string[] = [];
  const w = await WandbLogger.open(settings, { learning_rate: 1e-4 }, { print: (l) => lines.push(l), env: { ...process.env, ...KEY, WANDB_BASE_URL: baseUrl }, timeoutMs });
  return { w, lines };
}

test('@wandb/sdk: a server that cannot be reached, hangs or refuses the run is a warning, not a crash', async () => {
  const closed = await fakeServer('ok');
  const deadUrl = closed.url;
  await new Promise((r) => closed.server.close(r));
  const refused = await openReal(deadUrl, 5000);
  assert.equal(refused.w, undefined);
  assert.equal(refused.lines.length, 1);
  assert.match(refused.lines[0], /^wandb: warning: could not start the run \(.*ECONNREFUSED.*\); wandb is off/);

  const hang = await fakeServer('hang');
  const hung = await openReal(hang.url, 300);
  assert.equal(hung.w, undefined);
  assert.match(hung.lines[0], /could not start the run \(no answer within 0\.3 s\)/);
  hang.server.closeAllConnections();
  hang.server.close();

  // Run in sft's own thread, this failure is thrown from the SDK's event listener and kills the process.
  const forbid = await fakeServer('forbidden');
  const refusedRun = await openReal(forbid.url, 5000);
  assert.equal(refusedRun.w, undefined);
  assert.match(refusedRun.lines[0], /could not start the run \(.*upsert run.*\)/);
  forbid.server.close();
});

test('@wandb/sdk: with a working server every logged step arrives, then the run is finished', async () => {
  const srv = await fakeServer('ok');
  const { w, lines } = await openReal(srv.url, 5000);
  assert.ok(w, lines.join('\n'));
  assert.match(lines[0], /^wandb: run "my-run" in project "sft" at http:\/\/127\.0\.0\.1:\d+\/me\/sft\/runs\/\w+$/);
  w.log({ 'train/loss': 2.5, 'train/learning_rate': 1e-4 }, 1);
  w.log({ 'train/loss': 1.5, 'train/learning_rate': 5e-5 }, 2);
  await w.close();
  assert.deepEqual(srv.history.map((h) => [h._step, h['train/loss'], h['train/learning_rate']]), [[1, 2.5, 1e-4], [2, 1.5, 5e-5]]);
  assert.deepEqual(srv.finished, [true]);
  srv.server.close();
});
