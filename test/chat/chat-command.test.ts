import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough, Readable } from 'node:stream';
import { runChat } from '../../src/cli/commands/chat.js';
import type { ChatSession } from '../../src/chat/session.js';
import type { GenerateChunk, GenerateResult } from '../../src/chat/generate.js';
import { SftError } from '../../src/errors.js';

/** Replies "<n>:<text>" in two chunks; records what it was asked. */
class FakeSession implements Pick<ChatSession, 'send' | 'reset'> {
  sent: string[] = [];
  resets = 0;
  async *send(text: string): AsyncGenerator<GenerateChunk, GenerateResult> {
    this.sent.push(text);
    if (text === 'boom') throw new SftError('too long');
    const reply = `${this.sent.length}:${text}`;
    yield { text: reply.slice(0, 2), id: 1 };
    yield { text: reply.slice(2), id: 2 };
    return { finishReason: 'stop', stoppedBy: 'id', ids: [1, 2], unfedIds: [], text: reply };
  }
  reset(): void {
    this.resets++;
  }
}

async function pipe(input: string, session = new FakeSession()): Promise<{ out: string; session: FakeSession }> {
  const output = new PassThrough();
  let out = '';
  output.on('data', (d) => (out += d));
  await runChat(session, { input: Readable.from([input]), output, errors: new PassThrough(), interactive: false });
  return { out, session };
}

test('piped input: each non-empty line is the next user turn, each reply printed on its own line', async () => {
  const { out, session } = await pipe('hello\n\n  there  \n/reset\nbye');
  assert.deepEqual(session.sent, ['hello', 'there', 'bye']);
  assert.equal(session.resets, 1);
  assert.equal(out, '1:hello\n2:there\n3:bye\n');
});

test('/exit stops reading', async () => {
  const { out, session } = await pipe('a\n/exit\nb\n');
  assert.deepEqual(session.sent, ['a']);
  assert.equal(out, '1:a\n');
});

test('piped input: an error ends the run', async () => {
  await assert.rejects(pipe('a\nboom\nc\n'), SftError);
});

test('terminal: prompts, labels replies, reports an SftError and goes on', async () => {
  const session = new FakeSession();
  const output = new PassThrough();
  const errors = new PassThrough();
  let out = '';
  let err = '';
  output.on('data', (d) => (out += d));
  errors.on('data', (d) => (err += d));
  await runChat(session, { input: Readable.from(['hi\r', 'boom\r', 'ok\r']), output, errors, interactive: true });
  assert.deepEqual(session.sent, ['hi', 'boom', 'ok']);
  assert.ok(out.includes('User: '), out);
  assert.ok(out.includes('Assistant: 1:hi\n'), out);
  assert.ok(out.includes('Assistant: 3:ok\n'), out);
  assert.match(err, /sft: too long/);
});
