import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
import { StreamDecoder } from '../../src/chat/detokenize.js';
import type { Tok } from '../../src/tokenizer/types.js';

// A sentencepiece-style decoder: "▁" is a space and the first piece of a decode loses its leading space.
const PIECES = ['▁Hello', '▁world', '!', '▁', 'x'];
const spTok: Tok = {
  vocabSize: PIECES.length,
  encode: () => [],
  encodeText: () => [],
  encodeParts: () => [],
  tokenToId: () => undefined,
  decode: (ids) => ids.map((i) => PIECES[i]).join('').replaceAll('▁', ' ').replace(/^ /, ''),
};

test('context-dependent decoding: only the first piece of the reply loses its leading space', () => {
  const d = new StreamDecoder(spTok);
  assert.deepEqual([0, 1, 2, 3, 4].map((id) => d.push(id)), ['Hello', ' world', '!', ' ', 'x']);
  assert.equal(d.flush(), '');
});

test('a lone space piece at the start is dropped as a whole decode would drop it', () => {
  const d = new StreamDecoder(spTok);
  const out = [3, 4, 1].map((id) => d.push(id)).join('') + d.flush();
  assert.equal(out, spTok.decode([3, 4, 1]));
});

// Real tokenizers from ../shared: byte-level BPE (Qwen2) and sentencepiece byte fallback (Llama-2) both split
// rare characters over several tokens.
const SHARED = new URL('../../../shared/tokenizers/', import.meta.url);
const REAL = [
  ['qwen2-reconstructed/tokenizer.json', 'qwen2.5/tokenizer_config.json'],
  ['llama-2/tokenizer.json', 'llama-2/tokenizer_config.json'],
];
for (const [json, config] of REAL) {
  const file = new URL(json, SHARED);
  test(`streamed text equals the whole decode, no replacement chars (${json})`, { skip: !existsSync(file) && 'no ../shared/tokenizers' }, () => {
    const hf = new Tokenizer(JSON.parse(readFileSync(file, 'utf8')), JSON.parse(readFileSync(new URL(config, SHARED), 'utf8')));
    const tok: Tok = { ...spTok, decode: (ids) => hf.decode(ids, { skip_special_tokens: false }) };
    const ids = hf.encode(' 龘𠀋🦜 héllo 你好 world', { add_special_tokens: false }).ids;
    const d = new StreamDecoder(tok);
    const chunks = ids.map((id) => d.push(id));
    chunks.push(d.flush());
    assert.ok(!chunks.some((c) => c.includes('\uFFFD')), JSON.stringify(chunks));
    assert.equal(chunks.join(''), hf.decode(ids, { skip_special_tokens: false }));
    assert.ok(chunks.includes('龘') || chunks.includes(' 龘'), JSON.stringify(chunks));
  });
}
