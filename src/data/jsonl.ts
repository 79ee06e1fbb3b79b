// Streams a JSONL file line by line without ever holding the whole file: training sets can be
// larger than memory. Each line carries its 1-based number and the byte offset where it starts,
// so every error can point at FILE:LINE. (records.ts parses them, and reads JSON arrays too.)
import { createReadStream } from 'node:fs';
import { SftError } from '../errors.js';

export interface JsonlLine {
  /** 1-based line number in the file (blank lines count, they are just not yielded). */
  line: number;
  /** Byte offset of the line's first byte (after a UTF-8 BOM on line 1). */
  offset: number;
  /** The line's text, without its "\n" or "\r\n" ('' when the line is unreadable). */
  text: string;
  /** Set when the line's bytes are not UTF-8: parseRecord raises it, --skip-bad-lines skips it. */
  error?: string;
}

const NEWLINE = 0x0a;
const CR = 0x0d;

/** Yields the non-blank lines of `file`. A line whose bytes are not UTF-8 comes with `error` set
 *  (naming FILE:LINE); parseRecord raises it, so it stops the run unless bad lines are skipped. */
export async function* readJsonlLines(file: string, opts: { chunkSize?: number } = {}): AsyncGenerator<JsonlLine> {
  // fatal: invalid UTF-8 throws instead of silently becoming U+FFFD. ignoreBOM: we strip the BOM
  // ourselves on line 1 only.
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const stream = createReadStream(file, { highWaterMark: opts.chunkSize ?? 1 << 20 });
  let pending: Buffer[] = []; // pieces of a line that spans chunk boundaries
  let lineStart = 0; // byte offset of the current line's start
  let pos = 0; // byte offset of the current chunk's start
  let lineNo = 0;

  const finish = (bytes: Buffer): JsonlLine | undefined => {
    lineNo++;
    let start = lineStart;
    let body = bytes;
    if (lineNo === 1 && body.length >= 3 && body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf) {
      body = body.subarray(3); // a UTF-8 BOM is not part of the first record
      start += 3;
    }
    if (body.length > 0 && body[body.length - 1] === CR) body = body.subarray(0, body.length - 1);
    let text: string;
    try {
      text = decoder.decode(body);
    } catch {
      const error = `${file}:${lineNo}: the line is not valid UTF-8 — convert the file to UTF-8 (e.g. iconv -f GBK -t UTF-8)`;
      return { line: lineNo, offset: start, text: '', error };
    }
    if (text.trim() === '') return undefined;
    return { line: lineNo, offset: start, text };
  };

  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let from = 0;
      for (let nl = chunk.indexOf(NEWLINE, from); nl !== -1; nl = chunk.indexOf(NEWLINE, from)) {
        const piece = chunk.subarray(from, nl);
        const bytes = pending.length ? Buffer.concat([...pending, piece]) : piece;
        pending = [];
        const rec = finish(bytes);
        if (rec) yield rec;
        from = nl + 1;
        lineStart = pos + from;
      }
      if (from < chunk.length) pending.push(chunk.subarray(from));
      pos += chunk.length;
    }
  } catch (err) {
    if (err instanceof SftError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new SftError(`${file}: no such file — check the data path`);
    if (e.code === 'EISDIR') throw new SftError(`${file}: is a directory — name a .jsonl file`);
    throw err;
  } finally {
    stream.destroy();
  }
  if (pending.length) {
    const rec = finish(Buffer.concat(pending)); // last line without a trailing newline
    if (rec) yield rec;
  }
}
