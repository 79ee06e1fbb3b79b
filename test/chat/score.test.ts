import { test } from 'node:test';
import assert from 'node:assert/strict';
import { scoreIds } from '../../src/chat/score.js';
import { parseIds } from '../../src/cli/commands/score.js';
import { SftError } from '../../src/errors.js';
import { ScriptedModel, asNative } from './fakes.js';

// Vocabulary of 3, ids [0, 2, 1]. Row 0 predicts ids[1] = 2, row 1 predicts ids[2] = 1, row 2 is unused.
//   log p(2 | 0)    = 3 - ln(e + e^2 + e^3) = -0.40760596444438013
//   log p(1 | 0, 2) = -ln 3                 = -1.0986122886681098
//   mean loss = 0.753109126556245, perplexity = e^0.753109126556245 = 2.12359228036461
const rows = [Float32Array.from([1, 2, 3]), Float32Array.from([0, 0, 0]), Float32Array.from([9, 9, 9])];

test('per-token log-probabilities, mean loss and perplexity of a 3-token sequence', async () => {
  const model = new ScriptedModel(3, [], rows);
  const r = await scoreIds(asNative(model), [0, 2, 1], 3);
  assert.deepEqual(model.feeds, [[1, 3, 0, 2, 1]]); // one logits call: batch 1, seqLen 3, the ids
  assert.equal(r.logprobs[0], null);
  assert.ok(Math.abs(r.logprobs[1]! - -0.40760596444438013) < 1e-12);
  assert.ok(Math.abs(r.logprobs[2]! - -1.0986122886681098) < 1e-12);
  assert.ok(Math.abs(r.meanLoss - 0.753109126556245) < 1e-12);
  assert.ok(Math.abs(r.perplexity - 2.12359228036461) < 1e-12);
});

test('log-softmax stays finite for huge logits', async () => {
  const model = new ScriptedModel(2, [], [Float32Array.from([1e30, 0]), Float32Array.from([0, 0])]);
  assert.equal((await scoreIds(asNative(model), [0, 0], 2)).logprobs[1], 0);
  assert.equal((await scoreIds(asNative(model), [0, 1], 2)).logprobs[1], -Math.fround(1e30));
});

test('ids outside the vocabulary are an SftError naming the id and the size', async () => {
  const model = new ScriptedModel(3, [], rows);
  for (const bad of [3, -1]) {
    await assert.rejects(
      scoreIds(asNative(model), [0, bad, 1], 3),
      (e: unknown) => e instanceof SftError && e.message.includes(`token id ${bad}`) && e.message.includes('vocab_size 3'),
    );
  }
});

test('a single token cannot be scored', async () => {
  await assert.rejects(scoreIds(asNative(new ScriptedModel(3, [], rows)), [1], 3), SftError);
});

test('--ids parsing', () => {
  assert.deepEqual(parseIds('1, 2,3'), [1, 2, 3]);
  assert.throws(() => parseIds('1,x'), (e: unknown) => e instanceof SftError && /item 2 "x"/.test(e.message));
});
