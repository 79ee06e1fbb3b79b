import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toConversation } from '../../src/data/formats.js';
import { SftError } from '../../src/errors.js';

const W = 'data.jsonl:7';

function fails(record: unknown, pattern: RegExp): void {
  assert.throws(
    () => toConversation(record, W),
    (e: unknown) => e instanceof SftError && e.message.startsWith(`${W}: `) && pattern.test(e.message),
    JSON.stringify(record),
  );
}

test('Firefly/MOSS records, with and without system; contents are trimmed', () => {
  assert.deepEqual(
    toConversation({ conversation_id: 3, category: 'x', conversation: [{ human: ' hi ', assistant: 'yo\n' }, { human: 'q', assistant: 'a' }] }, W),
    { turns: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo' }, { role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }] },
  );
  assert.deepEqual(toConversation({ system: ' S ', conversation: [{ human: 'h', assistant: 'a' }] }, W), {
    system: 'S',
    turns: [{ role: 'user', content: 'h' }, { role: 'assistant', content: 'a' }],
  });
});

test('ChatML messages, and Qwen2.5 {"type":"chatml"}', () => {
  const messages = [
    { role: 'system', content: 'S' },
    { role: 'user', content: 'u' },
    { role: 'assistant', content: 'v' },
  ];
  const want = { system: 'S', turns: [{ role: 'user', content: 'u' }, { role: 'assistant', content: 'v' }] };
  assert.deepEqual(toConversation({ messages }, W), want);
  assert.deepEqual(toConversation({ type: 'chatml', messages, source: 'x' }, W), want);
  assert.deepEqual(toConversation({ messages: messages.slice(1) }, W), { turns: want.turns });
});

test('alpaca: user = instruction + "\\n" + input when input is non-empty (LLaMA-Factory)', () => {
  assert.deepEqual(toConversation({ instruction: 'do', input: 'x', output: 'ok' }, W), {
    turns: [{ role: 'user', content: 'do\nx' }, { role: 'assistant', content: 'ok' }],
  });
  assert.deepEqual(toConversation({ instruction: 'do', input: '', output: 'ok', system: 'S' }, W), {
    system: 'S',
    turns: [{ role: 'user', content: 'do' }, { role: 'assistant', content: 'ok' }],
  });
  assert.deepEqual(toConversation({ instruction: 'do', output: 'ok', history: [['a', 'b']] }, W), {
    turns: [
      { role: 'user', content: 'a' },
      { role: 'assistant', content: 'b' },
      { role: 'user', content: 'do' },
      { role: 'assistant', content: 'ok' },
    ],
  });
});

test('unknown format lists the three recognised shapes', () => {
  for (const rec of [{ text: 'x' }, [1, 2], 'str', null, { conversations: [] }]) {
    fails(rec, /Firefly \{"conversation".*ChatML \{"messages".*alpaca \{"instruction"/);
  }
  fails({ conversations: [{ from: 'user', value: 'x' }] }, /convert it to "messages"/);
});

test('empty conversation', () => {
  fails({ conversation: [] }, /empty conversation/);
  fails({ messages: [] }, /empty conversation/);
  fails({ messages: [{ role: 'system', content: 'S' }] }, /empty conversation/);
});

test('ends on a user turn / no assistant turn', () => {
  fails({ conversation: [{ human: 'h' }] }, /ends on a user turn/);
  fails({ conversation: [{ human: 'h', assistant: 'a' }, { human: 'h2' }] }, /ends on a user turn/);
  fails({ messages: [{ role: 'user', content: 'u' }] }, /ends on a user turn/);
  fails({ messages: [{ role: 'user', content: 'u' }, { role: 'assistant', content: 'a' }, { role: 'user', content: 'u' }] }, /ends on a user turn/);
  fails({ instruction: 'do', input: '' }, /no "output"/);
});

test('non-string content', () => {
  fails({ conversation: [{ human: 1, assistant: 'a' }] }, /conversation\[0\]\.human must be a string, got a number/);
  fails({ conversation: [{ human: 'h', assistant: null }] }, /conversation\[0\]\.assistant must be a string, got null/);
  fails({ messages: [{ role: 'user', content: [{ type: 'text', text: 'u' }] }, { role: 'assistant', content: 'a' }] }, /messages\[0\]\.content must be a string, got an array/);
  fails({ instruction: 'do', output: 42 }, /"output" must be a string/);
  fails({ system: 5, conversation: [{ human: 'h', assistant: 'a' }] }, /"system" must be a string/);
});

test('roles out of order', () => {
  fails({ messages: [{ role: 'assistant', content: 'a' }, { role: 'user', content: 'u' }, { role: 'assistant', content: 'a' }] }, /turn 1 is "assistant" but "user" was expected — roles out of order/);
  fails({ messages: [{ role: 'user', content: 'u' }, { role: 'user', content: 'u' }, { role: 'assistant', content: 'a' }] }, /turn 2 is "user" but "assistant" was expected/);
  fails({ messages: [{ role: 'user', content: 'u' }, { role: 'system', content: 'S' }, { role: 'assistant', content: 'a' }] }, /system.*only come first/);
  fails({ messages: [{ role: 'tool', content: 'u' }] }, /role "tool" is not supported/);
  fails({ conversation: [{ human: 'h' }, { human: 'h', assistant: 'a' }] }, /no "assistant" but more turns follow/);
  fails({ conversation: [{ assistant: 'a' }] }, /no "human"/);
});
