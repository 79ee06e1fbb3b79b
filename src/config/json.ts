// A strict JSON parser (RFC 8259) that remembers where each top-level key sits.
// JSON.parse cannot do this: its errors give a character offset only on some inputs, it keeps
// the last of two duplicate keys without a word, it reads 1e400 as Infinity (which then prints
// as null), and it forgets positions, so a config error could not say "line 12" when a value has
// the wrong type. Every file sft reads as JSON goes through it: configs, config.json, shard
// indexes, safetensors headers.

export interface Position {
  line: number; // 1-based
  col: number; // 1-based, in UTF-16 code units
}

export interface ParsedObject {
  value: Record<string, unknown>;
  /** Where each top-level key and its value start. */
  where: Map<string, { key: Position; value: Position }>;
}

export class JsonSyntaxError extends Error {
  /** `invalidJson` is false for valid JSON that no reader should accept (a number beyond the float range),
   *  so that a caller does not call it "invalid JSON". */
  constructor(message: string, public readonly pos: Position, public readonly invalidJson = true) {
    super(message);
    this.name = 'JsonSyntaxError';
  }
}

/** `value` as JSON for an error message, cut to about `max` characters. */
export function showJson(value: unknown, max = 80): string {
  if (typeof value === 'number') return String(value); // JSON.stringify writes Infinity and NaN as null
  if (typeof value === 'string') return JSON.stringify(clip(value, max - 2)); // cut inside the quotes
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value); // a cycle or a structure too deep for JSON.stringify's recursion
  }
  return clip(text, max);
}

/** `text` cut to about `max` characters, with "..." where it was cut. */
export function clip(text: string, max = 80): string {
  return text.length > max ? text.slice(0, max - 3) + '...' : text;
}

/** Parses `text`, which must hold one JSON object; throws JsonSyntaxError with a line and column. */
export function parseJsonObject(text: string): ParsedObject {
  const p = new Parser(text);
  p.skipSpace();
  if (p.peek() !== '{') p.fail(p.atEnd() ? 'the file is empty; expected a JSON object' : 'expected a JSON object starting with "{"');
  const where = new Map<string, { key: Position; value: Position }>();
  const value = p.object(where);
  p.skipSpace();
  if (!p.atEnd()) p.fail('unexpected text after the closing "}"');
  return { value, where };
}

const MAX_DEPTH = 100;
const NUMBER = /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
const SIMPLE_ESCAPES: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };

class Parser {
  private i = 0;
  private depth = 0;
  /** The key whose value is being read, for messages about the value. */
  private key: string | undefined;
  /** Offsets where each line starts, built on the first position asked for. */
  private lineStarts: number[] | undefined;
  constructor(private readonly s: string) {
    if (s.charCodeAt(0) === 0xfeff) this.i = 1; // byte-order mark written by some editors
  }

  atEnd(): boolean {
    return this.i >= this.s.length;
  }
  peek(): string {
    return this.s[this.i] ?? '';
  }

  // A binary search over the line starts: every top-level key asks for its position, and scanning
  // from the start each time made a file of many keys quadratic.
  position(at = this.i): Position {
    if (!this.lineStarts) {
      this.lineStarts = [0];
      for (let k = this.s.indexOf('\n'); k >= 0; k = this.s.indexOf('\n', k + 1)) this.lineStarts.push(k + 1);
    }
    const starts = this.lineStarts;
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid] <= at) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, col: at - starts[lo] + 1 };
  }

  fail(message: string, at = this.i, invalidJson = true): never {
    throw new JsonSyntaxError(message, this.position(at), invalidJson);
  }

  /** A number no reader should take: say what was typed, and for which key. */
  private notFinite(typed: string, at: number, why: string, invalidJson: boolean): never {
    const key = this.key === undefined ? '' : `${JSON.stringify(clip(this.key, 60))}: `;
    this.fail(`${key}${clip(typed, 40)} is not a finite number (${why})`, at, invalidJson);
  }

  skipSpace(): void {
    while (this.i < this.s.length) {
      const c = this.s[this.i];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r') this.i++;
      else if (c === '/' && (this.s[this.i + 1] === '/' || this.s[this.i + 1] === '*')) {
        this.fail('comments are not allowed in JSON');
      } else break;
    }
  }

  private describe(): string {
    return this.atEnd() ? 'the end of the file' : JSON.stringify(this.peek());
  }

  value(): unknown {
    this.skipSpace();
    const c = this.peek();
    if (c === '{' || c === '[') {
      // Bounded recursion: absurd nesting is a syntax error here, not a stack overflow.
      if (++this.depth > MAX_DEPTH) this.fail(`nested more than ${MAX_DEPTH} levels deep; no file sft reads needs more than a few`);
      const v = c === '{' ? this.object() : this.array();
      this.depth--;
      return v;
    }
    if (c === '"') return this.string();
    for (const word of ['NaN', 'Infinity', '-Infinity']) {
      if (this.s.startsWith(word, this.i)) this.notFinite(word, this.i, 'JSON has no Infinity or NaN', false);
    }
    if (c === '-' || (c >= '0' && c <= '9')) return this.number();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return v;
      }
    }
    for (const word of ['True', 'False', 'None']) {
      if (this.s.startsWith(word, this.i)) this.fail(`${word} is not JSON; write ${word === 'True' ? 'true' : word === 'False' ? 'false' : 'null'}`);
    }
    if (c === "'") this.fail('strings need double quotes in JSON');
    this.fail(`expected a value, found ${this.describe()}`);
  }

  // `where` is given for the top-level object only.
  object(where?: Map<string, { key: Position; value: Position }>): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    this.i++; // {
    this.skipSpace();
    if (this.peek() === '}') {
      this.i++;
      return out;
    }
    for (;;) {
      this.skipSpace();
      if (this.peek() === '}') this.fail('trailing comma before "}" is not allowed in JSON');
      if (this.peek() !== '"') this.fail(`expected a key in double quotes, found ${this.describe()}`);
      const keyAt = this.i;
      const key = this.string();
      if (Object.prototype.hasOwnProperty.call(out, key)) this.fail(`duplicate key ${JSON.stringify(clip(key, 60))}`, keyAt);
      this.skipSpace();
      if (this.peek() !== ':') this.fail(`expected ":" after key ${JSON.stringify(clip(key, 60))}, found ${this.describe()}`);
      this.i++;
      this.skipSpace();
      const valueAt = this.i;
      const outer = this.key;
      this.key = key;
      // defineProperty: a key named "__proto__" must become a plain property.
      Object.defineProperty(out, key, { value: this.value(), enumerable: true, writable: true, configurable: true });
      this.key = outer;
      where?.set(key, { key: this.position(keyAt), value: this.position(valueAt) });
      this.skipSpace();
      const c = this.peek();
      this.i++;
      if (c === ',') continue;
      if (c === '}') return out;
      this.fail(`expected "," or "}" after the value of ${JSON.stringify(clip(key, 60))}, found ${c ? JSON.stringify(c) : 'the end of the file'}`, this.i - 1);
    }
  }

  array(): unknown[] {
    const out: unknown[] = [];
    this.i++; // [
    this.skipSpace();
    if (this.peek() === ']') {
      this.i++;
      return out;
    }
    for (;;) {
      this.skipSpace();
      if (this.peek() === ']') this.fail('trailing comma before "]" is not allowed in JSON');
      out.push(this.value());
      this.skipSpace();
      const c = this.peek();
      this.i++;
      if (c === ',') continue;
      if (c === ']') return out;
      this.fail(`expected "," or "]" in a list, found ${c ? JSON.stringify(c) : 'the end of the file'}`, this.i - 1);
    }
  }

  string(): string {
    const start = this.i;
    this.i++; // opening quote
    let out = '';
    for (;;) {
      // Plain characters are copied in runs: a megabyte string is one slice, not a million appends.
      const runStart = this.i;
      while (this.i < this.s.length) {
        const code = this.s.charCodeAt(this.i);
        if (code === 0x22 || code === 0x5c || code < 0x20) break;
        this.i++;
      }
      if (this.i > runStart) out += this.s.slice(runStart, this.i);
      if (this.atEnd()) this.fail('unterminated string', start);
      const c = this.s[this.i];
      if (c === '"') {
        this.i++;
        return out;
      }
      if (c !== '\\') this.fail('unterminated string (a raw line break or control character inside quotes)', start);
      const e = this.s[this.i + 1];
      if (e !== undefined && Object.hasOwn(SIMPLE_ESCAPES, e)) {
        out += SIMPLE_ESCAPES[e];
        this.i += 2;
      } else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(this.s.slice(this.i + 2, this.i + 6))) {
        out += String.fromCharCode(parseInt(this.s.slice(this.i + 2, this.i + 6), 16));
        this.i += 6;
      } else {
        this.fail(`invalid escape "\\${e ?? ''}" in a string`);
      }
    }
  }

  number(): number {
    NUMBER.lastIndex = this.i; // sticky: matched in place, without copying the rest of the text
    const m = NUMBER.exec(this.s);
    if (!m) this.fail(`invalid number`);
    const after = this.s[this.i + m[0].length];
    if (after !== undefined && /[0-9.eE]/.test(after)) this.fail('invalid number (JSON numbers have no leading zeros or trailing dots)');
    const v = Number(m[0]);
    // Valid JSON, but beyond the float range: JSON.parse would make it Infinity, which prints as null.
    if (!Number.isFinite(v)) this.notFinite(m[0], this.i, 'it is beyond the range of a 64-bit float, about 1.8e308', false);
    this.i += m[0].length;
    return v;
  }
}
