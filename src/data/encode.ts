// Conversation -> token ids and labels. Built-in templates, with Firefly's semantics (component/dataset.py,
// UnifiedSFTDataset): the prefix, the system part and each user part are context (label -100); each
// assistant part, including the end-of-turn token(s) its format writes ("</s>", "<|im_end|>\n"), is
// target (label = id). Each part is tokenized on its own, then the whole is right-truncated.
// The model's own chat_template: rendered and tokenized as transformers does, spans as chat-template.ts says.
// Special tokens come only from the template: the messages are text (Tok.encodeParts), unless
// parseSpecialTokens says the data really holds special tokens written as text.
import type { TextPart, Tok } from '../tokenizer/types.js';
import type { Conversation } from './formats.js';
import { formatParts, isModelTemplate, templateMarkers, type ChatTemplate, type FormatTemplate } from './templates.js';
import { encodePieces, promptPieces, trainingPieces, type ModelChatTemplate } from './chat-template.js';

export const IGNORE = -100;

export interface EncodedSample {
  noTarget?: false;
  inputIds: number[];
  labels: number[];
  truncated: boolean;
}
/** Truncation cut away every target token: the caller must skip the sample and count it. */
export interface NoTargetSample {
  noTarget: true;
  /** Length before truncation, for the message that suggests a larger max_seq_length. */
  fullLength: number;
}

export interface EncodeOptions {
  /** The config's parse_special_tokens: special tokens written in the messages become their ids
   *  (for data that holds them as text on purpose). Off: the messages are text. */
  parseSpecialTokens?: boolean;
}

export function encodeConversation(
  conv: Conversation,
  template: ChatTemplate,
  tok: Tok,
  maxSeqLength: number,
  opts: EncodeOptions = {},
): EncodedSample | NoTargetSample {
  const inputIds: number[] = [];
  const labels: number[] = [];
  const add = (ids: number[], target: boolean): void => {
    for (const id of ids) {
      inputIds.push(id);
      labels.push(target ? id : IGNORE);
    }
  };
  if (isModelTemplate(template)) {
    const { ids, trained } = encodePieces(trainingPieces(conv, template), modelEncoder(template, tok, opts));
    ids.forEach((id, i) => add([id], trained[i]));
  } else {
    const parts = conversationParts(conv, template, tok, opts);
    if (parts.system !== undefined) add(parts.system, false);
    conv.turns.forEach((t, i) => add(parts.turns[i], t.role === 'assistant'));
  }
  const fullLength = inputIds.length;
  const truncated = fullLength > maxSeqLength;
  if (truncated) {
    inputIds.length = maxSeqLength;
    labels.length = maxSeqLength;
  }
  // The loss predicts position i from positions < i, so a target at position 0 trains nothing.
  if (!labels.some((l, i) => i > 0 && l !== IGNORE)) return { noTarget: true, fullLength };
  return { inputIds, labels, truncated };
}

/** Ids to feed before generating the next answer: system, the turns so far (answers with their
 *  end-of-turn tokens, as in training), and the last user turn, whose format ends with the
 *  assistant prefix (e.g. qwen's "<|im_start|>assistant\n"). */
export function encodePrompt(conv: Conversation, template: ChatTemplate, tok: Tok, opts: EncodeOptions = {}): number[] {
  const last = conv.turns[conv.turns.length - 1];
  if (!last || last.role !== 'user') throw new Error('encodePrompt: the conversation must end with a user turn');
  if (isModelTemplate(template)) return modelEncoder(template, tok, opts)(promptPieces(conv, template));
  const parts = conversationParts(conv, template, tok, opts);
  // A loop, not push(...ids): a message of a million tokens would overflow the call stack.
  const ids: number[] = parts.system ?? [];
  for (const turn of parts.turns) for (const id of turn) ids.push(id);
  return ids;
}

/** The ids that answer `conv` (which ends on a user turn) with `reply`, as training lays them out:
 *  the assistant part tokenized on its own (built-in), or what the conversation with the reply has
 *  after the prompt's ids (the model's chat_template). */
export function encodeReply(conv: Conversation, reply: string, template: ChatTemplate, tok: Tok, opts: EncodeOptions = {}): number[] {
  if (!isModelTemplate(template)) return encodeFormat(template.assistantFormat, reply, template, tok, opts);
  const prompt = encodePrompt(conv, template, tok, opts);
  const whole = encodePieces(trainingPieces({ ...conv, turns: [...conv.turns, { role: 'assistant', content: reply }] }, template), modelEncoder(template, tok, opts)).ids;
  let common = 0;
  while (common < prompt.length && prompt[common] === whole[common]) common++;
  return whole.slice(common);
}

/** The ids of each part on its own: the system part (with the prefix, when the template has one) and one list per turn. */
export function conversationParts(conv: Conversation, template: FormatTemplate, tok: Tok, opts: EncodeOptions = {}): { system?: number[]; turns: number[][] } {
  const system = systemText(conv, template);
  const turns = conv.turns.map((t) => encodeFormat(t.role === 'user' ? template.userFormat : template.assistantFormat, t.content, template, tok, opts));
  const prefix = template.prefixFormat === undefined ? undefined : encodeFormat(template.prefixFormat, '', template, tok, opts);
  const head = system === undefined ? prefix : [...(prefix ?? []), ...encodeFormat(template.systemFormat!, system, template, tok, opts)];
  return head === undefined ? { turns } : { system: head, turns };
}

/** One part: `format` filled with `content`, special tokens only where the template writes them. */
export function encodeFormat(format: string, content: string, template: FormatTemplate, tok: Tok, opts: EncodeOptions = {}): number[] {
  const parts = formatParts(format, content, { eos: tok.eosToken, bos: tok.bosToken });
  if (opts.parseSpecialTokens) return tok.encode(parts.map((p) => p.text).join(''));
  return tok.encodeParts(parts, templateMarkers(template, tok.eosToken, tok.bosToken));
}

/** How the model template's pieces become ids: the whole text at once, messages as text. */
function modelEncoder(template: ModelChatTemplate, tok: Tok, opts: EncodeOptions): (parts: TextPart[]) => number[] {
  if (opts.parseSpecialTokens) return (parts) => tok.encode(parts.map((p) => p.text).join(''));
  return (parts) => tok.encodeParts(parts, template.markers);
}

/** Decoded sample with trained spans in ⟦…⟧, for `sft train --dry-run`. Truncation to
 *  max_seq_length can end a sample inside a character (byte-level BPE and byte-fallback pieces
 *  spell one character with several tokens): with `truncated`, last tokens that decode to U+FFFD
 *  on their own are shown as a count instead, "⟨cut inside a character: 2 tokens⟩", after the text
 *  that is whole. (Without it a U+FFFD the data really holds is never taken for a cut.) */
export function renderMarkedSample(inputIds: ArrayLike<number>, labels: ArrayLike<number>, tok: Tok, opts: { truncated?: boolean } = {}): string {
  const ids = Array.from(inputIds);
  let out = '';
  let start = 0;
  for (let i = 1; i <= ids.length; i++) {
    const spanEnds = i === ids.length || (labels[i] !== IGNORE) !== (labels[start] !== IGNORE);
    if (!spanEnds) continue;
    const span = ids.slice(start, i);
    // Parts are tokenized whole (encodeConversation), so only the sample's end can split a character.
    const text = i === ids.length && opts.truncated ? decodeCut(span, tok) : tok.decode(span, { skipSpecialTokens: false });
    out += labels[start] !== IGNORE ? `⟦${text}⟧` : text;
    start = i;
  }
  return out;
}

const REPLACEMENT = '\uFFFD';

/** The ids' text; when it ends in U+FFFD that the last 1-3 tokens alone produce (a UTF-8 sequence
 *  of at most 4 bytes cut short), the text before them and the count of cut tokens. */
function decodeCut(ids: number[], tok: Tok): string {
  const text = tok.decode(ids, { skipSpecialTokens: false });
  if (!text.endsWith(REPLACEMENT)) return text;
  for (let k = 1; k <= Math.min(3, ids.length); k++) {
    const whole = tok.decode(ids.slice(0, ids.length - k), { skipSpecialTokens: false });
    const rest = text.startsWith(whole) ? text.slice(whole.length) : '';
    if (!whole.endsWith(REPLACEMENT) && rest !== '' && [...rest].every((c) => c === REPLACEMENT))
      return `${whole}⟨cut inside a character: ${k} token${k === 1 ? '' : 's'}⟩`;
  }
  return text;
}

// Firefly: a template without a system format has no system part; otherwise the record's system
// text (even "") wins over the template's default, and no system at all when neither exists.
function systemText(conv: Conversation, template: FormatTemplate): string | undefined {
  if (template.systemFormat === undefined) return undefined;
  return conv.system ?? template.defaultSystem;
}
