// What the server's answers are checked against, computed on a second copy of the model (its own cache):
// the greedy choice as `sft score` sees it (argmax of full forwards over the growing sequence, no cache),
// and generate() as `sft chat` runs it.
import type { NativeModel } from '../../src/native/types.js';
import type { Tok } from '../../src/tokenizer/types.js';
import { generate, type GenerateOptions } from '../../src/chat/generate.js';
import { argmax } from '../../src/chat/sampling.js';

/** Greedy continuation by full forwards: each step's argmax over the last position's logits. The stop id
 *  that ends it is included, as the server counts it. */
export async function argmaxContinuation(model: NativeModel, promptIds: number[], maxNew: number, stopIds: number[]): Promise<number[]> {
  const seq = [...promptIds];
  const out: number[] = [];
  while (out.length < maxNew) {
    const logits = await model.logits(Int32Array.from(seq), 1, seq.length);
    const vocab = logits.length / seq.length;
    const next = argmax(logits.subarray((seq.length - 1) * vocab));
    out.push(next);
    if (stopIds.includes(next)) break;
    seq.push(next);
  }
  return out;
}

/** generate() on an empty cache: every sampled id (the stop id included) and the text. */
export async function generated(model: NativeModel, tok: Tok, promptIds: number[], opts: GenerateOptions): Promise<{ ids: number[]; text: string; finishReason: string }> {
  model.resetCache();
  const gen = generate(model, tok, promptIds, opts);
  const ids: number[] = [];
  for (;;) {
    const step = await gen.next();
    if (step.done) return { ids, text: step.value.text, finishReason: step.value.finishReason };
    ids.push(step.value.id);
  }
}

export const GREEDY: Omit<GenerateOptions, 'maxNewTokens' | 'stopIds'> = {
  temperature: 0,
  topK: 0,
  topP: 1,
  repetitionPenalty: 1,
  stopStrings: [],
  seed: 0,
};
