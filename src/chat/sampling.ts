// Next-token choice with the semantics of HF transformers' generate(): RepetitionPenaltyLogitsProcessor,
// then (when sampling) TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, then a draw.
// Scores are worked on in float64 so tiny probabilities survive the softmax.
import { mulberry32 } from '../util/random.js';

export { mulberry32 };

export interface SamplingOptions {
  /** 0 means greedy (argmax, ties to the lowest id); HF calls that do_sample=False. */
  temperature: number;
  /** 0 disables top-k. */
  topK: number;
  /** 1 disables top-p. */
  topP: number;
  /** 1 disables the penalty. */
  repetitionPenalty: number;
  /** Uniform [0, 1) source. */
  rng: () => number;
}

export function sampleNext(logits: Float32Array, history: number[], opts: SamplingOptions): number {
  const scores = Float64Array.from(logits);
  applyRepetitionPenalty(scores, history, opts.repetitionPenalty);
  // HF's greedy path still applies the repetition penalty, but no warpers.
  if (opts.temperature === 0) return argmax(scores);
  if (opts.temperature !== 1) for (let i = 0; i < scores.length; i++) scores[i] /= opts.temperature;
  if (opts.topK > 0) applyTopK(scores, opts.topK);
  if (opts.topP < 1) applyTopP(scores, opts.topP);
  return draw(scores, opts.rng());
}

/** Each id seen in the prompt or the reply so far, counted once: positive scores are divided by the
 *  penalty, negative ones multiplied, so a penalty > 1 always lowers the token's probability. */
export function applyRepetitionPenalty(scores: Float64Array, history: number[], penalty: number): void {
  if (penalty === 1) return;
  for (const id of new Set(history)) {
    if (id < 0 || id >= scores.length) continue;
    const s = scores[id];
    scores[id] = s < 0 ? s * penalty : s / penalty;
  }
}

/** First index of the maximum, as torch.argmax picks it. */
export function argmax(scores: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i] > scores[best]) best = i;
  return best;
}

/** Remove every score below the k-th largest; ties with the k-th largest stay (HF: scores < kth). */
export function applyTopK(scores: Float64Array, topK: number): void {
  const k = Math.min(topK, scores.length);
  const sorted = Float64Array.from(scores).sort();
  const kth = sorted[sorted.length - k];
  for (let i = 0; i < scores.length; i++) if (scores[i] < kth) scores[i] = -Infinity;
}

/**
 * HF's TopPLogitsWarper: sort ascending, accumulate probabilities, remove every token whose running sum is
 * still <= 1 - topP, but never the last (most probable) one. The kept set is the smallest top set whose mass
 * reaches topP. Among equal scores the ascending order is by id, so the lower ids go first (a stable sort).
 */
export function applyTopP(scores: Float64Array, topP: number): void {
  const probs = softmax(scores);
  const cut = 1 - topP;
  // A token with p < cut / V has a running sum below V * p < cut wherever it sorts, so it is removed
  // without sorting: only the remaining candidates (usually a handful) need ordering.
  const floor = cut / scores.length;
  let removedMass = 0;
  const candidates: number[] = [];
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] < floor) {
      removedMass += probs[i];
      scores[i] = -Infinity;
    } else {
      candidates.push(i);
    }
  }
  candidates.sort((a, b) => probs[a] - probs[b] || a - b);
  let running = removedMass;
  for (let j = 0; j < candidates.length - 1; j++) {
    running += probs[candidates[j]];
    if (running > cut) break;
    scores[candidates[j]] = -Infinity;
  }
}

/** exp(s - max) / sum; -Infinity scores get 0. */
export function softmax(scores: Float64Array): Float64Array {
  let max = -Infinity;
  for (const s of scores) if (s > max) max = s;
  const out = new Float64Array(scores.length);
  let sum = 0;
  for (let i = 0; i < scores.length; i++) {
    out[i] = Math.exp(scores[i] - max);
    sum += out[i];
  }
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

/** Inverse-CDF draw from softmax(scores) with u in [0, 1). */
function draw(scores: Float64Array, u: number): number {
  const probs = softmax(scores);
  let last = -1;
  let acc = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    acc += probs[i];
    last = i;
    if (u < acc) return i;
  }
  // Rounding left acc a hair under 1 and u above it: the last token with mass is the right answer.
  return last;
}
