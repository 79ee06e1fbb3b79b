// Streams the records of a file that holds one JSON array ([ {...}, {...} ], the layout of
// LLaMA-Factory's data and alpaca_zh.json) one at a time, never holding the file: a multi-GB array
// trains in the memory of its largest record. A byte scanner finds where each element starts and
// ends (strings and escapes skipped, brackets matched); the element's bytes are then decoded and
// parsed on their own, so a bad record is reported as that record, like a bad JSONL line.
//
// Positions: `line` counts "\n" from 1; `column` counts characters (code points) from 1, the
// byte-order mark not counted. A record whose inside is malformed JSON (a bad literal, a missing
// colon, bytes that are not UTF-8) is yielded with its text, for the parser to report or skip. A
// break in the array itself (not closed, a missing comma, a trailing comma, a bracket that does not
// match, anything after the closing "]") throws: record boundaries after it cannot be trusted.
import { createReadStream } from 'node:fs';
import { SftError } from '../errors.js';

export interface JsonArrayRecord {
  /** 0-based position in the array (jq's .[index]). */
  index: number;
  /** Where the record's first byte is: line and column (both 1-based), and the byte offset. */
  line: number;
  column: number;
  offset: number;
  /** The record's JSON text ('' when its bytes are not UTF-8). */
  text: string;
  /** Set when the record's bytes are not UTF-8. */
  error?: string;
}

export interface JsonArrayOptions {
  chunkSize?: number;
  /** A record larger than this stops the read (a string never closed would otherwise take the rest
   *  of the file into memory). Default 256 MiB. */
  maxRecordBytes?: number;
}

/** "FILE:LINE:COLUMN (record N, .[N-1])": how every message about a record starts. */
export function recordWhere(file: string, rec: Pick<JsonArrayRecord, 'index' | 'line' | 'column'>): string {
  return `${file}:${rec.line}:${rec.column} (record ${rec.index + 1}, .[${rec.index}])`;
}

const enum State { BeforeArray, BeforeValue, InContainer, InScalar, AfterValue, AfterArray }

const OPEN_BRACE = 0x7b, CLOSE_BRACE = 0x7d, OPEN_BRACKET = 0x5b, CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22, BACKSLASH = 0x5c, COMMA = 0x2c, NEWLINE = 0x0a;
const BOM = [0xef, 0xbb, 0xbf];
const isWhitespace = (b: number) => b === 0x20 || b === NEWLINE || b === 0x0d || b === 0x09;

/** The scanner over the bytes of one file; feed() returns the records each chunk completes. */
export class JsonArrayScanner {
  private state = State.BeforeArray;
  private pos = 0; // byte offset of the next byte
  private line = 1;
  private column = 0; // characters so far on this line
  private index = 0; // records started so far
  private bomBytes = 0;
  private afterComma = false;
  private commaAt = '';
  // The record being read.
  private start = { line: 0, column: 0, offset: 0 };
  private pieces: Buffer[] = [];
  private bytes = 0;
  private inString = false;
  private escaped = false;
  private stack = new Uint8Array(64); // the open brackets of the record
  private depth = 0;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  private readonly maxRecordBytes: number;

  constructor(private readonly file: string, opts: { maxRecordBytes?: number } = {}) {
    this.maxRecordBytes = opts.maxRecordBytes ?? 256 * 2 ** 20;
  }

  feed(chunk: Buffer): JsonArrayRecord[] {
    const out: JsonArrayRecord[] = [];
    let from = 0; // where the current record's bytes begin within this chunk
    const n = chunk.length;
    for (let i = 0; i < n; i++) {
      if (this.inString && !this.escaped) {
        // Most of a data file is the inside of strings: run through it in a tight loop that only
        // counts lines and columns, up to the quote or backslash the state machine must see.
        let line = this.line;
        let column = this.column;
        for (; i < n; i++) {
          const c = chunk[i];
          if (c === QUOTE || c === BACKSLASH) break;
          if (c === NEWLINE) {
            line++;
            column = 0;
          } else if ((c & 0xc0) !== 0x80) column++;
        }
        this.line = line;
        this.column = column;
        if (i === n) break;
      }
      const b = chunk[i];
      if (this.pos + i < 3 && this.state === State.BeforeArray) {
        // A UTF-8 byte-order mark, perhaps split over chunks, is skipped (and not a column).
        const at = this.pos + i;
        if (at === this.bomBytes && b === BOM[at]) {
          this.bomBytes++;
          continue;
        }
        if (this.bomBytes > 0) this.structural(`an incomplete byte-order mark (${this.bomBytes} of its 3 bytes)`, i, chunk);
      }
      switch (this.state) {
        case State.InContainer:
          if (this.inString) {
            if (this.escaped) this.escaped = false;
            else if (b === BACKSLASH) this.escaped = true;
            else if (b === QUOTE) this.inString = false;
          } else if (b === QUOTE) this.inString = true;
          else if (b === OPEN_BRACE || b === OPEN_BRACKET) this.push(b);
          else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
            const open = this.stack[--this.depth];
            if (open !== (b === CLOSE_BRACE ? OPEN_BRACE : OPEN_BRACKET)) {
              this.take(chunk, from, i + 1);
              this.structural(`"${String.fromCharCode(b)}" does not close the "${String.fromCharCode(open)}" before it`, i, chunk);
            }
            if (this.depth === 0) {
              out.push(this.finish(chunk, from, i + 1));
              this.state = State.AfterValue;
            }
          }
          break;
        case State.InScalar:
          if (this.inString) {
            if (this.escaped) this.escaped = false;
            else if (b === BACKSLASH) this.escaped = true;
            else if (b === QUOTE) {
              this.inString = false;
              out.push(this.finish(chunk, from, i + 1));
              this.state = State.AfterValue;
            }
          } else if (isWhitespace(b) || b === COMMA || b === CLOSE_BRACKET) {
            out.push(this.finish(chunk, from, i));
            this.state = State.AfterValue;
            i--; // the delimiter is read again after the value
            continue; // not counted twice
          }
          break;
        case State.BeforeArray:
          if (isWhitespace(b)) break;
          if (b !== OPEN_BRACKET) this.structural(`expected "[" (the start of an array of records), found ${this.shown(chunk, i)}`, i, chunk);
          this.state = State.BeforeValue;
          this.afterComma = false;
          break;
        case State.BeforeValue:
          if (isWhitespace(b)) break;
          if (b === CLOSE_BRACKET) {
            if (this.afterComma) this.structural(`a trailing comma (at ${this.commaAt}) before the closing "]" — delete it`, i, chunk);
            this.state = State.AfterArray;
            break;
          }
          if (b === COMMA) this.structural(`a comma where record ${this.index + 1} should start — delete it`, i, chunk);
          this.start = { line: this.line, column: this.column + 1, offset: this.pos + i };
          from = i;
          this.pieces = [];
          this.bytes = 0;
          this.depth = 0;
          this.inString = b === QUOTE;
          this.escaped = false;
          if (b === OPEN_BRACE || b === OPEN_BRACKET) {
            this.push(b);
            this.state = State.InContainer;
          } else this.state = State.InScalar;
          this.index++;
          break;
        case State.AfterValue:
          if (isWhitespace(b)) break;
          if (b === COMMA) {
            this.afterComma = true;
            this.commaAt = `${this.line}:${this.column + 1}`;
            this.state = State.BeforeValue;
          } else if (b === CLOSE_BRACKET) this.state = State.AfterArray;
          else this.structural(`expected "," or "]" after record ${this.index}, found ${this.shown(chunk, i)} — a missing comma?`, i, chunk);
          break;
        case State.AfterArray:
          if (!isWhitespace(b))
            this.structural(`${this.shown(chunk, i)} after the array's closing "]" — a .json data file holds one array of records (JSON Lines: one object per line, in a .jsonl file)`, i, chunk);
          break;
      }
      if (b === NEWLINE) {
        this.line++;
        this.column = 0;
      } else if ((b & 0xc0) !== 0x80) this.column++;
    }
    if (this.state === State.InContainer || this.state === State.InScalar) this.take(chunk, from, chunk.length);
    this.pos += chunk.length;
    return out;
  }

  /** The end of the file: a record still open, or an array never closed, is an error. */
  end(): JsonArrayRecord[] {
    if (this.state === State.AfterArray) return [];
    if (this.state === State.BeforeArray) throw new SftError(`${this.file}: the file is empty — give it an array of records [ {...}, ... ] or JSON Lines`);
    this.unclosed();
    return [];
  }

  private unclosed(): never {
    const inside = this.state === State.InContainer || this.state === State.InScalar;
    const what = inside
      ? `the file ends inside record ${this.index}, which starts at ${this.start.line}:${this.start.column}${this.inString ? ' (in a string never closed)' : ''}`
      : `the array is not closed: no "]" after record ${this.index}`;
    this.checkUtf8();
    throw new SftError(`${this.file}:${this.line}:${this.column + 1}: ${what} — the file is cut short (an interrupted download or copy?)`);
  }

  private push(b: number): void {
    if (this.depth === this.stack.length) {
      const grown = new Uint8Array(this.stack.length * 2);
      grown.set(this.stack);
      this.stack = grown;
    }
    this.stack[this.depth++] = b;
  }

  /** Keeps bytes [from, to) of chunk as part of the current record. */
  private take(chunk: Buffer, from: number, to: number): void {
    if (to <= from) return;
    this.bytes += to - from;
    if (this.bytes > this.maxRecordBytes) {
      throw new SftError(
        `${recordWhere(this.file, { index: this.index - 1, ...this.start })}: the record is larger than ${sizeText(this.maxRecordBytes)}` +
          `${this.inString ? ' (a string that is never closed?)' : ''} — check the file, or split the record`,
      );
    }
    // A copy: the read stream may reuse its buffers once a chunk has been handed on.
    this.pieces.push(Buffer.from(chunk.subarray(from, to)));
  }

  private finish(chunk: Buffer, from: number, to: number): JsonArrayRecord {
    this.take(chunk, from, to);
    const bytes = this.pieces.length === 1 ? this.pieces[0] : Buffer.concat(this.pieces);
    this.pieces = [];
    const rec = { index: this.index - 1, ...this.start };
    try {
      return { ...rec, text: this.decoder.decode(bytes) };
    } catch {
      return { ...rec, text: '', error: `${recordWhere(this.file, rec)}: the record is not valid UTF-8 — convert the file to UTF-8 (e.g. iconv -f GBK -t UTF-8)` };
    }
  }

  /** A break in the array's structure at byte i of chunk. Bytes that are not UTF-8 in the record
   *  being read are the likelier cause (a GBK byte can look like a quote or a backslash): say so. */
  private structural(what: string, i: number, chunk: Buffer): never {
    // A continuation byte belongs to the character before it (a stray one, to column 1 at least).
    const column = (chunk[i] & 0xc0) !== 0x80 ? this.column + 1 : Math.max(1, this.column);
    this.checkUtf8();
    throw new SftError(`${this.file}:${this.line}:${column}: ${what}`);
  }

  private checkUtf8(): void {
    if (this.pieces.length === 0) return;
    try {
      this.decoder.decode(Buffer.concat(this.pieces));
    } catch {
      throw new SftError(
        `${recordWhere(this.file, { index: this.index - 1, ...this.start })}: the record is not valid UTF-8, and the array cannot be read past it — ` +
          'convert the file to UTF-8 (e.g. iconv -f GBK -t UTF-8)',
      );
    }
  }

  private shown(chunk: Buffer, i: number): string {
    const b = chunk[i];
    return b >= 0x20 && b < 0x7f ? JSON.stringify(String.fromCharCode(b)) : `byte 0x${b.toString(16).padStart(2, '0')}`;
  }
}

/** Yields the records of the array in `file`, in order. */
export async function* readJsonArray(file: string, opts: JsonArrayOptions = {}): AsyncGenerator<JsonArrayRecord> {
  const scanner = new JsonArrayScanner(file, opts);
  const stream = createReadStream(file, { highWaterMark: opts.chunkSize ?? 1 << 20 });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) yield* scanner.feed(chunk);
  } catch (err) {
    throw readError(file, err);
  } finally {
    stream.destroy();
  }
  yield* scanner.end();
}

function sizeText(bytes: number): string {
  return bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(0)} MiB` : `${bytes} bytes`;
}

function readError(file: string, err: unknown): unknown {
  if (err instanceof SftError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ENOENT') return new SftError(`${file}: no such file — check the data path`);
  if (e.code === 'EISDIR') return new SftError(`${file}: is a directory — name a data file`);
  return err;
}
