// A strict JSON parser (RFC 8259) that remembers where each top-level key sits.
// JSON.parse cannot do this: its errors give a character offset only on some inputs, it keeps
// the last of two duplicate keys without a word, and it forgets positions, so a config error
// could not say "line 12" when a value has the wrong type.

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
  constructor(message: string, public readonly pos: Position) {
    super(message);
    this.name = 'JsonSyntaxError';
  }
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

class Parser {
  private i = 0;
  private depth = 0;
  constructor(private readonly s: string) {
    if (s.charCodeAt(0) === 0xfeff) this.i = 1; // byte-order mark written by some editors
  }

  atEnd(): boolean {
    return this.i >= this.s.length;
  }
  peek(): string {
    return this.s[this.i] ?? '';
  }

  position(at = this.i): Position {
    let line = 1;
    let lineStart = 0;
    for (let k = 0; k < at; k++) {
      if (this.s[k] === '\n') {
        line++;
        lineStart = k + 1;
      }
    }
    return { line, col: at - lineStart + 1 };
  }

  fail(message: string, at = this.i): never {
    throw new JsonSyntaxError(message, this.position(at));
  }

  skipSpace(): void {
    while (this.i < this.s.length) {
      const c = this.s[this.i];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r') this.i++;
      else if (c === '/' && (this.s[this.i + 1] === '/' || this.s[this.i + 1] === '*')) {
        this.fail('comments are not allowed in JSON; document the config in configs/README.md instead');
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
      if (++this.depth > MAX_DEPTH) this.fail(`nested more than ${MAX_DEPTH} levels deep; a config needs only a few`);
      const v = c === '{' ? this.object() : this.array();
      this.depth--;
      return v;
    }
    if (c === '"') return this.string();
    if (c === '-' || (c >= '0' && c <= '9')) return this.number();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return v;
      }
    }
    for (const word of ['True', 'False', 'None', 'NaN', 'Infinity']) {
      if (this.s.startsWith(word, this.i)) {
        this.fail(`${word} is not JSON; write ${word === 'True' ? 'true' : word === 'False' ? 'false' : word === 'None' ? 'null' : 'a finite number'}`);
      }
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
      if (Object.prototype.hasOwnProperty.call(out, key)) this.fail(`duplicate key "${key}"`, keyAt);
      this.skipSpace();
      if (this.peek() !== ':') this.fail(`expected ":" after key "${key}", found ${this.describe()}`);
      this.i++;
      this.skipSpace();
      const valueAt = this.i;
      // defineProperty: a key named "__proto__" must become a plain property.
      Object.defineProperty(out, key, { value: this.value(), enumerable: true, writable: true, configurable: true });
      where?.set(key, { key: this.position(keyAt), value: this.position(valueAt) });
      this.skipSpace();
      const c = this.peek();
      this.i++;
      if (c === ',') continue;
      if (c === '}') return out;
      this.fail(`expected "," or "}" after the value of "${key}", found ${c ? JSON.stringify(c) : 'the end of the file'}`, this.i - 1);
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
      if (this.atEnd()) this.fail('unterminated string', start);
      const c = this.s[this.i];
      if (c === '"') {
        this.i++;
        return out;
      }
      if (c === '\n' || c < ' ') this.fail('unterminated string (a raw line break or control character inside quotes)', start);
      if (c !== '\\') {
        out += c;
        this.i++;
        continue;
      }
      const e = this.s[this.i + 1];
      const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (e !== undefined && e in simple) {
        out += simple[e];
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
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(this.s.slice(this.i));
    if (!m) this.fail(`invalid number`);
    const after = this.s[this.i + m[0].length];
    if (after !== undefined && /[0-9.eE]/.test(after)) this.fail('invalid number (JSON numbers have no leading zeros or trailing dots)');
    this.i += m[0].length;
    return Number(m[0]);
  }
}
