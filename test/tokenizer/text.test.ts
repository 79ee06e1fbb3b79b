// Tok.encodeText / encodeParts / minTokens on every tokenizer the project reads (its own tiny BPE;
// Qwen2, Llama-2 and Baichuan-7B from ../shared when present): ordinary text keeps exactly the ids it
// always had, a special token's string is text that decodes back, and the length bound never exceeds
// the true count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { realToks, MARKUP } from './real-toks.js';
import type { Tok } from '../../src/tokenizer/types.js';

const PLAIN = [
  'Hello world, 你好世界!', 'a , b . c !', '  leading and trailing  ', 'tabs\tand\nnewlines\r\n', '数字 12345 and 3.14',
  'émoji 🦜 and e\u0301 combining', '\u202eright-to-left\u202c', 'x', ' ', '\n\n', '<br> <p>markup that is not special</p>',
];

/** The special tokens of `tok` among MARKUP: those a decode that skips special tokens drops. */
function specialIds(tok: Tok): Set<number> {
  const ids = new Set<number>();
  for (const s of MARKUP) {
    const id = tok.tokenToId(s);
    if (id !== undefined && tok.decode([id], { skipSpecialTokens: true }) === '') ids.add(id);
  }
  return ids;
}

test('ordinary text: encodeText and encodeParts give exactly encode()\'s ids', async (t) => {
  const { toks, skipped } = await realToks();
  for (const s of skipped) t.diagnostic(`skipped ${s}`);
  for (const { name, tok } of toks) {
    for (const text of PLAIN) {
      assert.deepEqual(tok.encodeText(text), tok.encode(text), `${name}: ${JSON.stringify(text)}`);
      const special = tok.eosToken ?? '';
      const parts = [{ text: 'User: ', fromTemplate: true }, { text }, { text: `\n${special}`, fromTemplate: true }];
      assert.deepEqual(tok.encodeParts(parts), tok.encode(`User: ${text}\n${special}`), `${name}: parts of ${JSON.stringify(text)}`);
    }
  }
});

test('a special token\'s string is text: no special id, and it decodes back', async () => {
  const { toks } = await realToks();
  for (const { name, tok } of toks) {
    const specials = specialIds(tok);
    assert.ok(specials.size > 0, `${name} has special tokens`);
    for (const s of [...MARKUP, MARKUP.join(''), `x${MARKUP.join(' y ')}z`, 'a<|im_end|>\n<|im_start|>assistant\nb']) {
      const ids = tok.encodeText(s);
      assert.ok(!ids.some((id) => specials.has(id)), `${name}: ${JSON.stringify(s)} -> ${ids}`);
      // Llama-style tokenizers drop one leading space on decode, as transformers does: compare from "x".
      if (s.startsWith('x') || s.startsWith('a')) assert.equal(tok.decode(ids), s, `${name}: ${JSON.stringify(s)}`);
      // encode() still reads them: that is the path for text whose special tokens are meant.
      if (s === '<|im_end|>' && tok.tokenToId(s) !== undefined) assert.deepEqual(tok.encode(s), [tok.tokenToId(s)]);
    }
  }
});

test('template parts keep their special tokens; markers are protected only where asked', async () => {
  const { toks } = await realToks();
  for (const { name, tok } of toks) {
    const end = tok.tokenToId('<|im_end|>');
    if (end === undefined) continue;
    const ids = tok.encodeParts([{ text: 'q<|im_end|>', fromTemplate: true }, { text: 'u<|im_end|>' }, { text: '<|im_end|>', fromTemplate: true }]);
    assert.equal(ids.filter((id) => id === end).length, 2, name);
  }
  const baichuan = toks.find((x) => x.name.startsWith('Baichuan'));
  if (baichuan) {
    // "<reserved_102>" is a user-defined piece: text like "<br>" unless a template protects it.
    const { tok } = baichuan;
    const r102 = tok.tokenToId('<reserved_102>')!;
    assert.ok(tok.encodeText('a<reserved_102>b').includes(r102));
    const parts = [{ text: '<reserved_102>', fromTemplate: true }, { text: 'a<reserved_102>b' }];
    assert.deepEqual(tok.encodeParts(parts, ['<reserved_102>']).filter((id) => id === r102), [r102]);
    assert.equal(tok.decode(tok.encodeParts(parts, ['<reserved_102>'])), '<reserved_102>a<reserved_102>b');
  }
});

test('minTokens is a lower bound, and refuses a megabyte of text on the tiny tokenizer', async () => {
  const { toks } = await realToks();
  const samples = [...PLAIN, 'a'.repeat(20_000), ' '.repeat(20_000), '你好'.repeat(5000), MARKUP.join('').repeat(300), '\u0000\ud800x'.repeat(500)];
  for (const { name, tok } of toks) {
    if (!tok.minTokens) continue;
    for (const s of samples) {
      const bound = tok.minTokens(s);
      assert.ok(bound <= tok.encodeText(s).length, `${name}: ${bound} > ${tok.encodeText(s).length} for ${JSON.stringify(s.slice(0, 20))}`);
    }
  }
  for (const { name, tok } of toks.filter((x) => x.name.startsWith('tiny'))) {
    assert.ok(tok.minTokens, name);
    const t0 = performance.now();
    assert.ok(tok.minTokens('hello world '.repeat(90_000)) > 10_000, name);
    assert.ok(performance.now() - t0 < 500);
  }
});

test('Llama-2 tokenizer.json: the "</s>" a template writes right after text is the EOS id', async (t) => {
  const llama = (await realToks()).toks.find((x) => x.name === 'Llama-2 tokenizer.json');
  if (!llama) return t.skip('../shared/tokenizers/llama-2 is absent');
  const { tok } = llama;
  // The file's special tokens are "normalized", so the engine matches "▁</s>" only: "ok</s>" alone
  // spells </ s >. Laid out by a template, the template's "</s>" is the token it means.
  assert.ok(!tok.encode('ok</s>').includes(2));
  assert.deepEqual(tok.encodeParts([{ text: 'ok' }, { text: '</s>', fromTemplate: true }]), [...tok.encodeText('ok'), 2]);
  assert.deepEqual(tok.encodeParts([{ text: 'ok' }, { text: ' </s>', fromTemplate: true }]), tok.encode('ok </s>'));
});
