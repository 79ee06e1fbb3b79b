// The `sft serve` command as a user runs it: a child process on loopback that answers the openai client,
// says where it listens, and shuts down cleanly on SIGTERM; where the API key comes from (a file, the
// environment, a flag that ps shows) and the errors for flags it cannot use.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { initModel } from '../../src/model/init.js';
import { packageRoot } from '../../src/native/binding.js';
import { runCli } from '../helpers/cli.js';

const dir = join(mkdtempSync(join(tmpdir(), 'sft-serve-cli-')), 'tiny-llama');
initModel({ arch: 'llama', outDir: dir, hidden: 32, layers: 1, heads: 2, intermediate: 64, vocab: 300, seed: 1, maxPosition: 1024, force: true });

/** `sft serve ARGS` in a child process, once it says where it listens. */
async function serveCli(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', join(packageRoot, 'test', 'helpers', 'sft-entry.ts'), 'serve', '--model', dir, '--port', '0', ...args], {
    cwd: packageRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SFT_API_KEY: undefined, ...env },
  });
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (d) => {
      stderr += d;
      const m = /at (http:\/\/\S+)\/v1/.exec(stderr);
      if (m) resolve(m[1]);
    });
    child.on('exit', () => reject(new Error(`sft serve exited: ${stderr}`)));
  });
  return {
    url,
    stderr: () => stderr,
    /** SIGTERM, then the exit code. */
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

test('sft serve listens on loopback, serves the openai client under the folder name, stops on SIGTERM', async () => {
  // The key is the file's first line, trimmed; the rest of the file is not part of it.
  const keyFile = join(dirname(dir), 'key.txt');
  writeFileSync(keyFile, '  s3cret-key \nsecond line\n');
  const served = await serveCli(['--template', 'default', '--api-key-file', keyFile]);
  try {
    assert.match(served.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.match(served.stderr(), /template default/);
    assert.doesNotMatch(served.stderr(), /ps/);
    const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 's3cret-key', maxRetries: 0 });
    assert.deepEqual((await client.models.list()).data.map((m) => m.id), ['tiny-llama']);
    const r = await client.chat.completions.create({ model: 'tiny-llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5, temperature: 0 });
    assert.equal(r.usage?.completion_tokens, 5);
    const wrong = await new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'second line', maxRetries: 0 }).models.list().catch((e: unknown) => e);
    assert.ok(wrong instanceof OpenAI.AuthenticationError);
    // The request's log line follows its response through the pipe.
    const logged = /POST \/v1\/chat\/completions 200 \d+\+5 tokens length/;
    for (let i = 0; i < 100 && !logged.test(served.stderr()); i++) await sleep(20);
    assert.match(served.stderr(), logged);
  } finally {
    assert.equal(await served.stop(), 0, served.stderr());
  }
  assert.match(served.stderr(), /shutting down/);
});

test('SFT_API_KEY sets the key without a flag that ps would show', async () => {
  const served = await serveCli(['--template', 'default'], { SFT_API_KEY: 'from-env' });
  try {
    const none = await fetch(`${served.url}/v1/models`);
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as { error: { code: string } }).error.code, 'invalid_api_key');
    assert.equal((await fetch(`${served.url}/v1/models`, { headers: { authorization: 'Bearer from-env' } })).status, 200);
    assert.doesNotMatch(served.stderr(), /ps\)/);
  } finally {
    await served.stop();
  }
});

test('sft serve refuses a bad port and an unknown template before loading anything heavy', () => {
  const port = runCli(['serve', '--model', dir, '--port', '70000']);
  assert.equal(port.status, 1);
  assert.match(port.stderr, /--port must be an integer 0\.\.65535/);
  const tpl = runCli(['serve', '--model', dir, '--template', 'nope']);
  assert.equal(tpl.status, 1);
  assert.match(tpl.stderr, /unknown chat template "nope"/);
});

test('sft serve names an API key file it cannot use, and warns that --api-key shows in ps', () => {
  const base = dirname(dir);
  const missing = join(base, 'no-such-key');
  // --port 70000 is refused after the key is read: reaching that error shows the key was accepted.
  const gone = runCli(['serve', '--model', dir, '--api-key-file', missing, '--port', '70000']);
  assert.equal(gone.status, 1);
  assert.match(gone.stderr, new RegExp(`--api-key-file ${missing}: cannot read it \\(no such file\\)`));
  const empty = join(base, 'empty-key');
  writeFileSync(empty, '   \nkey on the second line\n');
  const blank = runCli(['serve', '--model', dir, '--api-key-file', empty, '--port', '70000']);
  assert.equal(blank.status, 1);
  assert.match(blank.stderr, /--api-key-file .*empty-key: its first line is empty/);
  const folder = join(base, 'key-folder');
  mkdirSync(folder, { recursive: true });
  assert.match(runCli(['serve', '--model', dir, '--api-key-file', folder, '--port', '70000']).stderr, /key-folder: cannot read it \(it is a folder\)/);
  const both = runCli(['serve', '--model', dir, '--api-key-file', empty, '--api-key', 'x', '--port', '70000']);
  assert.match(both.stderr, /--api-key-file PATH or --api-key KEY, not both/);

  const flag = runCli(['serve', '--model', dir, '--api-key', 'visible', '--port', '70000']);
  assert.equal(flag.status, 1);
  assert.match(flag.stderr, /--api-key is visible to other users of this machine \(ps\); prefer --api-key-file PATH or SFT_API_KEY/);
  assert.match(flag.stderr, /--port must be an integer/);
});

test('sft serve refuses --allowed-hosts and --allowed-origins values it cannot match', () => {
  const host = runCli(['serve', '--model', dir, '--allowed-hosts', 'mybox.lan,evil/x', '--port', '70000']);
  assert.equal(host.status, 1);
  assert.match(host.stderr, /--allowed-hosts "evil\/x" is not a host name/);
  const origin = runCli(['serve', '--model', dir, '--allowed-origins', 'localhost:3000', '--port', '70000']);
  assert.equal(origin.status, 1);
  assert.match(origin.stderr, /--allowed-origins "localhost:3000" is not an origin: give scheme:\/\/host\[:port\]/);
  const fine = runCli(['serve', '--model', dir, '--allowed-hosts', 'mybox.lan', '.example.org', '--allowed-origins', 'http://localhost:3000', '--port', '70000']);
  assert.match(fine.stderr, /--port must be an integer/);
});
