// Reads C-Eval, CMMLU and MMLU from the folders their authors publish, file layout untouched:
//   C-Eval  DIR/{dev,val,test}/{subject}_{split}.csv, header id,question,A,B,C,D,answer,explanation
//           (val has no explanation, test no answer); DIR/subject_mapping.json when present.
//   CMMLU   DIR/{dev,test}/{subject}.csv, header ",Question,A,B,C,D,Answer" (first column: row index).
//   MMLU    DIR/{dev,val,test}/{subject}_{split}.csv, no header: question,A,B,C,D,answer.
// dev holds each subject's few-shot examples; the other splits are what is scored.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SftError } from '../errors.js';
import { nearest } from '../config/suggest.js';
import { JsonSyntaxError, clip, parseJsonObject, showJson } from '../config/json.js';
import { decodeCsv, parseCsv, type CsvRow } from './csv.js';
import { CEVAL_SUBJECTS, CMMLU_SUBJECTS, MMLU_SUBJECTS } from './subjects.js';

export type BenchmarkName = 'ceval' | 'cmmlu' | 'mmlu';
export type Letter = 'A' | 'B' | 'C' | 'D';
export const LETTERS: readonly Letter[] = ['A', 'B', 'C', 'D'];

export interface Question {
  /** The dataset's id column (C-Eval, CMMLU) or the row number from 0 (MMLU): keys of the submission file. */
  id: string;
  question: string;
  options: readonly [string, string, string, string];
  /** Absent in C-Eval's test split. */
  answer?: Letter;
}

export interface Subject {
  /** File-name handle, e.g. "computer_network". */
  id: string;
  /** English name (C-Eval's mapping; the handle with spaces elsewhere). */
  name: string;
  /** Chinese name (C-Eval, CMMLU): the prompt header names the subject with it. */
  nameZh?: string;
  categories: string[];
  /** The dev examples, in file order. */
  shots: Question[];
  questions: Question[];
}

export interface BenchmarkInfo {
  title: string;
  /** Splits that can be scored; the first is the default. */
  splits: readonly string[];
  /** Whether a split's files carry answers (C-Eval's test split does not). */
  hasAnswers(split: string): boolean;
}

export const BENCHMARKS: Record<BenchmarkName, BenchmarkInfo> = {
  ceval: { title: 'C-Eval', splits: ['val', 'test'], hasAnswers: (s) => s !== 'test' },
  cmmlu: { title: 'CMMLU', splits: ['test'], hasAnswers: () => true },
  mmlu: { title: 'MMLU', splits: ['test', 'val'], hasAnswers: () => true },
};

/** Report order of the categories (C-Eval's four, then CMMLU's extra one). */
export const CATEGORY_ORDER = ['STEM', 'Social Science', 'Humanities', 'Other', 'China specific'];

export interface LoadSubjectsOptions {
  benchmark: BenchmarkName;
  dir: string;
  split: string;
  /** Subject handles to keep, in the order given; all when absent. */
  only?: string[];
}

interface SubjectMeta {
  id: string;
  name: string;
  nameZh?: string;
  categories: string[];
}

export function loadSubjects(opts: LoadSubjectsOptions): Subject[] {
  const { benchmark, dir, split } = opts;
  const info = BENCHMARKS[benchmark];
  const flag = `--${benchmark}`;
  if (!existsSync(dir)) throw new SftError(`${flag} ${dir}: no such folder — give the folder that holds the dataset's dev/ and ${info.splits.join('/')}/ folders`);
  if (!info.splits.includes(split)) throw new SftError(`--split ${split}: ${info.title} splits to score are ${info.splits.join(', ')}`);
  const all = subjectTable(benchmark, dir);
  const metas = opts.only ? opts.only.map((id) => pick(all, id, info.title)) : all;
  return metas.map((m) => ({
    ...m,
    shots: readQuestions(benchmark, fileOf(benchmark, dir, 'dev', m.id), true),
    questions: readQuestions(benchmark, fileOf(benchmark, dir, split, m.id), info.hasAnswers(split)),
  }));
}

function subjectTable(benchmark: BenchmarkName, dir: string): SubjectMeta[] {
  switch (benchmark) {
    case 'ceval':
      return Object.entries(cevalMapping(dir)).map(([id, [name, nameZh, category]]) => ({ id, name, nameZh, categories: [category] }));
    case 'cmmlu':
      return Object.entries(CMMLU_SUBJECTS).map(([id, [nameZh, categories]]) => ({ id, name: spaced(id), nameZh, categories: [...categories] }));
    case 'mmlu':
      return Object.entries(MMLU_SUBJECTS).map(([id, category]) => ({ id, name: spaced(id), categories: [category] }));
  }
}

/** The dataset's own subject_mapping.json when the folder has one, else the copy built in. */
function cevalMapping(dir: string): Record<string, readonly [string, string, string]> {
  const file = join(dir, 'subject_mapping.json');
  if (!existsSync(file)) return CEVAL_SUBJECTS;
  const restore = 'restore it from the C-Eval repository or delete it to use the built-in mapping';
  const text = readText(file, 'JSON file');
  if (!text.replace(/^\ufeff/, '').trimStart().startsWith('{')) {
    throw new SftError(`${file}: expected an object {subject: [English name, Chinese name, category]} — ${restore}`);
  }
  let parsed: Record<string, unknown>;
  try {
    parsed = parseJsonObject(text).value;
  } catch (err) {
    if (!(err instanceof JsonSyntaxError)) throw err;
    throw new SftError(`${file}:${err.pos.line}:${err.pos.col}: ${err.invalidJson ? 'not valid JSON: ' : ''}${err.message} — ${restore}`);
  }
  const out: Record<string, readonly [string, string, string]> = {};
  for (const [id, v] of Object.entries(parsed)) {
    if (!Array.isArray(v) || v.length < 3 || !v.every((x) => typeof x === 'string')) {
      throw new SftError(`${file}: ${showJson(id)} should be [English name, Chinese name, category], got ${showJson(v)}`);
    }
    Object.defineProperty(out, id, { value: [v[0], v[1], v[2]], enumerable: true, writable: true, configurable: true });
  }
  // Every later step assumes at least one subject (and --subjects suggests from them).
  if (Object.keys(out).length === 0) throw new SftError(`${file}: lists no subjects — ${restore}`);
  return out;
}

/** A dataset file's text, strictly UTF-8 as the benchmarks publish it; a folder or an unreadable file named as such. */
function readText(file: string, what: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SftError(code === 'EISDIR' ? `${file}: is a folder, not a ${what}` : `${file}: cannot read (${code ?? (err as Error).message})`);
  }
  return decodeCsv(bytes, file);
}

function pick(all: SubjectMeta[], id: string, title: string): SubjectMeta {
  const m = all.find((s) => s.id === id);
  if (m) return m;
  const guess = nearest(id, all.map((s) => s.id));
  throw new SftError(`--subjects: ${showJson(id)} is not one of the ${title} subjects${guess ? ` — did you mean "${guess}"?` : ''} (subjects are file-name handles such as ${showJson(all[0].id)})`);
}

function fileOf(benchmark: BenchmarkName, dir: string, split: string, subject: string): string {
  return benchmark === 'cmmlu' ? join(dir, split, `${subject}.csv`) : join(dir, split, `${subject}_${split}.csv`);
}

/** "high_school_physics" -> "high school physics" */
function spaced(id: string): string {
  return id.split('_').join(' ');
}

function readQuestions(benchmark: BenchmarkName, file: string, withAnswers: boolean): Question[] {
  if (!existsSync(file)) {
    throw new SftError(`${file} not found — is the folder the ${BENCHMARKS[benchmark].title} data folder as published (dev/ and the split folders inside)? --subjects runs a part of it`);
  }
  const rows = parseCsv(readText(file, 'CSV file'), file);
  return benchmark === 'mmlu' ? fromPlainRows(rows, file, withAnswers) : fromHeaderRows(benchmark, rows, file, withAnswers);
}

/** C-Eval and CMMLU: columns found by their header names; CMMLU's unnamed first column is the id. */
function fromHeaderRows(benchmark: BenchmarkName, rows: CsvRow[], file: string, withAnswers: boolean): Question[] {
  if (rows.length === 0) throw new SftError(`${file}: the file is empty — expected a header row and questions`);
  const header = rows[0].fields.map((h) => h.trim().toLowerCase());
  const col = (name: string, needed: boolean): number => {
    const i = header.indexOf(name);
    if (i < 0 && needed) throw new SftError(`${file}:1: no "${name}" column in the header (${clip(rows[0].fields.join(','), 200)})`);
    return i;
  };
  const idCol = benchmark === 'cmmlu' ? 0 : col('id', true);
  const q = col('question', true);
  const opts = LETTERS.map((l) => col(l.toLowerCase(), true));
  const ans = col('answer', withAnswers);
  return rows.slice(1).map((r) => {
    if (r.fields.length !== header.length) throw new SftError(`${file}:${r.line}: ${r.fields.length} fields where the header has ${header.length} — a quote is probably unbalanced`);
    const f = r.fields;
    return makeQuestion(f[idCol], f[q], [f[opts[0]], f[opts[1]], f[opts[2]], f[opts[3]]], ans >= 0 ? f[ans] : undefined, `${file}:${r.line}`, withAnswers);
  });
}

/** MMLU: no header, six columns; the id is the row number. */
function fromPlainRows(rows: CsvRow[], file: string, withAnswers: boolean): Question[] {
  return rows.map((r, i) => {
    const f = r.fields;
    if (f.length !== 6) throw new SftError(`${file}:${r.line}: ${f.length} fields, expected 6 (question,A,B,C,D,answer) — a quote is probably unbalanced`);
    return makeQuestion(String(i), f[0], [f[1], f[2], f[3], f[4]], f[5], `${file}:${r.line}`, withAnswers);
  });
}

function makeQuestion(id: string, question: string, options: [string, string, string, string], answer: string | undefined, where: string, withAnswers: boolean): Question {
  if (!withAnswers) return { id, question, options };
  const a = (answer ?? '').trim();
  if (!(LETTERS as readonly string[]).includes(a)) throw new SftError(`${where}: answer ${showJson(answer ?? '')} is not one of A, B, C, D`);
  return { id, question, options, answer: a as Letter };
}
