// encodeParts (src/tokenizer/parts.ts) on a scripted engine, so that every rule is visible: the fast
// path, the cut at protected tokens, lstrip/rstrip, the edges each stretch is told about, markers, and
// the error when an engine turns text into a protected token anyway.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeParts, splitOn, protectedSet, type PartsEngine, type RunContext } from '../../src/tokenizer/parts.js';
import { SftError } from '../../src/errors.js';

// Ids: one per character (code point + 1000), added tokens below 100.
const ADDED = { '<s>': 1, '</s>': 2, '<|a|>': 3, '<|a|>b': 4, '<m>': 5, '<ws>': 6 };
const SPECIAL = new Set(['<s>', '</s>', '<|a|>', '<|a|>b', '<ws>']);

function engine(opts: { forge?: boolean } = {}) {
  const runs: { text: string; at: RunContext }[] = [];
  const chars = (s: string) => [...s].map((c) => c.codePointAt(0)! + 1000);
  const e: PartsEngine = {
    addedTokens: new Map(Object.entries(ADDED).map(([c, id]) => [c, { id, special: SPECIAL.has(c), lstrip: c === '<ws>', rstrip: c === '<ws>' }])),
    encodeSpecial: (text) => splitOn(protectedSet(e, Object.keys(ADDED)).trie, text).flatMap((p) => (typeof p === 'string' ? chars(p) : [ADDED[p.token as keyof typeof ADDED]])),
    encodeRun: (text, at) => {
      runs.push({ text, at });
      return opts.forge && text.includes('!') ? [1] : chars(text);
    },
  };
  return { e, runs };
}
const c = (s: string) => [...s].map((ch) => ch.codePointAt(0)! + 1000);

test('fast path: text without special strings is the engine\'s own encode, no stretch encoded', () => {
  const { e, runs } = engine();
  assert.deepEqual(encodeParts(e, [{ text: '<s>x', fromTemplate: true }, { text: 'hi' }, { text: '</s>', fromTemplate: true }]), [1, ...c('xhi'), 2]);
  assert.deepEqual(runs, []);
  assert.deepEqual(encodeParts(e, []), []);
  assert.deepEqual(encodeParts(e, [{ text: '' }]), []);
});

test('a forged special token in text: cut at the template\'s tokens only, each stretch told its neighbours', () => {
  const { e, runs } = engine();
  const ids = encodeParts(e, [{ text: '<s>x', fromTemplate: true }, { text: 'h</s>i' }, { text: '</s>', fromTemplate: true }]);
  assert.deepEqual(ids, [1, ...c('xh</s>i'), 2]);
  assert.deepEqual(runs, [
    { text: '', at: { before: undefined, after: 1 } },
    { text: 'xh</s>i', at: { before: 1, after: 2 } },
    { text: '', at: { before: 2, after: undefined } },
  ]);
});

test('leftmost-longest matching in template text, as the engine splits', () => {
  const { e } = engine();
  assert.deepEqual(encodeParts(e, [{ text: '<|a|>b<|a|>', fromTemplate: true }, { text: '<s>' }]), [4, 3, ...c('<s>')]);
});

test('markers: a non-special added token is text only when the template names it', () => {
  const { e } = engine();
  const parts = [{ text: '<m>', fromTemplate: true }, { text: 'a<m>' }];
  assert.deepEqual(encodeParts(e, parts), [5, ...c('a'), 5]);
  assert.deepEqual(encodeParts(e, parts, ['<m>']), [5, ...c('a<m>')]);
});

test('lstrip/rstrip tokens trim the stretches beside them, text included', () => {
  const { e } = engine();
  assert.deepEqual(encodeParts(e, [{ text: 'a </s> ' }, { text: ' <ws> ', fromTemplate: true }, { text: ' b' }]), [...c('a </s>'), 6, ...c('b')]);
});

test('an engine that still yields a protected id from text is an SftError naming the token', () => {
  const { e } = engine({ forge: true });
  assert.throws(() => encodeParts(e, [{ text: '<s>', fromTemplate: true }, { text: '!</s>' }]), (err: unknown) => err instanceof SftError && /"<s>"/.test(err.message));
});
