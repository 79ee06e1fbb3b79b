// Token-by-token generation over one sequence of the engine's KV cache (`model` may be a view of one slot,
// as the batching scheduler gives each request): the prompt is fed once, then each sampled token alone. Text streams out as it becomes printable; stop ids and stop strings end the reply.
import type { NativeModel } from '../native/types.js';
import type { Tok } from '../tokenizer/types.js';
import { SftError } from '../errors.js';
import { mulberry32, sampleNext } from './sampling.js';
import { StreamDecoder } from './detokenize.js';
import { StopStringFilter } from './stop-strings.js';

export interface GenerateOptions {
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  repetitionPenalty: number;
  /** Sampling one of these ends the reply; the id itself is not part of it. */
  stopIds: number[];
  /** The reply ends where one of these first appears in its text; the stop string is not printed. */
  stopStrings: string[];
  seed: number;
  /** Ids already in the KV cache before `promptIds` (earlier turns): the repetition penalty sees them too,
   *  as HF's sees the whole input_ids. */
  contextIds?: number[];
}

/** One chunk per sampled token (the stop token included): the text it made printable, possibly ''. */
export interface GenerateChunk {
  text: string;
  id: number;
}

export type FinishReason = 'stop' | 'length';

export interface GenerateResult {
  finishReason: FinishReason;
  /** How the reply stopped when finishReason is 'stop'. */
  stoppedBy?: 'id' | 'string';
  /** Sampled ids of the reply, stop id excluded (a stop string's token included). */
  ids: number[];
  /** The tail of `ids` that was sampled but never fed, so the cache does not hold it yet. */
  unfedIds: number[];
  /** All printed text. */
  text: string;
}

export async function* generate(
  model: Pick<NativeModel, 'feed'>,
  tok: Tok,
  promptIds: number[],
  opts: GenerateOptions,
): AsyncGenerator<GenerateChunk, GenerateResult> {
  if (promptIds.length === 0) throw new SftError('generate: the prompt has no tokens; there is nothing to continue from.');
  const rng = mulberry32(opts.seed);
  const history = [...(opts.contextIds ?? []), ...promptIds];
  const decoder = new StreamDecoder(tok);
  const stopper = new StopStringFilter(opts.stopStrings);
  const stopIds = new Set(opts.stopIds);
  const ids: number[] = [];
  let fed = 0;
  let text = '';
  let finish: Pick<GenerateResult, 'finishReason' | 'stoppedBy'> = { finishReason: 'length' };

  let logits = await model.feed(Int32Array.from(promptIds));
  while (ids.length < opts.maxNewTokens) {
    const id = sampleNext(logits, history, { ...opts, rng });
    let piece: { text: string; stopped: boolean };
    let done: boolean;
    if (stopIds.has(id)) {
      piece = finalText(decoder, stopper);
      finish = { finishReason: 'stop', stoppedBy: piece.stopped ? 'string' : 'id' };
      done = true;
    } else {
      ids.push(id);
      history.push(id);
      piece = stopper.push(decoder.push(id));
      done = piece.stopped || ids.length === opts.maxNewTokens;
      if (!piece.stopped && done) {
        const tail = finalText(decoder, stopper);
        piece = { text: piece.text + tail.text, stopped: tail.stopped };
      }
      if (piece.stopped) finish = { finishReason: 'stop', stoppedBy: 'string' };
    }
    text += piece.text;
    yield { text: piece.text, id };
    // The last token's logits are never needed, so it is not fed: the caller learns it from unfedIds.
    if (done) break;
    logits = await model.feed(Int32Array.of(id));
    fed++;
  }
  return { ...finish, ids, unfedIds: ids.slice(fed), text };
}

/** Releases the decoder's held bytes through the stop filter, then the filter's held text. */
function finalText(decoder: StreamDecoder, stopper: StopStringFilter): { text: string; stopped: boolean } {
  const out = stopper.push(decoder.flush());
  if (out.stopped) return out;
  return { text: out.text + stopper.flush(), stopped: false };
}
