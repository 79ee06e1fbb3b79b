// Few-shot prompts, character for character as each benchmark's evaluation code writes them:
//   C-Eval  hkust-nlp/ceval:code/evaluator_series/evaluators/llama.py (answer-only, "completion
//           mode" in resources/tutorial.md). The header names the subject in Chinese, as the tutorial
//           says; the repository's scripts pass the file handle there ("computer_network"), a
//           leftover the tutorial corrects.
//   MMLU    baichuan-inc/Baichuan-7B:evaluation/evaluate_mmlu.py (= hendrycks/test:evaluate.py):
//           "about" + " word" per word of the handle, hence two spaces; the answer follows "Answer:"
//           after a space.
//   CMMLU   haonan-li/CMMLU:src/mp_utils.py (answer-only): "题目：" before each question.
// The answer is the option letter whose next-token logit is highest after the prompt. Its token id
// is the last id of tokenize(question + letter text), the letter written as the shots write it
// ("A" after "答案：", " A" after "Answer:"): tokenizers differ on dummy prefixes and spaces, and
// this is the token a model that learnt the shots' pattern predicts. Where a tokenizer writes the
// letter text as more than one token, the four spellings share the tokens before the letter (" A"
// as " " + "A": the prompt gets the " " appended) or merge the letter into the cue's last token
// ("：A" as one token: that token leaves the prompt and the four merged tokens are compared). The
// ranking is the same as comparing the whole strings' probabilities, since the shared part has the
// same probability for all four.
//
// Chat mode (--template): the tutorial's prompt for chat models. The header is the system message
// (or starts the first user turn when the template has no system part, as the repository's
// ChatGLM evaluator does), each shot is a user turn ending at the answer cue with the letter as the
// assistant's reply, and the question is the last user turn; turns are rendered with the Firefly
// template exactly as `sft train` renders them.
import type { Tok } from '../tokenizer/types.js';
import type { Conversation } from '../data/formats.js';
import { encodePrompt, encodeReply } from '../data/encode.js';
import { fillFormat, hasSystemPart, isModelTemplate, type ChatTemplate } from '../data/templates.js';
import { SftError } from '../errors.js';
import { LETTERS, type BenchmarkName, type Letter, type Question, type Subject } from './datasets.js';

export interface PromptStyle {
  /** First line(s) of the prompt, with the blank line after it. */
  header(subject: Subject): string;
  /** A question, its options and the answer cue, without the answer. */
  body(q: Question): string;
  /** What follows the cue when the answer is given. */
  answerText(letter: Letter): string;
  /** How shots are dropped when the prompt is longer than the context: the last ones first
   *  (C-Eval's tutorial, hendrycks/Baichuan), or every longest one at a time (CMMLU's gen_prompt). */
  drop: 'last' | 'longest';
}

const options = (q: Question) => LETTERS.map((l, i) => `\n${l}. ${q.options[i]}`).join('');

export const PROMPT_STYLES: Record<BenchmarkName, PromptStyle> = {
  ceval: {
    header: (s) => `以下是中国关于${s.nameZh ?? s.name}考试的单项选择题，请选出其中的正确答案。\n\n`,
    body: (q) => `${q.question}${options(q)}\n答案：`,
    answerText: (l) => l,
    drop: 'last',
  },
  mmlu: {
    header: (s) => `The following are multiple choice questions (with answers) about ${s.id.split('_').map((w) => ' ' + w).join('')}.\n\n`,
    body: (q) => `${q.question}${options(q)}\nAnswer:`,
    answerText: (l) => ' ' + l,
    drop: 'last',
  },
  cmmlu: {
    header: (s) => `以下是关于${s.nameZh ?? s.name}的单项选择题，请直接给出正确答案的选项。\n\n`,
    body: (q) => `题目：${q.question}${options(q)}\n答案是：`,
    answerText: (l) => l,
    drop: 'longest',
  },
};

/** A shot: the question with its answer, then a blank line. */
export function shotText(style: PromptStyle, q: Question): string {
  if (!q.answer) throw new SftError(`few-shot example ${q.id} has no answer`);
  return style.body(q) + style.answerText(q.answer) + '\n\n';
}

/** The completion-mode prompt: header, shots, the question up to the answer cue. */
export function rawPrompt(style: PromptStyle, subject: Subject, shots: Question[], q: Question): string {
  return style.header(subject) + shots.map((s) => shotText(style, s)).join('') + style.body(q);
}

/** The chat-mode conversation; it ends on the question's user turn. */
export function chatConversation(style: PromptStyle, template: ChatTemplate, subject: Subject, shots: Question[], q: Question): Conversation {
  const header = style.header(subject);
  const turns: Conversation['turns'] = [];
  // Contents trimmed as `sft train` trims them (Firefly does), so training on these turns matches.
  for (const s of shots) turns.push({ role: 'user', content: style.body(s).trim() }, { role: 'assistant', content: style.answerText(s.answer!).trim() });
  turns.push({ role: 'user', content: style.body(q).trim() });
  if (hasSystemPart(template)) return { system: header.trimEnd(), turns };
  turns[0] = { role: 'user', content: header + turns[0].content };
  return { turns };
}

export interface PromptOptions {
  style: PromptStyle;
  tok: Tok;
  /** Chat mode when set. */
  template?: ChatTemplate;
  /** Put the tokenizer's BOS id first. */
  bos: boolean;
  /** Longest prompt in tokens (the model's context). */
  maxContext: number;
}

export interface BuiltPrompt {
  /** The tokens to feed; the next-token logits after them hold the answer. */
  ids: number[];
  /** Shots that fit (shots given minus shots dropped). */
  shotsUsed: number;
  /** Even with no shots the prompt was too long: its first tokens were cut. */
  truncated: boolean;
  /** Token ids of A, B, C, D at the answer position. */
  letterIds: number[];
  /** The four letters could not be read as one next token after a shared prompt (a tokenizer that
   *  spells them differently): the last token of each was compared, which means little. */
  letterMismatch: boolean;
}

/** Renders the prompt for q with as many of `shots` as fit in maxContext tokens. */
export function buildPrompt(o: PromptOptions, subject: Subject, shots: Question[], q: Question): BuiltPrompt {
  const slot = answerSlot(o, q);
  const budget = o.maxContext - slot.append.length;
  const encode = (s: Question[]) => {
    const body = o.template ? encodePrompt(chatConversation(o.style, o.template, subject, s, q), o.template, o.tok) : o.tok.encode(rawPrompt(o.style, subject, s, q));
    return o.bos ? [bosId(o.tok), ...body] : body;
  };
  let kept = shots;
  let ids = encode(kept);
  while (ids.length > budget && kept.length > 0) {
    kept = o.style.drop === 'last' ? kept.slice(0, -1) : withoutLongest(o, kept);
    ids = encode(kept);
  }
  const truncated = ids.length > budget;
  // Nothing left to drop: keep the end, which holds the question and the answer cue.
  if (truncated) ids = ids.slice(ids.length - budget);
  let mismatch = slot.mismatch;
  if (slot.drop.length) {
    const tail = ids.slice(ids.length - slot.drop.length);
    if (tail.every((id, i) => id === slot.drop[i])) ids = ids.slice(0, ids.length - slot.drop.length);
    else mismatch = true;
  }
  return { ids: [...ids, ...slot.append], shotsUsed: kept.length, truncated, letterIds: slot.letterIds, letterMismatch: mismatch };
}

/** CMMLU's rule: remove every shot whose own token count is the largest. */
function withoutLongest(o: PromptOptions, shots: Question[]): Question[] {
  const lens = shots.map((s) => o.tok.encode(shotText(o.style, s)).length);
  const max = Math.max(...lens);
  return shots.filter((_, i) => lens[i] !== max);
}

interface AnswerSlot {
  /** Tokens the four letter spellings share after the prompt (e.g. " "): appended to it. */
  append: number[];
  /** Last prompt tokens the letters merge into (e.g. "：" of "：A"): taken off the prompt. */
  drop: number[];
  letterIds: number[];
  mismatch: boolean;
}

/** Where the letter token sits relative to the prompt's end, from the question alone (the tokens
 *  around the answer cue do not depend on the header and shots before it). */
function answerSlot(o: PromptOptions, q: Question): AnswerSlot {
  let slot: AnswerSlot;
  if (o.template) {
    // The reply is tokenized on its own, as in training: the letter follows what all four share.
    const t = o.template;
    const question = { turns: [{ role: 'user' as const, content: o.style.body(q).trim() }] };
    const replies = LETTERS.map((l) =>
      isModelTemplate(t) ? encodeReply(question, o.style.answerText(l).trim(), t, o.tok) : o.tok.encode(fillFormat(t.assistantFormat, o.style.answerText(l).trim(), o.tok.eosToken)),
    );
    const c = commonPrefix(replies, Math.min(...replies.map((r) => r.length)) - 1);
    slot = { append: replies[0].slice(0, c), drop: [], letterIds: replies.map((r) => r[c]), mismatch: false };
  } else {
    const text = o.style.body(q);
    const body = o.tok.encode(text);
    const spelled = LETTERS.map((l) => o.tok.encode(text + o.style.answerText(l)));
    const c = commonPrefix(spelled, Infinity);
    const letterIds = spelled.map((t) => t[t.length - 1]);
    const shared = spelled[0].slice(0, c);
    const oneToken = spelled.every((t) => t.length === c + 1);
    if (oneToken && c >= body.length && body.every((id, i) => id === shared[i])) slot = { append: shared.slice(body.length), drop: [], letterIds, mismatch: false };
    else if (oneToken && c < body.length && shared.every((id, i) => id === body[i])) slot = { append: [], drop: body.slice(c), letterIds, mismatch: false };
    else slot = { append: [], drop: [], letterIds, mismatch: true };
  }
  if (new Set(slot.letterIds).size !== slot.letterIds.length) {
    throw new SftError(`the tokenizer gives the answer letters A-D the token ids ${slot.letterIds.join(', ')}: they must be four different tokens to compare them`);
  }
  return slot;
}

/** Length of the prefix all the lists share, at most `max`. */
function commonPrefix(lists: number[][], max: number): number {
  let n = 0;
  while (n < max && n < lists[0].length && lists.every((l) => n < l.length && l[n] === lists[0][n])) n++;
  return n;
}

function bosId(tok: Tok): number {
  if (tok.bosId === undefined) throw new SftError('--bos: the tokenizer names no BOS token; run without --bos');
  return tok.bosId;
}
