// Seeded corruption of JSONL records, config files and command-line overrides: the same seed gives
// the same cases, so a failure names a case that can be replayed (node --import tsx
// test/fuzz/runner.ts <kind> <seed> <count> --case N prints it).

export type Rand = ReturnType<typeof rng>;

/** mulberry32: small, fast, and the same on every machine. */
export function rng(seed: number) {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(next() * n);
  return {
    next,
    int,
    chance: (p: number): boolean => next() < p,
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)],
  };
}

// ---- values and text that break things ------------------------------------------------------------

/** Stand-ins for a value, as JSON text (some are not valid JSON on purpose). */
const VALUE_TEXTS = [
  'null', 'true', 'false', '0', '-0', '-1', '1.5', '1e308', '1e400', '-1e400', '123456789012345678901234567890',
  '0.0000000000000000000000001', '""', '" "', '"x"', '[]', '{}', '[1,2]', '{"a":1}', '[null]', '[[]]', '[{}]',
  '"\\u0000"', '"\\ud800"', '"\\udfff\\ud800"', '"\\u202e"', '"😀"', '"\\n\\r\\t"', '"<|im_end|>"', '"</s>"',
  'NaN', 'Infinity', 'undefined', "'single'", 'True', 'None', '01', '1.', '.5', '+1', '0x10', '"a" "b"',
];

/** Bytes that are not UTF-8, or are UTF-8 of awkward code points. */
const BYTE_SEQUENCES: number[][] = [
  [0x00], [0xff], [0xfe], [0xc0, 0xaf], [0x80], [0xbf], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80],
  [0xf0, 0x9f, 0x98], [0xef, 0xbb, 0xbf], [0xe2, 0x80, 0xa8], [0xcc, 0x81], [0x0d], [0x0a], [0x09], [0x0b], [0x1b],
  [0x22], [0x5c], [0x7b], [0x7d], [0x5b], [0x5d], [0x2c], [0x3a],
];

const UNICODE = ['😀', '中文', '\u0301', '\u202e', '\u2028', '\ufeff', '\u0000', '\ud800', '\udfff', '𝔘𝔫𝔦', 'ﷺ', '\u00a0', 'Ω'];

const KEYS = [
  'conversation', 'messages', 'instruction', 'input', 'output', 'history', 'system', 'human', 'assistant', 'role',
  'content', 'type', 'conversations', '__proto__', 'constructor', 'toString', 'hasOwnProperty', '', ' ', 'ｃｏｎｖｅｒｓａｔｉｏｎ',
];

export function deepText(r: Rand): string {
  const depth = r.pick([10, 200, 5000, 100_000]);
  return r.chance(0.5) ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
}

function randomString(r: Rand): string {
  const n = r.pick([0, 1, 5, 40, 3000]);
  let s = '';
  for (let i = 0; i < n; i++) s += r.chance(0.2) ? r.pick(UNICODE) : String.fromCharCode(32 + r.int(95));
  return s;
}

// ---- structural mutations (on a parsed object, serialized afterwards) -----------------------------

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
const PLACEHOLDER = '"@@FUZZ@@"';

/** Picks a random container and a key/index in it, walking down from the root. */
function randomSlot(root: Json, r: Rand): { parent: Json[] | { [k: string]: Json }; key: string | number } | undefined {
  let node = root;
  let slot: { parent: Json[] | { [k: string]: Json }; key: string | number } | undefined;
  for (let d = 0; d < 6; d++) {
    if (Array.isArray(node) && node.length) slot = { parent: node, key: r.int(node.length) };
    else if (node && typeof node === 'object' && !Array.isArray(node) && Object.keys(node).length) slot = { parent: node, key: r.pick(Object.keys(node)) };
    else break;
    node = (slot.parent as Record<string | number, Json>)[slot.key];
    if (r.chance(0.35)) break;
  }
  return slot;
}

/** One structural change; returns JSON text (placeholders replaced by raw, possibly invalid, text). */
function mutateStructure(obj: Json, r: Rand): string {
  const copy = JSON.parse(JSON.stringify(obj)) as Json;
  const slot = randomSlot(copy, r);
  let raw = '';
  if (slot) {
    const p = slot.parent as Record<string | number, Json>;
    switch (r.int(6)) {
      case 0: // wrong type or odd value
        p[slot.key] = '@@FUZZ@@';
        raw = r.pick(VALUE_TEXTS);
        break;
      case 1: // deep nesting
        p[slot.key] = '@@FUZZ@@';
        raw = deepText(r);
        break;
      case 2: // a key removed, or an array item
        if (Array.isArray(slot.parent)) slot.parent.splice(slot.key as number, 1);
        else delete p[slot.key];
        break;
      case 3: // a key added or renamed
        if (!Array.isArray(slot.parent)) {
          const v = p[slot.key];
          if (r.chance(0.5)) delete p[slot.key];
          Object.defineProperty(p, r.pick(KEYS), { value: v, enumerable: true, writable: true, configurable: true });
        }
        break;
      case 4: // a string made strange
        p[slot.key] = randomString(r);
        break;
      default: // a long value
        p[slot.key] = 'x'.repeat(r.pick([1000, 100_000]));
    }
  }
  return JSON.stringify(copy).replace(PLACEHOLDER, () => raw);
}

// ---- byte mutations ------------------------------------------------------------------------------

function mutateBytes(b: Buffer, r: Rand): Buffer {
  const at = b.length ? r.int(b.length + 1) : 0;
  switch (r.int(8)) {
    case 0: { // flip bits in a few bytes
      const c = Buffer.from(b);
      for (let k = 1 + r.int(4); k > 0 && c.length; k--) c[r.int(c.length)] ^= 1 << r.int(8);
      return c;
    }
    case 1: // truncated
      return b.subarray(0, at);
    case 2: // awkward bytes inserted
      return Buffer.concat([b.subarray(0, at), Buffer.from(r.pick(BYTE_SEQUENCES)), b.subarray(at)]);
    case 3: // a byte replaced by an awkward one
      return Buffer.concat([b.subarray(0, at), Buffer.from(r.pick(BYTE_SEQUENCES)), b.subarray(at + 1)]);
    case 4: // BOM in front (or twice)
      return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), r.chance(0.3) ? Buffer.from([0xef, 0xbb, 0xbf]) : Buffer.alloc(0), b]);
    case 5: // unicode text inserted (inside a string or not)
      return Buffer.concat([b.subarray(0, at), Buffer.from(r.pick(UNICODE)), b.subarray(at)]);
    case 6: // garbage after the value, or a second value
      return Buffer.concat([b, Buffer.from(r.pick([' x', '}', ',', '\u0000', ' {"a":1}', '\r', ' // c', '\n\n']))]);
    default: { // a chunk duplicated or removed
      const end = Math.min(b.length, at + 1 + r.int(16));
      return r.chance(0.5) ? Buffer.concat([b.subarray(0, end), b.subarray(at, end), b.subarray(end)]) : Buffer.concat([b.subarray(0, at), b.subarray(end)]);
    }
  }
}

// ---- JSONL -------------------------------------------------------------------------------------------

export const GOOD_RECORDS: Json[] = [
  { conversation_id: 1, category: 'Brainstorming', conversation: [{ human: '你好', assistant: 'Hello! 👋' }, { human: '2+2?', assistant: '4' }] },
  { conversation: [{ human: 'hi', assistant: 'yo' }], system: 'be brief' },
  { messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'u' }, { role: 'assistant', content: 'v' }] },
  { type: 'chatml', messages: [{ role: 'user', content: 'Q?' }, { role: 'assistant', content: 'A.' }, { role: 'user', content: 'more' }, { role: 'assistant', content: 'ok' }] },
  { instruction: 'Translate to French', input: 'cat', output: 'chat', history: [['q', 'a']] },
  { instruction: 'Say hi', output: 'hi', system: null },
];

/** One JSONL line's bytes: a good record, changed 1-3 times (structure and/or bytes). May hold "\n". */
export function corruptLine(r: Rand): Buffer {
  let text = JSON.stringify(r.pick(GOOD_RECORDS));
  if (r.chance(0.6)) text = mutateStructure(JSON.parse(text) as Json, r);
  let b: Buffer = Buffer.from(text);
  for (let k = r.chance(0.6) ? 1 + r.int(3) : 0; k > 0; k--) b = mutateBytes(b, r);
  return b;
}

export function goodLine(r: Rand): Buffer {
  return Buffer.from(JSON.stringify(r.pick(GOOD_RECORDS)));
}

// ---- JSON arrays ---------------------------------------------------------------------------------------

const WHITESPACE = ['', '', ' ', '\n', '\r\n', '\t', '\n  ', ' \n\t\r\n '];

/** An array file of good and corrupted records (`bad` marks which), in any layout JSON allows
 *  (BOM, whitespace, pretty-printing), perhaps damaged as a whole: cut short, a trailing or a
 *  missing comma, an extra one, text after the "]", a huge string, deep nesting, bytes that are
 *  not UTF-8, byte damage anywhere. */
export function arrayFile(r: Rand): { bytes: Buffer; bad: boolean[] } {
  const ws = () => r.pick(WHITESPACE);
  const records: Buffer[] = [];
  const bad: boolean[] = [];
  for (let k = 0, n = r.int(12); k < n; k++) {
    const kind = r.int(10);
    let rec: Buffer;
    if (kind < 5) rec = r.chance(0.3) ? Buffer.from(JSON.stringify(r.pick(GOOD_RECORDS), null, r.pick([1, 2, '\t']))) : goodLine(r);
    else if (kind < 8) rec = corruptLine(r);
    else if (kind === 8) rec = Buffer.from(`{"instruction":"${'长'.repeat(r.pick([1000, 100_000]))}","output":"${'x'.repeat(r.pick([10, 400_000]))}"}`);
    else rec = Buffer.from(r.chance(0.5) ? deepText(r) : r.pick(VALUE_TEXTS));
    records.push(rec);
    bad.push(kind >= 5 && kind !== 8);
  }
  const parts: Buffer[] = [Buffer.from(r.chance(0.2) ? '\ufeff' : ''), Buffer.from(ws() + '[' + ws())];
  records.forEach((rec, k) => {
    if (k) parts.push(Buffer.from(ws() + ',' + ws()));
    parts.push(rec);
  });
  parts.push(Buffer.from(ws() + ']' + ws()));
  let bytes = Buffer.concat(parts);
  switch (r.chance(0.5) ? r.int(7) : -1) {
    case 0: bytes = bytes.subarray(0, r.int(bytes.length + 1)); break; // cut short
    case 1: { // a trailing comma
      const end = bytes.lastIndexOf(0x5d);
      if (end > 0) bytes = Buffer.concat([bytes.subarray(0, end), Buffer.from(',' + ws()), bytes.subarray(end)]);
      break;
    }
    case 2: { // a comma dropped or doubled
      const at = bytes.indexOf(0x2c, r.int(bytes.length));
      if (at >= 0) bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(r.pick(['', ',,', ' ', ',]'])), bytes.subarray(at + 1)]);
      break;
    }
    case 3: bytes = Buffer.concat([bytes, Buffer.from(r.pick(['x', '[]', '{"a":1}', ',', ']', '\u0000', '\n[{"instruction":"a","output":"b"}]']))]); break;
    case 4: { // bytes that are not UTF-8, GBK text among them
      const at = r.int(bytes.length + 1);
      bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(r.pick([[0xc4, 0xe3, 0xba, 0xc3], [0x81, 0x5c], [0xff], [0xed, 0xa0, 0x80], [0xe4, 0xb8]])), bytes.subarray(at)]);
      break;
    }
    case 5: for (let k = 1 + r.int(3); k > 0; k--) bytes = mutateBytes(bytes, r); break;
    case 6: bytes = Buffer.from('\n'.repeat(r.int(3)) + '[' + ']'.repeat(r.int(2))); break;
  }
  return { bytes, bad };
}

// ---- config files ------------------------------------------------------------------------------------

/** One config file's bytes, from a real config changed 1-3 times: odd values for real, misspelled
 *  or strange keys, then maybe byte damage. */
export function corruptConfig(base: Record<string, Json>, r: Rand): Buffer {
  const indent = r.chance(0.5) ? 4 : undefined;
  let text = JSON.stringify(base, null, indent);
  if (r.chance(0.7)) {
    const obj: Record<string, Json> = { ...base };
    const raws: string[] = [];
    for (let k = 1 + r.int(3); k > 0; k--) {
      const key = r.chance(0.9) ? r.pick(Object.keys(base).concat(CONFIG_KEYS)) : r.pick(KEYS);
      Object.defineProperty(obj, key, { value: `@@FUZZ${raws.length}@@`, enumerable: true, writable: true, configurable: true });
      raws.push(r.chance(0.1) ? deepText(r) : r.pick(VALUE_TEXTS.concat(CONFIG_WORDS.map((w) => JSON.stringify(w)))));
    }
    text = JSON.stringify(obj, null, indent).replace(/"@@FUZZ(\d+)@@"/g, (_, i: string) => raws[Number(i)]);
  }
  let b: Buffer = Buffer.from(text);
  for (let k = r.chance(0.6) ? 1 + r.int(3) : 0; k > 0; k--) b = mutateBytes(b, r);
  return b;
}

/** Keys of TrainConfig worth aiming at, plus misspellings. */
const CONFIG_KEYS = [
  'output_dir', 'model_name_or_path', 'train_file', 'max_seq_length', 'template_name', 'train_mode', 'bits', 'num_train_epochs',
  'max_steps', 'per_device_train_batch_size', 'gradient_accumulation_steps', 'learning_rate', 'lr_scheduler_type', 'warmup_steps',
  'warmup_ratio', 'lora_rank', 'lora_alpha', 'lora_dropout', 'lora_target_modules', 'logging_steps', 'save_steps', 'save_strategy',
  'save_total_limit', 'seed', 'fp16', 'bf16', 'optim', 'report_to', 'deepspeed', 'logging_dir', 'device', 'threads', 'task_type',
  'eval_file', 'weight_decay', 'max_grad_norm', 'adam_beta1', 'adam_epsilon', 'learning_rat', 'lora_rnk', 'Output_Dir',
];
const CONFIG_WORDS = ['all', 'none', 'wandb,tensorboard', 'q_proj,v_proj', 'cosine', 'polynomial', 'qlora', 'full', 'steps', 'best', 'cuda', 'paged_adamw_8bit', 'sgd', '-1', '1e-4', 'yes'];

/** Command-line override tokens, as `sft train --config x.json <tokens>` passes them. */
export function corruptOverrides(r: Rand): string[] {
  const out: string[] = [];
  for (let n = r.int(6); n >= 0; n--) {
    const key = r.chance(0.8) ? r.pick(CONFIG_KEYS) : r.pick(KEYS.concat(['no_fp16', 'no_remove_unused_columns', 'no_such', 'remove-unused-columns']));
    const value = r.pick(['1', '0', '-1', '1e-4', 'true', 'false', 'yes', 'no', 'null', 'None', '', ' ', 'nan', 'Infinity', '1e400',
      'q_proj,v_proj', 'a,,b', ',', 'cosine', 'wandb', 'all', '😀', '--', '-x', 'x'.repeat(500), '0x10', '1_000']);
    switch (r.int(6)) {
      case 0: out.push(`--${key}`); break;
      case 1: out.push(`--${key}=${value}`); break;
      case 2: out.push(`--${key.replace(/_/g, '-')}`, value); break;
      case 3: out.push(value); break; // a stray word
      default: out.push(`--${key}`, value);
    }
  }
  return out;
}
