// A multi-turn chat over one KV cache. The cache always holds the conversation as the template lays it out
// (system, user turn, assistant prefix, reply ids, the assistant turn's closing text, ...), so each new turn
// feeds only its own tokens. Turns are tokenized one by one, as Firefly's chat script and encodePrompt do,
// which is what makes "earlier turns + new turn" equal to the prompt of the whole conversation.
// Messages and replies are text: only the template puts special tokens in the cache.
// The model's own chat_template renders the whole conversation at once, so there each turn renders
// the whole prompt again and feeds what follows the ids already in the cache.
import type { NativeModel } from '../native/types.js';
import type { Tok } from '../tokenizer/types.js';
import { fillFormat, isModelTemplate, type ChatTemplate, type FormatTemplate } from '../data/templates.js';
import type { Conversation } from '../data/formats.js';
import { encodeFormat, encodePrompt, conversationParts, type EncodeOptions } from '../data/encode.js';
import { SftError } from '../errors.js';
import { generate } from './generate.js';
import type { GenerateChunk, GenerateResult } from './generate.js';

export interface ChatSessionOptions {
  template: ChatTemplate;
  /** System prompt; undefined means the template's default. */
  system?: string;
  /** Most tokens the cache may hold: the model's max_position_embeddings or --max-context. */
  maxContext: number;
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  repetitionPenalty: number;
  /** Reply n (0-based since the start or the last reset) samples with seed + n. */
  seed: number;
  /** Stop strings on top of the template's stop words (--stop). */
  stopStrings?: string[];
  /** Where the session says what it did on its own (dropping old turns). */
  onNotice?: (message: string) => void;
  /** Special tokens typed in a message become their ids (the config's parse_special_tokens; off: text). */
  parseSpecialTokens?: boolean;
}

type Turn = Conversation['turns'][number];

export class ChatSession {
  private turns: Turn[] = [];
  /** Exactly the ids in the model's KV cache. */
  private cacheIds: number[] = [];
  /** Ids the cache still owes the conversation (the reply's unfed last token, the closing text);
   *  fed together with the next user turn. */
  private pendingIds: number[] = [];
  /** The cache no longer matches the conversation: the next turn re-feeds it all. */
  private stale = false;
  private replies = 0;
  private systemTokens: number | undefined;
  private readonly stop: { stopIds: number[]; stopStrings: string[] };
  /** The assistant format's text after {content} (e.g. "<|im_end|>\n", "</s>") tokenized alone: the reply's
   *  ids stand for {content}, so only this closes the turn (see closingAfter for the exact form). */
  private readonly closingIds: number[];

  constructor(
    private readonly model: NativeModel,
    private readonly tok: Tok,
    private readonly opts: ChatSessionOptions,
  ) {
    this.stop = stopSet(opts.template, tok, opts.stopStrings ?? []);
    if (isModelTemplate(opts.template)) {
      this.closingIds = opts.template.closing ? tok.encode(opts.template.closing) : [];
      return;
    }
    // Templates put the assistant prefix at the end of userFormat, so nothing precedes {content} here.
    const format = opts.template.assistantFormat;
    const at = format.indexOf('{content}');
    if (at < 0) throw new SftError(`chat template "${opts.template.name}": assistantFormat has no {content} placeholder.`);
    const closing = fillFormat(format.slice(at + '{content}'.length), '', { eos: tok.eosToken, bos: tok.bosToken });
    this.closingIds = closing ? tok.encode(closing) : [];
  }

  get conversation(): Conversation {
    const turns = this.turns.map((t) => ({ ...t }));
    return this.opts.system === undefined ? { turns } : { system: this.opts.system, turns };
  }

  /** Streams the assistant's reply to `userText`; resolves with how it ended. */
  async *send(userText: string): AsyncGenerator<GenerateChunk, GenerateResult> {
    // A send whose consumer stopped early left a user turn without a reply and a cache of unknown content.
    if (this.turns.at(-1)?.role === 'user') {
      this.turns.pop();
      this.stale = true;
    }
    this.turns.push({ role: 'user', content: userText });
    // A message far beyond the context is refused before it is tokenized (megabytes take seconds).
    const atLeast = (this.tok.minTokens?.(userText) ?? 0) + this.systemBound();
    if (this.roomAfter(atLeast) < 1) {
      this.turns.pop();
      throw tooLong(`at least ${atLeast}`, this.opts.maxContext);
    }

    let promptIds: number[] | undefined;
    if (isModelTemplate(this.opts.template)) {
      promptIds = this.wholePrompt();
    } else {
      const userIds = this.encodeUserTurn(userText);
      if (!this.stale && this.cacheIds.length > 0) {
        promptIds = [...this.pendingIds, ...userIds];
        if (this.roomAfter(this.cacheIds.length + promptIds.length) < this.opts.maxNewTokens) promptIds = undefined;
      }
      promptIds ??= this.refill(userIds);
    }

    const maxNewTokens = Math.min(this.opts.maxNewTokens, this.roomAfter(this.cacheIds.length + promptIds.length));
    if (maxNewTokens < 1) throw tooLong(String(promptIds.length), this.opts.maxContext);

    this.stale = true; // until the reply is complete
    const result = yield* generate(this.model, this.tok, promptIds, {
      maxNewTokens,
      temperature: this.opts.temperature,
      topK: this.opts.topK,
      topP: this.opts.topP,
      repetitionPenalty: this.opts.repetitionPenalty,
      stopIds: this.stop.stopIds,
      stopStrings: this.stop.stopStrings,
      seed: this.opts.seed + this.replies,
      contextIds: this.cacheIds,
    });
    this.replies++;
    // Loops, not push(...ids): a long prompt would overflow the call stack.
    for (const id of promptIds) this.cacheIds.push(id);
    for (const id of result.ids.slice(0, result.ids.length - result.unfedIds.length)) this.cacheIds.push(id);
    this.turns.push({ role: 'assistant', content: result.text });
    // A stop string can end inside a token, so the reply's ids hold text the reply does not; the cache is
    // then rebuilt from the text at the next turn. Otherwise the ids are the reply and the cache stays.
    if (isModelTemplate(this.opts.template)) this.stale = false; // the next prompt is checked against the cache
    else if (result.stoppedBy !== 'string') {
      this.pendingIds = [...result.unfedIds, ...this.closingAfter(result)];
      this.stale = false;
    }
    return result;
  }

  /** Forgets the conversation and empties the cache. */
  reset(): void {
    this.turns = [];
    this.cacheIds = [];
    this.pendingIds = [];
    this.stale = false;
    this.replies = 0;
    this.model.resetCache();
  }

  /** The length bound of the system prompt, computed once: it is part of every refill. */
  private systemBound(): number {
    this.systemTokens ??= this.opts.system === undefined ? 0 : (this.tok.minTokens?.(this.opts.system) ?? 0);
    return this.systemTokens;
  }

  /** Tokens left for the reply once `used` tokens are in the cache, keeping room for the closing text. */
  private roomAfter(used: number): number {
    return this.opts.maxContext - used - this.closingIds.length;
  }

  /** Empties the cache and returns the whole conversation's prompt, dropping the oldest exchanges
   *  (user turn + reply) until a full-length reply fits. Each part is tokenized on its own, so the
   *  prompt without the oldest exchange is the same ids less that exchange's; `lastIds` is the new
   *  user turn, already tokenized. */
  private refill(lastIds: number[]): number[] {
    const before = { ...this.conversation, turns: this.conversation.turns.slice(0, -1) };
    const parts = conversationParts(before, this.opts.template as FormatTemplate, this.tok, this.encodeOptions());
    const turns = [...parts.turns, lastIds];
    let total = (parts.system?.length ?? 0) + turns.reduce((n, t) => n + t.length, 0);
    let dropped = 0;
    while (this.turns.length > 1 && this.roomAfter(total) < this.opts.maxNewTokens) {
      total -= turns[0].length + turns[1].length;
      turns.splice(0, 2);
      this.turns.splice(0, 2);
      dropped++;
    }
    const ids = parts.system ?? [];
    for (const turn of turns) for (const id of turn) ids.push(id);
    if (dropped > 0) {
      this.opts.onNotice?.(
        `context full (${this.opts.maxContext} tokens): dropped the ${dropped} oldest exchange(s) and re-read the rest.`,
      );
    }
    this.model.resetCache();
    this.cacheIds = [];
    this.pendingIds = [];
    return ids;
  }

  /** The model template's prompt for the whole conversation, dropping the oldest exchanges until a
   *  full-length reply fits; only what follows the cache's ids when they begin it, else all of it. */
  private wholePrompt(): number[] {
    const encode = () => encodePrompt(this.conversation, this.opts.template, this.tok, this.encodeOptions());
    let ids = encode();
    let dropped = 0;
    while (this.turns.length > 1 && this.roomAfter(ids.length) < this.opts.maxNewTokens) {
      this.turns.splice(0, 2);
      dropped++;
      ids = encode();
    }
    if (dropped > 0) {
      this.opts.onNotice?.(`context full (${this.opts.maxContext} tokens): dropped the ${dropped} oldest exchange(s) and re-read the rest.`);
    }
    const cached = this.cacheIds;
    if (!this.stale && cached.length > 0 && cached.length < ids.length && cached.every((id, i) => ids[i] === id)) return ids.slice(cached.length);
    this.model.resetCache();
    this.cacheIds = [];
    this.pendingIds = [];
    return ids;
  }

  /** The closing ids as the whole assistant part tokenizes them after this reply: a tokenizer may fold the
   *  closing's leading text into the content (Llama-2's "ok </s>" is [ok, </s>], its " </s>" alone is [▁, </s>]).
   *  When the reply's ids are not a prefix of that tokenization, the closing tokenized alone is used. */
  private closingAfter(result: GenerateResult): number[] {
    const template = this.opts.template as FormatTemplate;
    const whole = encodeFormat(template.assistantFormat, result.text, template, this.tok, this.encodeOptions());
    const isPrefix = result.ids.length <= whole.length && result.ids.every((id, i) => whole[i] === id);
    return isPrefix ? whole.slice(result.ids.length) : this.closingIds;
  }

  /** The new user turn tokenized on its own, as encodePrompt does each part (it ends with the assistant prefix). */
  private encodeUserTurn(text: string): number[] {
    const template = this.opts.template as FormatTemplate;
    return encodeFormat(template.userFormat, text, template, this.tok, this.encodeOptions());
  }

  private encodeOptions(): EncodeOptions {
    return { parseSpecialTokens: this.opts.parseSpecialTokens ?? false };
  }
}

function tooLong(tokens: string, maxContext: number): SftError {
  return new SftError(
    `the message and the template take ${tokens} tokens but the context holds ${maxContext}: ` +
      "send a shorter message or raise --max-context (up to the model's max_position_embeddings).",
  );
}

/** Stop ids and stop strings for a template: the tokenizer's eos, each stop word that is one token, and as
 *  strings the stop words that are not one token plus the user's own. */
export function stopSet(template: ChatTemplate, tok: Tok, extra: string[]): { stopIds: number[]; stopStrings: string[] } {
  const ids = new Set<number>();
  const strings = [...extra];
  if (tok.eosId !== undefined) ids.add(tok.eosId);
  for (const word of template.stopWords) {
    const enc = tok.encode(word);
    if (enc.length === 1) ids.add(enc[0]);
    else strings.push(word);
  }
  return { stopIds: [...ids], stopStrings: strings };
}
