// CSV as the benchmarks' scripts read their files with pandas.read_csv: comma-separated; a field may
// be wrapped in double quotes, and then holds commas, line breaks (C-Eval's explanations do) and
// quotes written twice (""); LF or CRLF line ends; a UTF-8 byte-order mark is ignored; blank lines
// are skipped (pandas' skip_blank_lines). Every field stays text: pandas would turn a column of
// numbers into int/float, but the prompts print them back as the same digits, except floats such
// as "1.50" (printed "1.5") — C-Eval has no all-numeric column, so text is what the prompts see.
import { SftError } from '../errors.js';
import { describeBadByte, strictUtf8 } from '../io/utf8.js';

export interface CsvRow {
  fields: string[];
  /** 1-based line where the row starts, for error messages. */
  line: number;
}

/** A CSV file's text (a byte-order mark kept for parseCsv to drop). Bytes that are not UTF-8 are an
 *  error naming the line, as pandas' default encoding refuses them: read loosely, they would become
 *  U+FFFD in a question or an answer, and the prompt would no longer be the benchmark's. */
export function decodeCsv(bytes: Uint8Array, file: string): string {
  const decoded = strictUtf8(bytes);
  if ('text' in decoded) return decoded.text;
  let line = 1;
  for (let k = bytes.indexOf(0x0a); k >= 0 && k < decoded.badByte; k = bytes.indexOf(0x0a, k + 1)) line++;
  throw new SftError(`${file}:${line}: not valid UTF-8 (${describeBadByte(bytes, decoded.badByte)}); save the file as UTF-8, as the benchmark publishes it`);
}

export function parseCsv(text: string, file: string): CsvRow[] {
  const rows: CsvRow[] = [];
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let line = 1;
  while (i < text.length) {
    const start = line;
    const fields: string[] = [];
    // One row: fields until an unquoted line end or the end of the text.
    for (;;) {
      // Text is copied a run at a time (between quotes, or up to a separator): a field of a
      // megabyte is one slice, not a million appends.
      let field = '';
      if (text[i] === '"') {
        i++;
        for (;;) {
          const q = text.indexOf('"', i);
          if (q < 0) throw new SftError(`${file}:${start}: a quoted field is never closed (a '"' is missing) — is the file cut short?`);
          for (let nl = text.indexOf('\n', i); nl >= 0 && nl < q; nl = text.indexOf('\n', nl + 1)) line++;
          field += text.slice(i, q);
          if (text[q + 1] === '"') {
            field += '"';
            i = q + 2;
            continue;
          }
          i = q + 1;
          break;
        }
      }
      // Unquoted text, or text after a closing quote (kept, as pandas keeps it).
      let end = i;
      while (end < text.length) {
        const c = text.charCodeAt(end);
        if (c === 0x2c || c === 0x0a || c === 0x0d) break; // , \n \r
        end++;
      }
      field += text.slice(i, end);
      i = end;
      fields.push(field);
      if (text[i] === ',') {
        i++;
        continue;
      }
      break;
    }
    if (text[i] === '\r') i++;
    if (text[i] === '\n') i++;
    line++;
    if (fields.length === 1 && fields[0] === '') continue; // blank line
    rows.push({ fields, line: start });
  }
  return rows;
}
