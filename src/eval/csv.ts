// CSV as the benchmarks' scripts read their files with pandas.read_csv: comma-separated; a field may
// be wrapped in double quotes, and then holds commas, line breaks (C-Eval's explanations do) and
// quotes written twice (""); LF or CRLF line ends; a UTF-8 byte-order mark is ignored; blank lines
// are skipped (pandas' skip_blank_lines). Every field stays text: pandas would turn a column of
// numbers into int/float, but the prompts print them back as the same digits, except floats such
// as "1.50" (printed "1.5") — C-Eval has no all-numeric column, so text is what the prompts see.
import { SftError } from '../errors.js';

export interface CsvRow {
  fields: string[];
  /** 1-based line where the row starts, for error messages. */
  line: number;
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
      let field = '';
      if (text[i] === '"') {
        i++;
        for (;;) {
          if (i >= text.length) throw new SftError(`${file}:${start}: a quoted field is never closed (a '"' is missing) — is the file cut short?`);
          const c = text[i];
          if (c === '"') {
            if (text[i + 1] === '"') {
              field += '"';
              i += 2;
              continue;
            }
            i++;
            break;
          }
          if (c === '\n') line++;
          field += c;
          i++;
        }
      }
      // Unquoted text, or text after a closing quote (kept, as pandas keeps it).
      while (i < text.length && text[i] !== ',' && text[i] !== '\n' && text[i] !== '\r') field += text[i++];
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
