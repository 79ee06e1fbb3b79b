// The model's own chat template (template name "chat_template"): the Jinja template of
// tokenizer_config.json ("chat_template", a string or a list of {name, template}) or
// chat_template.jinja, rendered as transformers' apply_chat_template renders it: the variables are
// messages, add_generation_prompt, tools = documents = None and the tokenizer's special tokens
// (bos_token, eos_token, ...); the whole rendered string is tokenized at once, as
// apply_chat_template(tokenize=True) does, so the ids are transformers' own.
//
// What is trained (labels = ids), everything else being context (-100):
// - a template with {% generation %} blocks: the text inside them, as transformers'
//   return_assistant_tokens_mask marks it;
// - otherwise, for each assistant message, the text between the prompt that asks for it
//   (the messages before it rendered with add_generation_prompt=true, e.g. "...<|im_start|>assistant\n")
//   and the messages up to it rendered without (which ends after its content and whatever the template
//   closes the turn with, e.g. "<|im_end|>\n"). That is the message's content and its end-of-turn
//   text: exactly what the model must write when chat or serve give it that prompt, and the same
//   spans as Firefly's qwen template ("{content}<|im_end|>\n") for a ChatML template. A template that
//   renders a conversation's beginning differently from the whole (one that drops earlier turns'
//   reasoning, say) has no such spans and is refused.
// A token that straddles a span's edge is trained (transformers marks every token holding a
// character of a generation block).
//
// Special tokens come only from the template: the messages are rendered as placeholders (Unicode
// noncharacters), the output is cut there, and the contents go in as text parts (Tok.encodeParts).
// The output with the real contents must equal the placeholder output with them put in, so a
// template that looks into the contents (one that trims them, splits off "<think>") is caught.
import { Template } from '@huggingface/jinja';
import { SftError } from '../errors.js';
import type { TextPart, Tok } from '../tokenizer/types.js';
import type { Conversation } from './formats.js';
import { builtInMarkers, BUILT_IN_NAMES, CHAT_TEMPLATE, getTemplate, type ChatTemplate, type FormatTemplate } from './templates.js';

export interface ModelChatTemplate {
  kind: 'jinja';
  name: typeof CHAT_TEMPLATE;
  /** The Jinja source as the model ships it. */
  source: string;
  /** Whether a system message's content appears in the output (otherwise --system is ignored). */
  hasSystem: boolean;
  /** What the template writes after an answer's content to close the turn (e.g. "<|im_end|>\n"). */
  closing: string;
  /** The closing without its surrounding whitespace: generation stops there. */
  stopWords: string[];
  compiled: Template;
  /** The variables transformers passes besides messages and add_generation_prompt. */
  vars: Record<string, unknown>;
  /** The template marks the trained text itself with {% generation %}. */
  generationTags: boolean;
  markers: string[];
}

interface Message {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** A piece of the rendered text: the template's own, or a message's content; trained or not. */
interface Piece extends TextPart {
  trained: boolean;
}

const MSG_OPEN = '\uFDD0';
const MSG_CLOSE = '\uFDD1';
const GEN_OPEN = '\uFDD2';
const GEN_CLOSE = '\uFDD3';
const RESERVED = /[\uFDD0-\uFDD3]/;
const CUTS = /\uFDD0(\d+)\uFDD1|\uFDD2|\uFDD3/g;
const GENERATION_TAG = /(^[ \t]*)?\{%(-?)\s*(end)?generation\s*(-?)%\}(\n)?/gm;

/** The template name a model folder gets when the config names none: its own chat template. */
export function resolveTemplate(name: string, tok: Tok): ChatTemplate {
  if (name !== CHAT_TEMPLATE) return getTemplate(name);
  if (tok.chatTemplate === undefined)
    throw new SftError(
      `template "${CHAT_TEMPLATE}": the model has no chat template (no "chat_template" in tokenizer_config.json, no chat_template.jinja) — ` +
        `choose template_name: ${BUILT_IN_NAMES.join(', ')}`,
    );
  // A folder sft merged carries its training template as Jinja: the built-in encoder is used, so
  // chat on the merged model tokenizes exactly as the training did.
  const builtIn = builtInFor(tok.chatTemplate);
  return builtIn ?? compileChatTemplate(tok.chatTemplate, tok);
}

export function compileChatTemplate(source: string, tok: Tok): ModelChatTemplate {
  const generationTags = GENERATION_TAG.test(source);
  GENERATION_TAG.lastIndex = 0;
  // transformers' renderer runs with trim_blocks and lstrip_blocks, which apply to these tags too.
  const prepared = source.replace(GENERATION_TAG, (_m, _lead, l: string, end: string | undefined, r: string) => `{{${l} "${end ? GEN_CLOSE : GEN_OPEN}" ${r}}}`);
  let compiled: Template;
  try {
    compiled = new Template(prepared);
  } catch (err) {
    throw new SftError(`the model's chat_template is not a Jinja template sft can read (${(err as Error).message}) — choose a built-in template_name: ${BUILT_IN_NAMES.join(', ')}`);
  }
  const vars: Record<string, unknown> = { tools: null, documents: null, ...(tok.specialTokensMap ?? {}) };
  if (tok.bosToken !== undefined) vars.bos_token ??= tok.bosToken;
  if (tok.eosToken !== undefined) vars.eos_token ??= tok.eosToken;
  const markers = [...new Set([...builtInMarkers(), ...[tok.bosToken, tok.eosToken].filter((t): t is string => t !== undefined)])];
  const t: ModelChatTemplate = { kind: 'jinja', name: CHAT_TEMPLATE, source, hasSystem: false, closing: '', stopWords: [], compiled, vars, generationTags, markers };
  // Probes: what closes an answer, and whether a system message is written at all.
  try {
    const ask = strip(render(t, [{ role: 'user', content: '' }], true));
    const whole = strip(render(t, [{ role: 'user', content: '' }, { role: 'assistant', content: '' }], false));
    const after = whole.indexOf(placeholder(1));
    if (whole.startsWith(ask) && after >= 0) t.closing = whole.slice(after + placeholder(1).length);
  } catch {
    // A template that cannot render this probe has no closing sft can tell; only EOS stops.
  }
  const stop = t.closing.trim();
  if (stop) t.stopWords = [stop];
  try {
    t.hasSystem = render(t, [{ role: 'system', content: '' }, { role: 'user', content: '' }], true).includes(placeholder(0));
  } catch {
    t.hasSystem = false;
  }
  return t;
}

/** The conversation as messages: the system message (when the record has one), then the turns. */
function messagesOf(conv: Conversation): Message[] {
  const msgs: Message[] = conv.system === undefined ? [] : [{ role: 'system', content: conv.system }];
  for (const t of conv.turns) msgs.push({ role: t.role, content: t.content });
  for (const m of msgs) {
    if (RESERVED.test(m.content))
      throw new SftError(`a ${m.role} message holds a Unicode noncharacter U+FDD0..U+FDD3, which sft uses to find the messages in the chat_template's output — remove it`);
  }
  return msgs;
}

/** The pieces of the conversation rendered for training, with the trained ones marked. */
export function trainingPieces(conv: Conversation, t: ModelChatTemplate): Piece[] {
  return withTrimRetry(messagesOf(conv), (msgs) => trainingLayout(msgs, t));
}

function trainingLayout(msgs: Message[], t: ModelChatTemplate): Piece[] {
  let full = render(t, msgs, false);
  if (!t.generationTags) {
    const spans: [number, number][] = [];
    msgs.forEach((m, i) => {
      if (m.role !== 'assistant') return;
      const before = strip(render(t, msgs.slice(0, i), true));
      const upTo = i === msgs.length - 1 ? full : render(t, msgs.slice(0, i + 1), false);
      if (!upTo.startsWith(before) || !full.startsWith(upTo))
        throw new SftError(
          `the model's chat_template renders the conversation up to answer ${spans.length + 1} differently from the whole conversation ` +
            '(it rewrites earlier turns), so the trained spans cannot be told — choose a built-in template_name',
        );
      const at = upTo.indexOf(placeholder(i), before.length);
      if (at < 0) throw new SftError(`the model's chat_template does not write answer ${spans.length + 1} after the prompt that asks for it — choose a built-in template_name`);
      spans.push([before.length, upTo.length]);
    });
    // Marks put in from the end, so earlier positions stay valid.
    for (const [s, e] of spans.reverse()) full = full.slice(0, s) + GEN_OPEN + full.slice(s, e) + GEN_CLOSE + full.slice(e);
  }
  checkContents(t, msgs, full, false);
  return pieces(full, msgs);
}

/** The pieces of the prompt that asks for the next answer (add_generation_prompt=true). */
export function promptPieces(conv: Conversation, t: ModelChatTemplate): Piece[] {
  return withTrimRetry(messagesOf(conv), (msgs) => {
    const text = render(t, msgs, true);
    checkContents(t, msgs, text, true);
    return pieces(text, msgs).map((p) => ({ ...p, trained: false }));
  });
}

/** Templates often trim the contents (Llama-2's `content.strip()`): when the contents are not
 *  already trimmed and the output changes them, the trimmed contents are what the template writes. */
function withTrimRetry(msgs: Message[], layout: (msgs: Message[]) => Piece[]): Piece[] {
  try {
    return layout(msgs);
  } catch (err) {
    if (!(err instanceof ContentsChanged) || msgs.every((m) => m.content === m.content.trim())) throw err;
    return layout(msgs.map((m) => ({ ...m, content: m.content.trim() })));
  }
}

class ContentsChanged extends SftError {}

/** The markers (besides special tokens) the messages may not produce under this template. */
export function modelTemplateMarkers(t: ModelChatTemplate): string[] {
  return t.markers;
}

function placeholder(i: number): string {
  return `${MSG_OPEN}${i}${MSG_CLOSE}`;
}

function strip(text: string): string {
  return text.replace(/[\uFDD2\uFDD3]/g, '');
}

function render(t: ModelChatTemplate, msgs: Message[], addGenerationPrompt: boolean, real = false): string {
  const messages = msgs.map((m, i) => ({ role: m.role, content: real ? m.content : placeholder(i) }));
  try {
    return t.compiled.render({ ...t.vars, messages, add_generation_prompt: addGenerationPrompt });
  } catch (err) {
    throw new SftError(`the model's chat_template failed on this conversation: ${(err as Error).message}`);
  }
}

/** The output with the real contents must be the placeholder output with them put in. */
function checkContents(t: ModelChatTemplate, msgs: Message[], withPlaceholders: string, addGenerationPrompt: boolean): void {
  const expected = strip(withPlaceholders).replace(CUTS, (_m, i: string) => msgs[Number(i)].content);
  const real = strip(render(t, msgs, addGenerationPrompt, true));
  if (real !== expected)
    throw new ContentsChanged(
      "the model's chat_template changes the message contents (it trims, splits or tests them), so sft cannot keep them apart from the template's own text — choose a built-in template_name",
    );
}

function pieces(text: string, msgs: Message[]): Piece[] {
  const out: Piece[] = [];
  let trained = false;
  let last = 0;
  const push = (p: Piece) => {
    if (p.text.length > 0) out.push(p);
  };
  for (const m of text.matchAll(CUTS)) {
    push({ text: text.slice(last, m.index), fromTemplate: true, trained });
    if (m[1] !== undefined) push({ text: msgs[Number(m[1])].content, trained });
    else trained = m[0] === GEN_OPEN;
    last = m.index! + m[0].length;
  }
  push({ text: text.slice(last), fromTemplate: true, trained });
  return out;
}

/** Pieces -> ids and a trained flag per id. The ids are the whole text's (encodeParts); where a
 *  piece boundary falls is found by tokenizing each run of equally-trained pieces on its own, and
 *  where that does not add up to the whole (a tokenizer that merges across the boundary, or puts a
 *  dummy prefix on every text), by tokenizing the text up to each boundary. */
export function encodePieces(ps: Piece[], encode: (parts: TextPart[]) => number[]): { ids: number[]; trained: boolean[] } {
  const groups: { parts: TextPart[]; trained: boolean }[] = [];
  for (const p of ps) {
    const last = groups[groups.length - 1];
    const part: TextPart = p.fromTemplate ? { text: p.text, fromTemplate: true } : { text: p.text };
    if (last && last.trained === p.trained) last.parts.push(part);
    else groups.push({ parts: [part], trained: p.trained });
  }
  const ids = encode(groups.flatMap((g) => g.parts));
  const trained: boolean[] = new Array(ids.length).fill(false);
  if (!groups.some((g) => g.trained)) return { ids, trained };
  const apart = groups.map((g) => encode(g.parts));
  if (apart.reduce((n, a) => n + a.length, 0) === ids.length && apart.flat().every((id, i) => id === ids[i])) {
    let at = 0;
    for (const [k, a] of apart.entries()) {
      if (groups[k].trained) trained.fill(true, at, at + a.length);
      at += a.length;
    }
    return { ids, trained };
  }
  // Boundary k (before group k): the token index where it falls, and whether a token straddles it.
  const edges: { at: number; straddles: boolean }[] = [{ at: 0, straddles: false }];
  for (let k = 1; k < groups.length; k++) {
    const prefix = encode(groups.slice(0, k).flatMap((g) => g.parts));
    let common = 0;
    while (common < prefix.length && common < ids.length && prefix[common] === ids[common]) common++;
    edges.push({ at: common, straddles: common < prefix.length });
  }
  edges.push({ at: ids.length, straddles: false });
  groups.forEach((g, k) => {
    if (!g.trained) return;
    const end = edges[k + 1].straddles ? edges[k + 1].at + 1 : edges[k + 1].at;
    trained.fill(true, edges[k].at, Math.min(end, ids.length));
  });
  return { ids, trained };
}

// ---- built-in templates as Jinja, for the folder `sft merge` writes ----

const JINJA_CACHE = new Map<string, string>();

/** A built-in template as a Jinja chat_template that renders the same text as the built-in
 *  formats (system message or the template's default system, then user and assistant turns; a
 *  template without a system part drops a system message, as Firefly does). The user format ends
 *  with the assistant prefix, so add_generation_prompt adds nothing. */
export function builtInJinja(t: FormatTemplate): string {
  const hit = JINJA_CACHE.get(t.name);
  if (hit) return hit;
  const fill = (format: string, content: string) =>
    format
      .split(/(\{content\}|\{stop_token\}|\{bos_token\})/)
      .filter((p) => p.length > 0)
      .map((p) => (p === '{content}' ? content : p === '{stop_token}' ? 'eos_token' : p === '{bos_token}' ? 'bos_token' : JSON.stringify(p)))
      .join(' + ');
  let j = '';
  if (t.prefixFormat !== undefined) j += `{{- ${fill(t.prefixFormat, "''")} -}}`;
  j +=
    "{%- if messages and messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}" +
    `{%- else -%}{%- set system = ${t.defaultSystem === undefined ? 'none' : JSON.stringify(t.defaultSystem)} -%}{%- set loop_messages = messages -%}{%- endif -%}`;
  if (t.systemFormat !== undefined) j += `{%- if system is not none -%}{{- ${fill(t.systemFormat, 'system')} -}}{%- endif -%}`;
  j +=
    "{%- for message in loop_messages -%}{%- if message['role'] == 'user' -%}" +
    `{{- ${fill(t.userFormat, "message['content']")} -}}` +
    "{%- elif message['role'] == 'assistant' -%}" +
    `{{- ${fill(t.assistantFormat, "message['content']")} -}}` +
    '{%- endif -%}{%- endfor -%}';
  JINJA_CACHE.set(t.name, j);
  return j;
}

/** The built-in template whose Jinja form is exactly `source`, if any. */
function builtInFor(source: string): FormatTemplate | undefined {
  for (const name of BUILT_IN_NAMES) {
    const t = getTemplate(name);
    if (builtInJinja(t) === source) return t;
  }
  return undefined;
}
