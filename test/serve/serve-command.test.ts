// The `sft serve` command as a user runs it: a child process on loopback that answers the openai client,
// says where it listens, and shuts down cleanly on SIGTERM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { initModel } from '../../src/model/init.js';
import { packageRoot } from '../../src/native/binding.js';
import { runCli } from '../helpers/cli.js';

const dir = join(mkdtempSync(join(tmpdir(), 'sft-serve-cli-')), 'tiny-llama');
initModel({ arch: 'llama', outDir: dir, hidden: 32, layers: 1, heads: 2, intermediate: 64, vocab: 300, seed: 1, maxPosition: 1024, force: true });

test('sft serve listens on loopback, serves the openai client under the folder name, stops on SIGTERM', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', join(packageRoot, 'test', 'helpers', 'sft-entry.ts'), 'serve', '--model', dir, '--port', '0', '--template', 'default'], {
    cwd: packageRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (d) => {
        stderr += d;
        const m = /at (http:\/\/\S+)\/v1/.exec(stderr);
        if (m) resolve(m[1]);
      });
      child.on('exit', () => reject(new Error(`sft serve exited: ${stderr}`)));
    });
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.match(stderr, /template default/);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
    assert.deepEqual((await client.models.list()).data.map((m) => m.id), ['tiny-llama']);
    const r = await client.chat.completions.create({ model: 'tiny-llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5, temperature: 0 });
    assert.equal(r.usage?.completion_tokens, 5);
    // The request's log line follows its response through the pipe.
    const logged = /POST \/v1\/chat\/completions 200 \d+\+5 tokens length/;
    for (let i = 0; i < 100 && !logged.test(stderr); i++) await sleep(20);
    assert.match(stderr, logged);
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, stderr);
  assert.match(stderr, /shutting down/);
});

test('sft serve refuses a bad port and an unknown template before loading anything heavy', () => {
  const port = runCli(['serve', '--model', dir, '--port', '70000']);
  assert.equal(port.status, 1);
  assert.match(port.stderr, /--port must be an integer 0\.\.65535/);
  const tpl = runCli(['serve', '--model', dir, '--template', 'nope']);
  assert.equal(tpl.status, 1);
  assert.match(tpl.stderr, /unknown chat template "nope"/);
});
