// The qwen template with the real Qwen2 tokenizer: "<|im_end|>" must be one id (151645) and trained.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Tok } from '../../src/tokenizer/types.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { toConversation } from '../../src/data/formats.js';
import { getTemplate } from '../../src/data/templates.js';
import { encodeConversation, encodePrompt, renderMarkedSample, type EncodedSample } from '../../src/data/encode.js';

const dir = fileURLToPath(new URL('../../../shared/tokenizers/qwen2-reconstructed/', import.meta.url));
const present = existsSync(`${dir}tokenizer.json`);

// Ids from Qwen2's tokenizer_config.json added_tokens_decoder and vocab ("Ċ" = "\n").
const IM_START = 151644;
const IM_END = 151645;
const NEWLINE = 198;

/** The real loader over the folder: tokenizer.json + tokenizer_config.json. */
const qwenTok = (): Promise<Tok> => loadTokenizer(dir);

test('qwen template: <|im_end|> is one id and the answer span ends with it and "\\n"', { skip: present ? false : '../shared/tokenizers/qwen2-reconstructed is absent' }, async () => {
  const tok = await qwenTok();
  assert.equal(tok.tokenToId('<|im_end|>'), IM_END);
  assert.deepEqual(tok.encode('<|im_end|>\n'), [IM_END, NEWLINE]);

  const conv = toConversation({ conversation: [{ human: '你好', assistant: '你好！有什么可以帮你的吗？' }] }, 'f:1');
  const enc = encodeConversation(conv, getTemplate('qwen'), tok, 512) as EncodedSample;
  assert.ok(!enc.noTarget);
  const ids = enc.inputIds;
  assert.equal(ids[0], IM_START);
  assert.equal(ids.filter((id) => id === IM_END).length, 3, 'system, user and assistant each end with one <|im_end|> id');
  assert.deepEqual(ids.slice(-2), [IM_END, NEWLINE]);

  // Target = exactly the answer part; everything before it is -100.
  const answer = tok.encode('你好！有什么可以帮你的吗？<|im_end|>\n');
  const k = ids.length - answer.length;
  assert.deepEqual(ids.slice(k), answer);
  assert.deepEqual(enc.labels.slice(k), answer);
  assert.ok(enc.labels.slice(0, k).every((l) => l === -100));
  assert.deepEqual(ids.slice(0, k), encodePrompt({ turns: conv.turns.slice(0, 1) }, getTemplate('qwen'), tok));
  assert.ok(renderMarkedSample(ids, enc.labels, tok).endsWith('<|im_start|>assistant\n⟦你好！有什么可以帮你的吗？<|im_end|>\n⟧'));
});
