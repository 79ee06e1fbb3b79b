// One data record (a JSONL line, an element of a JSON array) -> one Conversation. The format is detected per record, so files may mix them:
//   Firefly/MOSS  {"conversation":[{"human","assistant"},...], "system"?}
//   ChatML        {"messages":[{"role","content"},...]}   (Qwen2.5 adds "type":"chatml")
//   alpaca        {"instruction","input"?,"output","system"?,"history"?}
// Contents are trimmed, as Firefly trims them before formatting.
import { SftError } from '../errors.js';

export type Role = 'user' | 'assistant';
export interface Turn {
  role: Role;
  content: string;
}
/** Turns alternate user, assistant, user, ... A training conversation ends on an assistant turn;
 *  a prompt for generation ends on a user turn. `system` undefined means "the template's default". */
export interface Conversation {
  system?: string;
  turns: Turn[];
}

const SHAPES =
  'expected one of: Firefly {"conversation":[{"human":…,"assistant":…}]}, ' +
  'ChatML {"messages":[{"role":…,"content":…}]}, alpaca {"instruction":…,"input":…,"output":…}';

export function toConversation(record: unknown, where: string): Conversation {
  if (!isObject(record)) throw new SftError(`${where}: the record is ${describe(record)}, not an object — ${SHAPES}`);
  let conv: Conversation;
  if ('conversation' in record) conv = fromFirefly(record, where);
  else if ('messages' in record) conv = fromChatml(record, where);
  else if ('instruction' in record) conv = fromAlpaca(record, where);
  else {
    const keys = Object.keys(record).slice(0, 6).map((k) => JSON.stringify(k)).join(', ') || 'none';
    const hint = 'conversations' in record ? ' (ShareGPT/Qwen-1 "conversations" is not read: convert it to "messages")' : '';
    throw new SftError(`${where}: unknown record format (keys: ${keys})${hint} — ${SHAPES}`);
  }
  checkTurns(conv.turns, where);
  return conv;
}

function fromFirefly(rec: Record<string, unknown>, where: string): Conversation {
  const items = rec.conversation;
  if (!Array.isArray(items)) throw new SftError(`${where}: "conversation" must be an array, got ${describe(items)}`);
  const turns: Turn[] = [];
  items.forEach((item, i) => {
    const at = `${where}: conversation[${i}]`;
    if (!isObject(item)) throw new SftError(`${at} must be an object {"human":…,"assistant":…}, got ${describe(item)}`);
    if (!('human' in item)) throw new SftError(`${at} has no "human" — roles out of order: each item is one user turn then its answer`);
    turns.push({ role: 'user', content: str(item.human, `${at}.human`) });
    // A last item without "assistant" is left for checkTurns to report as "ends on a user turn".
    if ('assistant' in item) turns.push({ role: 'assistant', content: str(item.assistant, `${at}.assistant`) });
    else if (i < items.length - 1) throw new SftError(`${at} has no "assistant" but more turns follow — roles out of order`);
  });
  return withSystem(rec, turns, where);
}

function fromChatml(rec: Record<string, unknown>, where: string): Conversation {
  const msgs = rec.messages;
  if (!Array.isArray(msgs)) throw new SftError(`${where}: "messages" must be an array, got ${describe(msgs)}`);
  let system: string | undefined;
  const turns: Turn[] = [];
  msgs.forEach((m, i) => {
    const at = `${where}: messages[${i}]`;
    if (!isObject(m)) throw new SftError(`${at} must be an object {"role":…,"content":…}, got ${describe(m)}`);
    const role = m.role;
    const content = str(m.content, `${at}.content`);
    if (role === 'system') {
      if (i !== 0) throw new SftError(`${at}: a "system" message may only come first — roles out of order`);
      system = content;
    } else if (role === 'user' || role === 'assistant') {
      turns.push({ role, content });
    } else {
      throw new SftError(`${at}: role ${typeof role === 'string' ? JSON.stringify(role) : describe(role)} is not supported — use "system", "user" or "assistant"`);
    }
  });
  return system === undefined ? { turns } : { system, turns };
}

function fromAlpaca(rec: Record<string, unknown>, where: string): Conversation {
  const turns: Turn[] = [];
  if (rec.history !== undefined && rec.history !== null) {
    if (!Array.isArray(rec.history)) throw new SftError(`${where}: "history" must be an array of [question, answer] pairs`);
    rec.history.forEach((pair, i) => {
      if (!Array.isArray(pair) || pair.length !== 2)
        throw new SftError(`${where}: history[${i}] must be a [question, answer] pair, got ${describe(pair)}`);
      turns.push({ role: 'user', content: str(pair[0], `${where}: history[${i}][0]`) });
      turns.push({ role: 'assistant', content: str(pair[1], `${where}: history[${i}][1]`) });
    });
  }
  const instruction = str(rec.instruction, `${where}: "instruction"`, false);
  const input = rec.input === undefined || rec.input === null ? '' : str(rec.input, `${where}: "input"`, false);
  if (!('output' in rec)) throw new SftError(`${where}: alpaca record has no "output" — the conversation ends on a user turn`);
  const output = str(rec.output, `${where}: "output"`);
  // LLaMA-Factory's AlpacaDatasetConverter: the non-empty parts of instruction and input joined by "\n".
  const user = [instruction, input].filter((s) => s !== '').join('\n').trim();
  turns.push({ role: 'user', content: user }, { role: 'assistant', content: output });
  return withSystem(rec, turns, where);
}

function withSystem(rec: Record<string, unknown>, turns: Turn[], where: string): Conversation {
  if (rec.system === undefined || rec.system === null) return { turns };
  return { system: str(rec.system, `${where}: "system"`), turns };
}

function checkTurns(turns: Turn[], where: string): void {
  if (turns.length === 0) throw new SftError(`${where}: empty conversation — give at least one user turn and its answer`);
  turns.forEach((t, i) => {
    const want: Role = i % 2 === 0 ? 'user' : 'assistant';
    if (t.role !== want)
      throw new SftError(`${where}: turn ${i + 1} is "${t.role}" but "${want}" was expected — roles out of order (they must alternate user, assistant, …)`);
  });
  if (turns[turns.length - 1].role !== 'assistant')
    throw new SftError(`${where}: the conversation ends on a user turn (no assistant answer to train on) — add the answer or delete the line`);
}

function str(v: unknown, what: string, trim = true): string {
  if (typeof v !== 'string') throw new SftError(`${what} must be a string, got ${describe(v)}`);
  return trim ? v.trim() : v;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v === undefined) return 'missing';
  return `a ${typeof v}`;
}
