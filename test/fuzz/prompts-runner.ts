// The prompt-encoding fuzz cases (test/fuzz/prompts.test.ts runs this file in a child process and kills
// it when a case hangs). Each case builds text from special-token strings, huge strings, lone
// surrogates, NUL, RTL marks, combining characters and the like, and sends it through one of
//   data   encodeConversation (training samples), every template, parse_special_tokens on and off
//   serve  parseChatRequest (an OpenAI request body, its shape mutated too)
//   chat   ChatSession.send, two or three messages over one KV cache
// on one of the project's tokenizers. Every case must end in a result or a proper error (SftError;
// ApiError 4xx for serve). A result must hold exactly the special tokens the template writes for the
// same conversation with plain text, and text must decode back.
// Protocol on stdout: "> N" case N starts, "! {json}" case N failed, "= {json}" outcome counts,
// "# {json}" memory. Replay one case: node --import tsx test/fuzz/prompts-runner.ts <seed> <count> --case N
import { SftError } from '../../src/errors.js';
import { encodeConversation, encodeFormat, encodePrompt, IGNORE } from '../../src/data/encode.js';
import type { Conversation, Turn } from '../../src/data/formats.js';
import { BUILT_IN_NAMES, getTemplate } from '../../src/data/templates.js';

// The built-in templates (the model's own chat_template has its tests in test/data/chat-template.test.ts);
// firefly_legacy writes BOS, which not every tokenizer here names.
const TEMPLATE_NAMES = BUILT_IN_NAMES.filter((n) => n !== 'firefly_legacy');
import { parseChatRequest, type ModelContext } from '../../src/serve/request.js';
import { ApiError } from '../../src/serve/api-error.js';
import { ChatSession } from '../../src/chat/session.js';
import type { Tok } from '../../src/tokenizer/types.js';
import { rng, type Rand } from './corrupt.js';
import { fakeTok } from '../fixtures/data/fake-tok.js';
import { ByteTok, ScriptedModel, asNative } from '../chat/fakes.js';
import { realToks, markupIds } from '../tokenizer/real-toks.js';

interface Subject {
  name: string;
  tok: Tok;
  /** What decode(encodeText(s)) must give back, where the tokenizer promises it. */
  roundTrip?: (s: string) => string;
  /** Longest huge string worth sending (the real tokenizers take one to twenty seconds per megabyte;
   *  the tiny ones refuse a megabyte from their length bound). */
  huge: number;
}

const caseRand = (seed: number, i: number): Rand => rng(Math.imul(seed, 1_000_003) + i * 7919 + 1);

// ---- text -----------------------------------------------------------------------------------------

const PIECES = [
  '<|im_start|>', '<|im_end|>', '<|endoftext|>', '<s>', '</s>', '<unk>', '<pad>', '<reserved_102>', '<reserved_103>',
  '<reserved_106>', '<reserved_107>', '<|im_end|>\n<|im_start|>assistant\n', '<|im_end|>\n<|im_start|>user\n', '[INST]', '[/INST]',
  '<<SYS>>', '{content}', '{stop_token}', '$&', '$1', '<|im_', 'end|>', '<', '|>', '\u0000', '\ud800', '\udfff', '\udc00\ud800',
  '\u200f', '\u202e', '\u2066', '\u2069', '\ufeff', 'e\u0301', '\u0301\u0302\u0303', 'ﷺ', '＜/s＞', '＜reserved_103＞', '😀',
  '👩\u200d👩\u200d👧', '\r\n', '\n', '\t', ' ', '   ', 'hello', '你好', 'العربية', '<br>', '<0x0A>', '▁', 'Ġ', '<tool_call>', 'ℌ', '\u000b',
];

function randomUnits(r: Rand): string {
  let s = '';
  for (let k = 1 + r.int(6); k > 0; k--) s += String.fromCharCode(r.chance(0.5) ? r.int(0x80) : r.int(0x10000));
  return s;
}

function huge(r: Rand, max: number): string {
  const unit = r.pick(['x', '你', ' ', '<|im_end|>', '\u0301', 'a\ud800', 'hello world ', '</s>\n']);
  return unit.repeat(Math.max(1, Math.floor(max / unit.length)));
}

/** `limit`: the longest huge string; training data is tokenized whole (no context to refuse it early). */
function text(r: Rand, subject: Subject, limit = subject.huge): string {
  if (r.chance(0.01)) return huge(r, limit);
  let s = '';
  for (let k = 1 + r.int(8); k > 0; k--) s += r.chance(0.15) ? randomUnits(r) : r.pick(PIECES);
  if (r.chance(0.03)) s = s.repeat(1 + r.int(Math.max(1, Math.floor(subject.huge / 50_000))));
  return r.chance(0.05) ? '' : s;
}

// ---- checks ---------------------------------------------------------------------------------------

class Unexpected extends Error {}

function expect(ok: boolean, what: string): void {
  if (!ok) throw new Unexpected(what);
}

const protectedOf = new Map<Tok, Set<number>>();
function protectedIds(tok: Tok): Set<number> {
  let ids = protectedOf.get(tok);
  if (!ids) protectedOf.set(tok, (ids = markupIds(tok)));
  return ids;
}
const only = (ids: number[], keep: Set<number>) => ids.filter((id) => keep.has(id));
const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);
const plain = (c: Conversation): Conversation => ({ ...(c.system === undefined ? {} : { system: 'x' }), turns: c.turns.map((t) => ({ ...t, content: 'x' })) });

function validIds(ids: number[], tok: Tok): void {
  expect(ids.every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize), 'an id outside the vocabulary');
}

/** The protected ids of `ids` must be those of the same layout with plain text. */
function noForgery(ids: number[], want: number[], tok: Tok, where: string): void {
  const keep = protectedIds(tok);
  expect(same(only(ids, keep), only(want, keep)), `${where}: special tokens ${only(ids, keep)} where the template writes ${only(want, keep)}`);
}

function nothingLost(subject: Subject, s: string): void {
  if (!subject.roundTrip || s.length > 20_000) return;
  const back = subject.tok.decode(subject.tok.encodeText(s));
  expect(back === subject.roundTrip(s), `decode(encodeText(${JSON.stringify(s.slice(0, 80))})) = ${JSON.stringify(back.slice(0, 80))}`);
}

// ---- the three kinds ------------------------------------------------------------------------------

function conversation(r: Rand, subject: Subject, endsWithUser: boolean, limit = subject.huge): Conversation {
  const turns: Turn[] = [];
  const exchanges = 1 + r.int(3);
  for (let k = 0; k < exchanges; k++) {
    turns.push({ role: 'user', content: text(r, subject, limit) });
    if (k < exchanges - 1 || !endsWithUser) turns.push({ role: 'assistant', content: text(r, subject, limit) });
  }
  return r.chance(0.5) ? { system: text(r, subject, limit), turns } : { turns };
}

function dataCase(r: Rand, subject: Subject): string {
  const { tok } = subject;
  const template = getTemplate(r.pick(TEMPLATE_NAMES));
  const conv = conversation(r, subject, false, Math.min(subject.huge, 100_000));
  const maxSeqLength = r.pick([2, 16, 4096, 10_000_000]);
  const parseSpecialTokens = r.chance(0.1);
  let enc;
  try {
    enc = encodeConversation(conv, template, tok, maxSeqLength, { parseSpecialTokens });
  } catch (err) {
    if (err instanceof SftError && /names none/.test(err.message)) return 'no-eos';
    throw err;
  }
  if (enc.noTarget) return 'no-target';
  expect(enc.inputIds.length <= maxSeqLength && enc.labels.length === enc.inputIds.length, 'lengths');
  validIds(enc.inputIds, tok);
  expect(enc.labels.every((l, i) => l === IGNORE || l === enc.inputIds[i]), 'a label that is not its input id');
  if (!parseSpecialTokens && !enc.truncated) {
    const want = encodeConversation(plain(conv), template, tok, 1 << 30);
    if (!want.noTarget) noForgery(enc.inputIds, want.inputIds, tok, `data ${template.name}`);
  }
  for (const t of conv.turns) nothingLost(subject, t.content);
  return enc.truncated ? 'truncated' : 'ok';
}

function messagesOf(r: Rand, subject: Subject): unknown {
  if (r.chance(0.03)) return r.pick([null, 'hi', [], {}, [null], [{ role: 'user' }]]);
  const conv = conversation(r, subject, true);
  const content = (s: string): unknown => {
    if (r.chance(0.02)) return r.pick([null, 7, { type: 'text' }, [{ type: 'image_url' }]]);
    return r.chance(0.2) ? [{ type: 'text', text: s }, { type: 'text', text: text(r, subject) }] : s;
  };
  const msgs: unknown[] = conv.turns.map((t) => ({ role: r.chance(0.02) ? r.pick(['tool', 'system', 'bot']) : t.role, content: content(t.content) }));
  if (conv.system !== undefined) msgs.unshift({ role: r.chance(0.5) ? 'system' : 'developer', content: content(conv.system) });
  if (r.chance(0.02)) for (let k = 0; k < 500; k++) msgs.splice(msgs.length - 1, 0, { role: 'user', content: 'u' }, { role: 'assistant', content: 'a' });
  return msgs;
}

function serveCase(r: Rand, subject: Subject): string {
  const { tok } = subject;
  const ctx: ModelContext = {
    id: 'm', tok, template: getTemplate(r.pick(TEMPLATE_NAMES)), maxContext: r.pick([32, 512, 32_768]), vocabSize: tok.vocabSize,
    parseSpecialTokens: r.chance(0.1),
  };
  const messages = messagesOf(r, subject);
  try {
    const req = parseChatRequest({ model: 'm', messages, ...(r.chance(0.3) ? { max_tokens: r.pick([1, 16, 100_000]) } : {}) }, ctx);
    validIds(req.promptIds, tok);
    expect(req.promptIds.length + req.options.maxNewTokens <= ctx.maxContext, 'prompt and completion past the context');
    if (!ctx.parseSpecialTokens) {
      const conv = toConv(messages);
      noForgery(req.promptIds, encodePrompt(plain(conv), ctx.template, tok), tok, `serve ${ctx.template.name}`);
    }
    return 'ok';
  } catch (err) {
    if (err instanceof ApiError && err.status >= 400 && err.status < 500) return err.code === 'context_length_exceeded' ? 'too-long' : 'bad-request';
    if (err instanceof SftError && /names none/.test(err.message)) return 'no-eos';
    throw err;
  }
}

/** The conversation parseChatRequest accepted, rebuilt for the plain-text comparison. */
function toConv(messages: unknown): Conversation {
  const list = messages as { role: string; content: unknown }[];
  const turns: Turn[] = [];
  let system: string | undefined;
  for (const m of list) {
    const c = typeof m.content === 'string' ? m.content : 'x';
    if (m.role === 'system' || m.role === 'developer') system = c;
    else turns.push({ role: m.role as Turn['role'], content: c });
  }
  return system === undefined ? { turns } : { system, turns };
}

async function chatCase(r: Rand, subject: Subject): Promise<string> {
  const { tok } = subject;
  if (tok.eosId === undefined) return 'no-eos';
  const template = getTemplate(r.pick(['qwen', 'baichuan', 'baichuan2', 'llama2', 'default']));
  if (template.name === 'default' && tok.eosToken === undefined) return 'no-eos';
  const replyIds = tok.encode('ok');
  const sends = 1 + r.int(3);
  const script = Array.from({ length: sends }, () => [...replyIds, tok.eosId!]).flat();
  // Logits only as wide as the scripted ids need: the fake tokenizer's id space is 1.1 million wide.
  const model = new ScriptedModel(Math.max(...script) + 1, script);
  const maxContext = r.pick([48, 256, 4096]);
  const parseSpecialTokens = r.chance(0.1);
  const s = new ChatSession(asNative(model), tok, {
    template, maxContext, maxNewTokens: 4, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 0,
    ...(r.chance(0.3) ? { system: text(r, subject) } : {}), parseSpecialTokens,
  });
  let outcome = 'ok';
  for (let k = 0; k < sends; k++) {
    const message = text(r, subject);
    const feedsBefore = model.feeds.length;
    const resetsBefore = model.resets;
    try {
      for await (const _ of s.send(message)) void _;
    } catch (err) {
      if (err instanceof SftError && /context holds/.test(err.message)) {
        outcome = 'too-long';
        continue;
      }
      throw err;
    }
    const prompt = model.feeds[feedsBefore];
    validIds(prompt, tok);
    if (parseSpecialTokens) continue;
    const kept = s.conversation.turns.slice(0, -1);
    const want = model.resets > resetsBefore
      ? encodePrompt(plain({ ...s.conversation, turns: kept }), template, tok)
      : [...encodeFormat(template.assistantFormat, 'x', template, tok), ...encodeFormat(template.userFormat, 'x', template, tok)];
    noForgery(prompt, want, tok, `chat ${template.name}`);
  }
  return outcome;
}

// ---- main -----------------------------------------------------------------------------------------

/** Lone surrogates as U+FFFD, as UTF-8 encoding writes them (String.prototype.toWellFormed, ES2024). */
const wellFormed = (s: string): string => s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');

async function subjects(): Promise<Subject[]> {
  const list: Subject[] = [
    // No length bound on these two: every huge string is tokenized whole.
    { name: 'fake', tok: fakeTok(), roundTrip: (s) => s, huge: 300_000 },
    { name: 'bytes', tok: new ByteTok(), roundTrip: wellFormed, huge: 100_000 },
  ];
  for (const { name, tok } of (await realToks()).toks) {
    const tiny = name.startsWith('tiny');
    list.push({ name, tok, ...(tiny ? { roundTrip: wellFormed } : {}), huge: tiny ? 1_000_000 : 30_000 });
  }
  return list;
}

async function main(): Promise<void> {
  const [seedText, countText, flag, only] = process.argv.slice(2);
  const seed = Number(seedText), n = Number(countText);
  const all = await subjects();
  const first = flag === '--case' ? Number(only) : 0;
  const last = flag === '--case' ? first + 1 : n;
  const counts: Record<string, number> = {};
  const rssStart = process.memoryUsage().rss;
  let rssPeak = rssStart;
  let failures = 0;
  for (let i = first; i < last; i++) {
    process.stdout.write(`> ${i}\n`);
    const r = caseRand(seed, i);
    const subject = all[i % all.length];
    const kind = r.pick(['data', 'serve', 'chat'] as const);
    try {
      const outcome = kind === 'data' ? dataCase(r, subject) : kind === 'serve' ? serveCase(r, subject) : await chatCase(r, subject);
      counts[`${kind} ${outcome}`] = (counts[`${kind} ${outcome}`] ?? 0) + 1;
      if (flag === '--case') process.stdout.write(`case ${i}: ${subject.name} ${kind} ${outcome}\n`);
    } catch (err) {
      counts.UNEXPECTED = (counts.UNEXPECTED ?? 0) + 1;
      const e = err as Error;
      if (++failures <= 20) {
        const stack = err instanceof Unexpected ? undefined : e?.stack?.split('\n').slice(0, 8).join('\n');
        process.stdout.write(`! ${JSON.stringify({ case: i, what: `${subject.name} ${kind}`, type: e?.constructor?.name, message: String(e?.message).slice(0, 300), stack })}\n`);
      }
    }
    if (i % 20 === 0) rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  }
  rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  process.stdout.write(`# ${JSON.stringify({ rssStartMB: Math.round(rssStart / 2 ** 20), rssPeakMB: Math.round(rssPeak / 2 ** 20), subjects: all.map((s) => s.name) })}\n`);
  process.stdout.write(`= ${JSON.stringify(counts)}\n`);
}

await main();
