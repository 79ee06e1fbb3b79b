// Request bodies of POST /v1/chat/completions and POST /v1/completions, checked and turned into what the
// scheduler runs: prompt ids and generate() options. Parameters are OpenAI's, with their defaults
// (temperature 1, top_p 1, completions' max_tokens 16), plus vLLM's extensions top_k, repetition_penalty,
// add_special_tokens and return_token_ids. A parameter sft does not implement is refused when it asks for
// something other than its default, so a client never silently gets less than it asked for.
// Chat messages are text: "<|im_end|>" in a message is those characters, so a client cannot forge a turn
// (unless the server runs with parse_special_tokens). A completions prompt is the model's whole input,
// which the client could as well send as token ids, so there special tokens are read, as vLLM does.
import { randomInt } from 'node:crypto';
import type { Tok } from '../tokenizer/types.js';
import type { ChatTemplate } from '../data/templates.js';
import type { Conversation, Turn } from '../data/formats.js';
import { encodePrompt } from '../data/encode.js';
import type { GenerateOptions } from '../chat/generate.js';
import { stopSet } from '../chat/session.js';
import { ApiError, badParam } from './api-error.js';

/** What the server knows about its one model. */
export interface ModelContext {
  /** The name clients pass as "model". */
  id: string;
  tok: Tok;
  template: ChatTemplate;
  /** Most tokens prompt + completion may take. */
  maxContext: number;
  /** The engine's vocab_size: token ids in a prompt must be below it. */
  vocabSize: number;
  /** Special tokens written in chat messages become their ids (the config's parse_special_tokens). */
  parseSpecialTokens?: boolean;
}

export interface GenerationRequest {
  kind: 'chat' | 'completion';
  promptIds: number[];
  options: GenerateOptions;
  stream: boolean;
  /** stream_options.include_usage: a last chunk carries the usage. */
  includeUsage: boolean;
  /** vLLM's return_token_ids: the response carries prompt_token_ids and each choice's token_ids. */
  returnTokenIds: boolean;
}

type Body = Record<string, unknown>;

/** Parameters accepted only at their default value (absent and null are always fine). */
const DEFAULT_ONLY: Record<string, (v: unknown) => boolean> = {
  presence_penalty: (v) => v === 0,
  frequency_penalty: (v) => v === 0,
  logprobs: (v) => v === false,
  top_logprobs: (v) => v === 0,
  logit_bias: (v) => isObject(v) && Object.keys(v).length === 0,
  echo: (v) => v === false,
  best_of: (v) => v === 1,
  suffix: (v) => v === '',
  tools: (v) => Array.isArray(v) && v.length === 0,
  functions: (v) => Array.isArray(v) && v.length === 0,
  tool_choice: (v) => v === 'none',
  response_format: (v) => isObject(v) && v.type === 'text',
};

export function parseChatRequest(body: Body, ctx: ModelContext): GenerationRequest {
  checkCommon(body, ctx);
  const conv = toConversation(body.messages);
  const texts = [conv.system ?? '', ...conv.turns.map((t) => t.content)];
  refuseFarTooLong(texts, ctx, 'messages');
  const promptIds = encodePrompt(conv, ctx.template, ctx.tok, { parseSpecialTokens: ctx.parseSpecialTokens ?? false });
  const { stopIds, stopStrings } = stopSet(ctx.template, ctx.tok, userStops(body));
  // max_completion_tokens replaced max_tokens in OpenAI's chat API; either is accepted.
  const key = body.max_completion_tokens !== undefined && body.max_completion_tokens !== null ? 'max_completion_tokens' : 'max_tokens';
  return finish(body, ctx, { kind: 'chat', promptIds, promptParam: 'messages', maxTokensKey: key, stopIds, stopStrings });
}

export function parseCompletionRequest(body: Body, ctx: ModelContext): GenerationRequest {
  checkCommon(body, ctx);
  const addSpecial = optional(body, 'add_special_tokens', 'boolean') ?? true;
  const promptIds = promptToIds(body.prompt, ctx, addSpecial);
  const stopIds = ctx.tok.eosId === undefined ? [] : [ctx.tok.eosId];
  return finish(body, ctx, { kind: 'completion', promptIds, promptParam: 'prompt', maxTokensKey: 'max_tokens', defaultMaxTokens: 16, stopIds, stopStrings: userStops(body) });
}

function checkCommon(body: Body, ctx: ModelContext): void {
  const model = body.model;
  if (model === undefined || model === null) throw badParam('model', 'you must provide a model parameter', 'missing_required_parameter');
  if (model !== ctx.id) {
    throw new ApiError(404, `The model \`${String(model)}\` does not exist. This server serves \`${ctx.id}\` (GET /v1/models).`, 'invalid_request_error', 'model', 'model_not_found');
  }
  const n = optional(body, 'n', 'number');
  if (n !== undefined && n !== 1) throw badParam('n', `n=${n}: sft serve returns one choice per request (n must be 1); send several requests instead.`);
  for (const [key, isDefault] of Object.entries(DEFAULT_ONLY)) {
    const v = body[key];
    if (v !== undefined && v !== null && !isDefault(v)) throw badParam(key, `${key}=${JSON.stringify(v)} is not supported by sft serve; leave it out.`);
  }
}

interface PromptPart {
  kind: GenerationRequest['kind'];
  promptIds: number[];
  /** The field errors about the prompt's length name. */
  promptParam: string;
  maxTokensKey: string;
  /** Without max_tokens: this many, or what the context has left when undefined. */
  defaultMaxTokens?: number;
  stopIds: number[];
  stopStrings: string[];
}

/** Sampling options, the stream flags and the context-length check shared by both endpoints. */
function finish(body: Body, ctx: ModelContext, part: PromptPart): GenerationRequest {
  const { kind, promptIds, promptParam, maxTokensKey, defaultMaxTokens, stopIds, stopStrings } = part;
  const temperature = number(body, 'temperature', 1, { min: 0, max: 2 });
  const topP = number(body, 'top_p', 1, { min: 0, max: 1 });
  const topK = integer(body, 'top_k', 0, -1);
  const repetitionPenalty = number(body, 'repetition_penalty', 1, { positive: true });
  const seed = optional(body, 'seed', 'number');
  if (seed !== undefined && !Number.isSafeInteger(seed)) throw badParam('seed', `seed must be an integer, got ${seed}.`);
  const requested = integerOrUndefined(body, maxTokensKey, 1);

  const room = ctx.maxContext - promptIds.length;
  if (room < 1 || (requested !== undefined && requested > room)) {
    const asked = requested === undefined ? '' : ` (${promptIds.length} in the ${promptParam}, ${requested} for the completion)`;
    throw badParam(
      promptParam,
      `This model's maximum context length is ${ctx.maxContext} tokens. However, you requested ` +
        `${promptIds.length + (requested ?? 0)} tokens${asked}. Please reduce the length of the ${promptParam}` +
        `${requested === undefined ? '' : ` or ${maxTokensKey}`}.`,
      'context_length_exceeded',
    );
  }
  const stream = optional(body, 'stream', 'boolean') ?? false;
  const streamOptions = body.stream_options;
  if (streamOptions !== undefined && streamOptions !== null && !isObject(streamOptions)) throw badParam('stream_options', 'stream_options must be an object.');
  const includeUsage = streamOptions ? optional(streamOptions, 'include_usage', 'boolean', 'stream_options.include_usage') ?? false : false;

  return {
    kind,
    promptIds,
    options: {
      maxNewTokens: requested ?? Math.min(defaultMaxTokens ?? room, room),
      temperature,
      topK: topK === -1 ? 0 : topK,
      topP,
      repetitionPenalty,
      stopIds,
      stopStrings,
      seed: seed ?? randomInt(2 ** 31),
    },
    stream,
    includeUsage,
    returnTokenIds: optional(body, 'return_token_ids', 'boolean') ?? false,
  };
}

/** OpenAI messages -> the Firefly conversation the template lays out. System (and "developer") messages
 *  come first and are joined; the last message must be the user's, whose turn the reply answers. */
export function toConversation(messages: unknown): Conversation {
  if (!Array.isArray(messages) || messages.length === 0) throw badParam('messages', 'messages must be a non-empty array of {role, content} objects.');
  const system: string[] = [];
  const turns: Turn[] = [];
  messages.forEach((m, i) => {
    const where = `messages[${i}]`;
    if (!isObject(m)) throw badParam(where, `${where} must be an object with role and content.`);
    const content = messageText(m.content, `${where}.content`);
    if (m.role === 'system' || m.role === 'developer') {
      if (turns.length > 0) throw badParam(`${where}.role`, `${where}: a ${m.role} message must come before the user and assistant messages.`);
      system.push(content);
    } else if (m.role === 'user' || m.role === 'assistant') {
      turns.push({ role: m.role, content });
    } else {
      throw badParam(`${where}.role`, `${where}.role ${JSON.stringify(m.role)} is not supported: use system, user or assistant.`);
    }
  });
  if (turns.at(-1)?.role !== 'user') throw badParam('messages', 'the last message must have role "user": the reply answers it.');
  return system.length ? { system: system.join('\n'), turns } : { turns };
}

/** A message's content: a string, or an array of {type: "text", text} parts (joined by newlines). */
function messageText(content: unknown, param: string): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part, i) => {
        if (!isObject(part) || part.type !== 'text' || typeof part.text !== 'string') {
          throw badParam(`${param}[${i}]`, `${param}[${i}]: only text parts ({"type": "text", "text": "..."}) are supported.`);
        }
        return part.text;
      })
      .join('\n');
  }
  throw badParam(param, `${param} must be a string or an array of text parts.`);
}

/** A completion prompt: a string or token ids, alone or as a one-element list (batches are not served). */
function promptToIds(prompt: unknown, ctx: ModelContext, addSpecial: boolean): number[] {
  let one = prompt;
  if (Array.isArray(prompt) && prompt.length > 0 && (typeof prompt[0] === 'string' || Array.isArray(prompt[0]))) {
    if (prompt.length !== 1) throw badParam('prompt', `a list of ${prompt.length} prompts: sft serve completes one prompt per request.`);
    one = prompt[0];
  }
  let ids: number[];
  if (typeof one === 'string') {
    refuseFarTooLong([one], ctx, 'prompt');
    // As Hugging Face tokenizers add special tokens: the BOS token, where the tokenizer has one.
    ids = ctx.tok.encode(one);
    if (addSpecial && ctx.tok.bosId !== undefined) ids.unshift(ctx.tok.bosId);
  } else if (Array.isArray(one) && one.every((x) => Number.isInteger(x))) {
    ids = one as number[];
    const bad = ids.find((id) => id < 0 || id >= ctx.vocabSize);
    if (bad !== undefined) throw badParam('prompt', `prompt token id ${bad} is outside the vocabulary (0..${ctx.vocabSize - 1}).`);
  } else {
    throw badParam('prompt', 'prompt must be a string or an array of token ids.');
  }
  if (ids.length === 0) throw badParam('prompt', 'the prompt has no tokens: give some text.');
  return ids;
}

/** Texts whose tokens alone, by the tokenizer's cheap lower bound, fill the context are refused before
 *  they are tokenized: a megabyte takes seconds to tokenize and could never fit anyway. */
function refuseFarTooLong(texts: string[], ctx: ModelContext, param: string): void {
  const bound = ctx.tok.minTokens;
  if (!bound) return;
  let atLeast = 0;
  for (const t of texts) atLeast += bound(t);
  if (atLeast < ctx.maxContext) return;
  const what = param === 'messages' ? 'your messages resulted in' : 'your prompt has';
  throw badParam(
    param,
    `This model's maximum context length is ${ctx.maxContext} tokens. However, ${what} at least ${atLeast} tokens. Please reduce the length of the ${param}.`,
    'context_length_exceeded',
  );
}

function userStops(body: Body): string[] {
  const stop = body.stop;
  if (stop === undefined || stop === null) return [];
  if (typeof stop === 'string') return stop ? [stop] : [];
  if (Array.isArray(stop) && stop.every((s) => typeof s === 'string')) return (stop as string[]).filter((s) => s.length > 0);
  throw badParam('stop', 'stop must be a string or an array of strings.');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function optional<T extends 'number' | 'boolean'>(
  body: Body,
  key: string,
  type: T,
  param = key,
): (T extends 'number' ? number : boolean) | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== type || (type === 'number' && !Number.isFinite(v))) throw badParam(param, `${param} must be a ${type}, got ${JSON.stringify(v)}.`);
  return v as T extends 'number' ? number : boolean;
}

/** A number parameter within [min, max] (or > 0 when `positive`), `fallback` when absent. */
function number(body: Body, key: string, fallback: number, range: { min?: number; max?: number; positive?: boolean }): number {
  const v = optional(body, key, 'number') ?? fallback;
  const { min = -Infinity, max = Infinity, positive = false } = range;
  if (v < min || v > max || (positive && !(v > 0))) {
    const want = positive ? '> 0' : `between ${min} and ${max}`;
    throw badParam(key, `${key} must be ${want}, got ${v}.`);
  }
  return v;
}

function integer(body: Body, key: string, fallback: number, min: number): number {
  return integerOrUndefined(body, key, min) ?? fallback;
}

function integerOrUndefined(body: Body, key: string, min: number): number | undefined {
  const v = optional(body, key, 'number');
  if (v !== undefined && (!Number.isSafeInteger(v) || v < min)) throw badParam(key, `${key} must be an integer >= ${min}, got ${v}.`);
  return v;
}
