// A real pretrained model through the engine: karpathy's stories260K (Llama, GQA 8/4, tied
// embeddings), converted to an HF folder in ../shared. Its published greedy sample from BOS
// (llama2.c `run -t 0.0`, quoted in ../shared/models/stories260K/stories260K.md) is the reference:
// the engine must produce the same text, both with the KV cache and with full forwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { loadBase } from '../../src/model/load.js';

const dir = join(packageRoot, '..', 'shared', 'models', 'stories260K');
const skip = existsSync(join(dir, 'hf', 'model.safetensors')) ? false : `no ${dir} (../shared absent)`;

const REFERENCE =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ' +
  'One day, she saw a big, red ball. She wanted to play with it, but it was too high.';

/** llama2.c's tokenizer file: int max_len, then per token: float score, int len, bytes. */
function readTok512(file: string, vocab: number): string[] {
  const b = readFileSync(file);
  const pieces: string[] = [];
  let off = 4;
  for (let i = 0; i < vocab; i++) {
    const len = b.readInt32LE(off + 4);
    pieces.push(b.subarray(off + 8, off + 8 + len).toString('utf8'));
    off += 8 + len;
  }
  return pieces;
}

/** llama2.c's decode: drop the leading space after BOS, raw bytes for <0xXX> pieces. */
function decode(ids: number[], pieces: string[]): string {
  let out = '';
  let prev = 1;
  for (const id of ids) {
    let p = pieces[id];
    if (prev === 1 && p.startsWith(' ')) p = p.slice(1);
    const m = /^<0x([0-9A-F]{2})>$/.exec(p);
    out += m ? String.fromCharCode(parseInt(m[1], 16)) : p;
    prev = id;
  }
  return out;
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

test('stories260K: greedy generation from BOS reproduces the published sample', { skip }, async () => {
  const { model, native } = await loadBase(join(dir, 'hf'));
  assert.equal(native.tieWordEmbeddings, true);
  const pieces = readTok512(join(dir, 'tok512.bin'), native.vocabSize);
  const ids = [1];
  model.resetCache();
  let logits = await model.feed(new Int32Array([1]));
  while (decode(ids.slice(1), pieces).length < REFERENCE.length) {
    const next = argmax(logits);
    ids.push(next);
    logits = await model.feed(new Int32Array([next]));
  }
  const text = decode(ids.slice(1), pieces);
  assert.equal(text.slice(0, REFERENCE.length), REFERENCE);

  // The same tokens by full forwards (no cache): every position's argmax is the next token.
  const all = await model.logits(new Int32Array(ids), 1, ids.length);
  const V = native.vocabSize;
  for (let t = 0; t + 1 < ids.length; t++) assert.equal(argmax(all.subarray(t * V, (t + 1) * V)), ids[t + 1], `position ${t}`);
});
