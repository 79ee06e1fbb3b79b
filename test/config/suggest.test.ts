import { test } from 'node:test';
import assert from 'node:assert/strict';
import { didYouMean, editDistance, nearest } from '../../src/config/suggest.js';

test('edit distance counts inserts, deletes, substitutions and neighbour swaps', () => {
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(editDistance('abc', 'abc'), 0);
  assert.equal(editDistance('ab', 'ba'), 1);
  assert.equal(editDistance('learning_rat', 'learning_rate'), 1);
});

test('nearest picks the closest plausible candidate or none', () => {
  const keys = ['learning_rate', 'lora_rank', 'lora_alpha', 'seed'];
  assert.equal(nearest('learning_rat', keys), 'learning_rate');
  assert.equal(nearest('Learning-Rate', keys), 'learning_rate');
  assert.equal(nearest('lora_alpah', keys), 'lora_alpha');
  assert.equal(nearest('sed', keys), 'seed');
  assert.equal(nearest('batch_size', keys), undefined);
  assert.equal(didYouMean('xyz_qqq_www', keys), '');
  assert.equal(didYouMean('seeed', keys, '--'), ' — did you mean "--seed"?');
});
