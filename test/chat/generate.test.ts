import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generate } from '../../src/chat/generate.js';
import type { GenerateChunk, GenerateOptions, GenerateResult } from '../../src/chat/generate.js';
import { ByteTok, ScriptedModel, asNative, bytes } from './fakes.js';

const EOS = 258;
const GREEDY: GenerateOptions = {
  maxNewTokens: 50,
  temperature: 0,
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
  stopIds: [EOS],
  stopStrings: [],
  seed: 1,
};

async function run(
  script: (number | Float32Array)[],
  opts: Partial<GenerateOptions> = {},
  tok = new ByteTok(),
): Promise<{ chunks: GenerateChunk[]; result: GenerateResult; model: ScriptedModel }> {
  const model = new ScriptedModel(tok.vocabSize, script);
  const gen = generate(asNative(model), tok, [1, 2, 3], { ...GREEDY, ...opts });
  const chunks: GenerateChunk[] = [];
  for (;;) {
    const r = await gen.next();
    if (r.done) return { chunks, result: r.value, model };
    chunks.push(r.value);
  }
}

test('feeds the prompt once, then each token alone, and stops at a stop id', async () => {
  const { chunks, result, model } = await run([...bytes('Hi'), EOS, 65]);
  assert.deepEqual(model.feeds, [[1, 2, 3], [72], [105]]);
  assert.deepEqual(chunks.map((c) => c.text), ['H', 'i', '']);
  assert.deepEqual(chunks.map((c) => c.id), [72, 105, EOS]);
  assert.deepEqual(result, { finishReason: 'stop', stoppedBy: 'id', ids: [72, 105], unfedIds: [], text: 'Hi' });
});

test('maxNewTokens ends the reply without feeding the last token', async () => {
  const { result, model } = await run(bytes('abcdef'), { maxNewTokens: 3 });
  assert.deepEqual(model.feeds, [[1, 2, 3], [97], [98]]);
  assert.deepEqual(result, { finishReason: 'length', ids: [97, 98, 99], unfedIds: [99], text: 'abc' });
});

test('a stop string split over tokens is held back and never printed', async () => {
  const { chunks, result } = await run([...bytes('x###y'), EOS], { stopStrings: ['###'] });
  assert.deepEqual(chunks.map((c) => c.text), ['x', '', '', '']);
  assert.equal(result.text, 'x');
  assert.equal(result.finishReason, 'stop');
  assert.equal(result.stoppedBy, 'string');
  assert.deepEqual(result.unfedIds, [35]); // the "#" that completed the stop string
});

test('held-back text that does not become a stop string is released', async () => {
  const { chunks, result } = await run([...bytes('x##z#'), EOS], { stopStrings: ['###'] });
  assert.deepEqual(chunks.map((c) => c.text), ['x', '', '', '##z', '', '#']);
  assert.equal(result.text, 'x##z#');
  assert.equal(result.stoppedBy, 'id');
});

test('a stop string inside a multi-character token cuts that token', async () => {
  const tok = new ByteTok({ 300: bytes('ab#'), 301: bytes('##cd') });
  const { chunks, result } = await run([300, 301, 65, EOS], { stopStrings: ['###'] }, tok);
  assert.deepEqual(chunks.map((c) => c.text), ['ab', '']);
  assert.equal(result.text, 'ab');
  assert.deepEqual(result.ids, [300, 301]);
});

test('held stop-string prefix is flushed at maxNewTokens', async () => {
  const { chunks, result } = await run(bytes('a#b'), { stopStrings: ['#!'], maxNewTokens: 2 });
  assert.deepEqual(chunks.map((c) => c.text), ['a', '#']);
  assert.equal(result.finishReason, 'length');
});

test('UTF-8 characters split over byte tokens come out whole', async () => {
  // 你 = E4 BD A0, 好 = E5 A5 BD
  const { chunks, result } = await run([...bytes('你好'), EOS]);
  assert.deepEqual(chunks.map((c) => c.text), ['', '', '你', '', '', '好', '']);
  assert.equal(result.text, '你好');
});

test('pieces that straddle character boundaries print each character once it is complete', async () => {
  const tok = new ByteTok({ 300: [0xbd, 0xa0, 0xe5], 301: [0xa5, 0xbd, 0x21] });
  const { chunks } = await run([0xe4, 300, 301, EOS], {}, tok);
  assert.deepEqual(chunks.map((c) => c.text), ['', '你', '好!', '']);
  assert.ok(!chunks.some((c) => c.text.includes('\uFFFD')));
});

test('an unfinished character at the length limit is flushed as a replacement char', async () => {
  const { result } = await run([0x41, 0xe4, 0xbd], { maxNewTokens: 3 });
  assert.equal(result.text, 'A\uFFFD');
});

test('the repetition penalty sees earlier context ids and the reply so far', async () => {
  // Each step: "a" (97) has logit 5, "b" (98) 1. Penalty 10 turns a seen 5 into 0.5 and a seen 1 into 0.1.
  const row = (): Float32Array => {
    const r = new Float32Array(new ByteTok().vocabSize);
    r[97] = 5;
    r[98] = 1;
    return r;
  };
  const fromContext = await run([row()], { repetitionPenalty: 10, contextIds: [97], maxNewTokens: 1 });
  assert.deepEqual(fromContext.result.ids, [98]);
  const fromPrompt = await run([row(), row()], { repetitionPenalty: 10, maxNewTokens: 2 });
  // step 1: "a" unseen -> a; step 2: "a" seen (0.5) < "b" (1) -> b
  assert.deepEqual(fromPrompt.result.ids, [97, 98]);
});
