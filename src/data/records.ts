// A data file's records, whatever its layout: JSON Lines (one record per line, Firefly's and
// Qwen's data) or one JSON array (LLaMA-Factory's data, alpaca_zh.json). The layout is told by the
// content, not the name: a file whose first character (after a byte-order mark and whitespace) is
// "[" is an array; anything else is read as JSON Lines, also when it is called .json, as Hugging
// Face's json loader does.
import { openSync, readSync, closeSync } from 'node:fs';
import { SftError } from '../errors.js';
import { readJsonlLines } from './jsonl.js';
import { readJsonArray, recordWhere } from './json-array.js';

export type DataLayout = 'jsonl' | 'json-array';

export const LAYOUT_NAMES: Record<DataLayout, string> = { jsonl: 'JSON Lines', 'json-array': 'a JSON array' };

/** One record, from either layout. */
export interface DataRecord {
  /** How messages about it start: "FILE:LINE" or "FILE:LINE:COLUMN (record N, .[N-1])". */
  where: string;
  /** The record's JSON text ('' when `error` is set). */
  text: string;
  /** Set when the bytes are not UTF-8: parseRecord raises it, skipBadLines skips it. */
  error?: string;
  /** 'line' or 'record', for the advice in messages. */
  unit: 'line' | 'record';
}

/** The layout of `file`, from its first bytes. */
export function detectLayout(file: string): DataLayout {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new SftError(`${file}: no such file — check the data path`);
    if (e.code === 'EISDIR') throw new SftError(`${file}: is a directory — name a data file`);
    throw err;
  }
  try {
    const buf = Buffer.alloc(64 * 1024);
    let pos = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) return 'jsonl';
      let i = 0;
      if (pos === 0 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) i = 3;
      for (; i < n; i++) {
        const b = buf[i];
        if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) continue;
        return b === 0x5b ? 'json-array' : 'jsonl';
      }
      pos += n;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EISDIR') throw new SftError(`${file}: is a directory — name a data file`);
    throw err;
  } finally {
    closeSync(fd);
  }
}

/** The records of `file` in order, one in memory at a time. */
export async function* readRecords(file: string, opts: { chunkSize?: number; layout?: DataLayout } = {}): AsyncGenerator<DataRecord> {
  const layout = opts.layout ?? detectLayout(file);
  if (layout === 'json-array') {
    for await (const r of readJsonArray(file, opts)) yield { where: recordWhere(file, r), text: r.text, error: r.error, unit: 'record' };
  } else {
    for await (const l of readJsonlLines(file, opts)) yield { where: `${file}:${l.line}`, text: l.text, error: l.error, unit: 'line' };
  }
}

/** JSON.parse with the error a user can act on. */
export function parseRecord(rec: DataRecord): unknown {
  if (rec.error) throw new SftError(rec.error);
  try {
    return JSON.parse(rec.text);
  } catch (err) {
    const text = rec.text.trim();
    // A line that only opens an object or an array: the file is JSON pretty-printed over lines.
    const spread = rec.unit === 'line' && (text === '{' || text === '[');
    const hint = spread
      ? ' — this looks like JSON written over several lines: JSON Lines holds one record per line ' +
        "(jq -c '.[]' in.json > out.jsonl for an array), and a .json data file may hold one array of records [ {...}, {...} ]"
      : ` — fix or delete the ${rec.unit}`;
    throw new SftError(`${rec.where}: malformed JSON (${(err as Error).message})${hint}`);
  }
}
