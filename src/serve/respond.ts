// Runs one checked request on the scheduler and answers it in OpenAI's shapes: chat.completion /
// text_completion objects, or their chunks as server-sent events (a role chunk first for chat, one chunk per
// piece of text, a last chunk with finish_reason, a usage-only chunk when asked, then [DONE]).
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { GenerateResult } from '../chat/generate.js';
import type { GenerationRequest } from './request.js';
import type { Scheduler } from './scheduler.js';
import { SseWriter, sendJson } from './http-io.js';
import { toApiError } from './api-error.js';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** What the server logs about a finished request. */
export interface Outcome {
  usage: Usage;
  finishReason: GenerateResult['finishReason'] | 'aborted' | 'error';
}

/** Streams or returns the completion of `request`. Aborting `signal` (the client went away) ends the
 *  generation at the next token and writes nothing more. */
export async function respond(
  res: ServerResponse,
  request: GenerationRequest,
  scheduler: Scheduler,
  modelId: string,
  signal: AbortSignal,
): Promise<Outcome> {
  const chat = request.kind === 'chat';
  const head = {
    id: `${chat ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`,
    object: chat ? 'chat.completion' : 'text_completion',
    created: Math.floor(Date.now() / 1000),
    model: modelId,
  };
  const promptTokens = request.promptIds.length;
  // Every sampled token counts, the stop token included, as vLLM counts them.
  const sampled: number[] = [];
  const usage = (): Usage => ({ prompt_tokens: promptTokens, completion_tokens: sampled.length, total_tokens: promptTokens + sampled.length });
  const tokenIds = (ids: number[]) => (request.returnTokenIds ? { token_ids: ids } : {});
  const promptIds = request.returnTokenIds ? { prompt_token_ids: request.promptIds } : {};

  const sse = request.stream ? new SseWriter(res) : undefined;
  const chunkHead = { ...head, object: chat ? 'chat.completion.chunk' : 'text_completion' };
  let first = true;
  const sendChunk = (choice: Record<string, unknown>): void => {
    const usageField = request.includeUsage ? { usage: null } : {};
    sse?.send({ ...chunkHead, choices: [{ index: 0, ...choice, logprobs: null }], ...usageField, ...(first ? promptIds : {}) });
    first = false;
  };
  if (chat) sendChunk({ delta: { role: 'assistant', content: '' }, finish_reason: null });

  let text = '';
  /** Ids sampled since the last chunk sent (a token's text can be '' until the next completes it). */
  let unsent: number[] = [];
  const gen = scheduler.run(request.promptIds, request.options, signal);
  let result: GenerateResult;
  try {
    for (;;) {
      const step = await gen.next();
      if (signal.aborted) return { usage: usage(), finishReason: 'aborted' };
      if (step.done) {
        result = step.value;
        break;
      }
      sampled.push(step.value.id);
      unsent.push(step.value.id);
      text += step.value.text;
      if (sse && step.value.text) {
        sendChunk({ ...(chat ? { delta: { content: step.value.text } } : { text: step.value.text }), finish_reason: null, ...tokenIds(unsent) });
        unsent = [];
      }
    }
  } catch (err) {
    if (signal.aborted) return { usage: usage(), finishReason: 'aborted' };
    if (!sse) throw err;
    // The stream has started: the error goes out as an event, as OpenAI sends one mid-stream.
    sse.send(toApiError(err).body());
    sse.end();
    return { usage: usage(), finishReason: 'error' };
  } finally {
    // Stops the generation when the loop was left early (client gone); a no-op after it finished.
    await gen.return(undefined as never);
  }

  const finish_reason = result.finishReason;
  if (sse) {
    sendChunk({ ...(chat ? { delta: {} } : { text: '' }), finish_reason, ...tokenIds(unsent) });
    if (request.includeUsage) sse.send({ ...chunkHead, choices: [], usage: usage() });
    sse.end();
  } else {
    const choice = chat
      ? { index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason, ...tokenIds(sampled) }
      : { index: 0, text, logprobs: null, finish_reason, ...tokenIds(sampled), ...promptIds };
    sendJson(res, 200, { ...head, choices: [choice], usage: usage(), ...(chat ? promptIds : {}) });
  }
  return { usage: usage(), finishReason: finish_reason };
}
