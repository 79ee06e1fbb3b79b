// loadTokenizer on the real Qwen2 and Llama-2 tokenizers in ../shared (skipped when absent), with
// ids checked by hand against their vocab files, and the errors for unusable folders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';

const shared = fileURLToPath(new URL('../../../shared/tokenizers/', import.meta.url));
const qwenDir = path.join(shared, 'qwen2-reconstructed');
const llamaDir = path.join(shared, 'llama-2');
const skipQwen = fs.existsSync(path.join(qwenDir, 'tokenizer.json')) ? false : `no ${qwenDir}/tokenizer.json (../shared absent)`;
const skipLlama = fs.existsSync(path.join(llamaDir, 'tokenizer.json')) ? false : `no ${llamaDir}/tokenizer.json (../shared absent)`;

test('Qwen2: special tokens are single ids, known ids for a mixed string', { skip: skipQwen }, async () => {
  const tok = await loadTokenizer(qwenDir);
  // From tokenizer_config.json added_tokens_decoder: <|endoftext|> 151643 ... 22 added tokens up to 151664.
  assert.deepEqual(tok.encode('<|im_end|>'), [151645]);
  assert.deepEqual(tok.encode('<|im_start|>user\n'), [151644, 872, 198]);
  assert.equal(tok.vocabSize, 151665);
  assert.equal(tok.eosToken, '<|im_end|>');
  assert.equal(tok.eosId, 151645);
  assert.equal(tok.padToken, '<|endoftext|>');
  assert.equal(tok.padId, 151643);
  assert.equal(tok.bosId, undefined);
  assert.match(tok.chatTemplate ?? '', /<\|im_start\|>/);
  // vocab.json: "Hello" 9707, "Ġworld" 1879, "," 11, "Ġ" 220, "你好" 108386, "ä¸ĸçķĮ" (世界) 99489, "!" 0.
  const text = 'Hello world, 你好世界!';
  assert.deepEqual(tok.encode(text), [9707, 1879, 11, 220, 108386, 99489, 0]);
  assert.equal(tok.decode(tok.encode(text)), text);
  assert.equal(tok.decode([9707, 151645], { skipSpecialTokens: true }), 'Hello');
  assert.equal(tok.decode([9707, 151645]), 'Hello<|im_end|>');
  assert.equal(tok.decode([]), '');
  assert.deepEqual(tok.encode(''), []);
  // No clean-up of spaces before punctuation: decode(encode(x)) == x.
  assert.equal(tok.decode(tok.encode('a , b . c !')), 'a , b . c !');
});

test('Llama-2: ids from tokenizer.json vocab, bos/eos, no pad', { skip: skipLlama }, async () => {
  const tok = await loadTokenizer(llamaDir);
  assert.equal(tok.vocabSize, 32000);
  assert.equal(tok.bosId, 1);
  assert.equal(tok.eosId, 2);
  assert.equal(tok.bosToken, '<s>');
  assert.equal(tok.eosToken, '</s>');
  assert.equal(tok.padId, undefined);
  // vocab: "▁Hello" 15043, "▁world" 3186, "▁The" 450, "▁quick" 4996, "▁brown" 17354, "▁fo" 1701, "x" 29916.
  assert.deepEqual(tok.encode('Hello world'), [15043, 3186]);
  assert.deepEqual(tok.encode('The quick brown fox'), [450, 4996, 17354, 1701, 29916]);
  // "▁" 29871, "你" 30919, "好" 31076.
  assert.deepEqual(tok.encode('你好'), [29871, 30919, 31076]);
  assert.equal(tok.decode(tok.encode('Hello world')), 'Hello world');
  assert.deepEqual(tok.encode('</s>'), [2]);
  assert.equal(tok.tokenToId('▁Hello'), 15043);
});

test('folder errors: nothing at all, a corrupt tokenizer.model', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-tok-'));
  try {
    await assert.rejects(loadTokenizer(dir), /tokenizer\.json not found/);
    fs.writeFileSync(path.join(dir, 'tokenizer.model'), 'x');
    await assert.rejects(loadTokenizer(dir), /tokenizer\.model: not a readable sentencepiece model/);
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});
