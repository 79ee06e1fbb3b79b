// Teacher-forced scoring of one sequence: the log-probability of each token given the ones before it.
import type { NativeModel } from '../native/types.js';
import { SftError } from '../errors.js';

export interface SequenceScore {
  /** logprobs[t] = log p(ids[t] | ids[0..t-1]); the first token has none (null). */
  logprobs: (number | null)[];
  /** Negative mean of the defined log-probabilities (nats per predicted token). */
  meanLoss: number;
  perplexity: number;
}

export async function scoreIds(model: NativeModel, ids: number[], vocabSize: number): Promise<SequenceScore> {
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new SftError(`token id ${id} is outside the model's vocabulary (ids 0..${vocabSize - 1}, vocab_size ${vocabSize}).`);
    }
  }
  if (ids.length < 2) {
    throw new SftError(
      `scoring needs at least 2 tokens (got ${ids.length}): the first token is only context. Add text, or --bos to score the first token after BOS.`,
    );
  }
  const logits = await model.logits(Int32Array.from(ids), 1, ids.length);
  if (logits.length !== ids.length * vocabSize) {
    throw new SftError(`the model returned ${logits.length} logits for ${ids.length} tokens; expected vocab_size ${vocabSize} per token.`);
  }
  const logprobs: (number | null)[] = [null];
  let sum = 0;
  for (let t = 1; t < ids.length; t++) {
    const row = logits.subarray((t - 1) * vocabSize, t * vocabSize);
    const lp = logSoftmaxAt(row, ids[t]);
    logprobs.push(lp);
    sum += lp;
  }
  const meanLoss = -sum / (ids.length - 1);
  return { logprobs, meanLoss, perplexity: Math.exp(meanLoss) };
}

/** log softmax(row)[index], accumulated in float64: x - max - log(sum exp(x - max)). */
export function logSoftmaxAt(row: Float32Array, index: number): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  return row[index] - max - Math.log(sum);
}
