// The results table — per subject, per category and overall — as console text, Markdown and JSON,
// and C-Eval's test-split submission file. Averages come two ways, both reported: the mean of the
// subjects' accuracies (CMMLU's get_results; C-Eval's leaderboard is believed to use it too, not
// confirmed) and the share of all questions answered right (Baichuan's and hendrycks' MMLU scripts).
import type { Letter } from './datasets.js';
import { CATEGORY_ORDER } from './datasets.js';
import type { SubjectResult } from './evaluate.js';

export interface Average {
  subjects: number;
  questions: number;
  /** Mean of the subjects' accuracies, percent; null without answers. */
  subjectMean: number | null;
  /** Right answers over all questions, percent; null without answers. */
  questionMean: number | null;
}

export interface EvalSettings {
  benchmark: string;
  split: string;
  model: string;
  adapter?: string;
  /** "completion" or the chat template's name. */
  prompt: string;
  shots: number;
  maxContext: number;
  bos: boolean;
  batchSize: number;
  /** A, B, C, D token ids of the first question (for the record). */
  letterIds?: number[];
}

export interface EvalReport extends EvalSettings {
  subjects: SubjectResult[];
  categories: (Average & { name: string })[];
  average: Average;
  /** Questions scored with fewer shots than asked, over all subjects. */
  shotsDropped: number;
  truncated: number;
  notes: string[];
  seconds: number;
}

export function buildReport(settings: EvalSettings, subjects: SubjectResult[], seconds: number): EvalReport {
  const names = CATEGORY_ORDER.filter((c) => subjects.some((s) => s.categories.includes(c)));
  const extra = [...new Set(subjects.flatMap((s) => s.categories))].filter((c) => !CATEGORY_ORDER.includes(c));
  const categories = [...names, ...extra].map((name) => ({ name, ...average(subjects.filter((s) => s.categories.includes(name))) }));
  const shotsDropped = sum(subjects.map((s) => s.shotsDropped));
  const truncated = sum(subjects.map((s) => s.truncated));
  const mismatch = sum(subjects.map((s) => s.letterMismatch));
  const notes: string[] = [];
  if (shotsDropped) notes.push(`${shotsDropped} question(s) did not fit ${settings.maxContext} tokens with ${settings.shots} shots and were scored with fewer.`);
  if (truncated) notes.push(`${truncated} question(s) did not fit even with no shots: their prompts lost their first tokens.`);
  if (mismatch) notes.push(`${mismatch} question(s): the tokenizer spells the answer letters A-D so differently after the prompt that no single next token tells them apart; their answers are unreliable.`);
  if (settings.batchSize > 1) notes.push(`--batch-size ${settings.batchSize}: whole prompts scored ${settings.batchSize} per forward pass (right-padded; no KV-cache prefix reuse).`);
  if (subjects.some((s) => s.accuracy === null)) notes.push(`The ${settings.split} split has no answers: no accuracy; predictions are in the submission file.`);
  return { ...settings, subjects, categories, average: average(subjects), shotsDropped, truncated, notes, seconds };
}

function average(subjects: SubjectResult[]): Average {
  const scored = subjects.filter((s) => s.accuracy !== null);
  const questions = sum(subjects.map((s) => s.questions));
  const ok = scored.length > 0 && scored.length === subjects.length;
  return {
    subjects: subjects.length,
    questions,
    subjectMean: ok ? sum(scored.map((s) => s.accuracy!)) / scored.length : null,
    questionMean: ok && questions > 0 ? (100 * sum(scored.map((s) => s.correct!))) / questions : null,
  };
}

/** Console table: subjects, then categories and the average. */
export function renderTable(r: EvalReport): string {
  const w = Math.max(24, ...r.subjects.map((s) => s.id.length)) + 2;
  const pct = (x: number | null) => (x === null ? '-' : x.toFixed(2));
  const lines = [title(r), ''];
  lines.push(`${'subject'.padEnd(w)}${'category'.padEnd(16)}${'questions'.padStart(10)}${'accuracy'.padStart(10)}${'shots dropped'.padStart(15)}`);
  for (const s of r.subjects) {
    lines.push(`${s.id.padEnd(w)}${s.categories.join(', ').padEnd(16)}${String(s.questions).padStart(10)}${pct(s.accuracy).padStart(10)}${String(s.shotsDropped).padStart(15)}`);
  }
  lines.push('');
  lines.push(`${''.padEnd(w)}${'subjects'.padStart(10)}${'questions'.padStart(10)}${'subject mean'.padStart(14)}${'question mean'.padStart(15)}`);
  for (const c of [...r.categories, { name: 'Average', ...r.average }]) {
    lines.push(`${c.name.padEnd(w)}${String(c.subjects).padStart(10)}${String(c.questions).padStart(10)}${pct(c.subjectMean).padStart(14)}${pct(c.questionMean).padStart(15)}`);
  }
  if (r.notes.length) lines.push('', ...r.notes);
  return lines.join('\n') + '\n';
}

export function renderMarkdown(r: EvalReport): string {
  const pct = (x: number | null) => (x === null ? '-' : x.toFixed(2));
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  const lines = [`# ${title(r)}`, ''];
  lines.push(`Model \`${r.model}\`${r.adapter ? `, adapter \`${r.adapter}\`` : ''}; BOS ${r.bos ? 'on' : 'off'}; ${r.seconds.toFixed(0)} s.`, '');
  lines.push('| Category | Subjects | Questions | Accuracy (subject mean) | Accuracy (question mean) |', '|---|---:|---:|---:|---:|');
  for (const c of [...r.categories, { name: '**Average**', ...r.average }]) {
    lines.push(`| ${c.name} | ${c.subjects} | ${c.questions} | ${pct(c.subjectMean)} | ${pct(c.questionMean)} |`);
  }
  lines.push('', '| Subject | Name | Category | Questions | Accuracy | Shots dropped |', '|---|---|---|---:|---:|---:|');
  for (const s of r.subjects) {
    const name = s.nameZh ? `${s.name} (${s.nameZh})` : s.name;
    lines.push(`| ${s.id} | ${cell(name)} | ${s.categories.join(', ')} | ${s.questions} | ${pct(s.accuracy)} | ${s.shotsDropped} |`);
  }
  if (r.notes.length) lines.push('', ...r.notes.map((n) => `- ${n}`));
  return lines.join('\n') + '\n';
}

/** C-Eval's submission format: {subject: {id: "A", …}, …}. */
export function submissionOf(r: EvalReport): Record<string, Record<string, Letter>> {
  const out: Record<string, Record<string, Letter>> = {};
  for (const s of r.subjects) out[s.id] = Object.fromEntries(s.predictions.map((p) => [p.id, p.pred]));
  return out;
}

function title(r: EvalReport): string {
  const mode = r.prompt === 'completion' ? 'completion prompts' : `chat prompts (template ${r.prompt})`;
  return `${r.benchmark} ${r.split}, ${r.shots}-shot, ${mode}, context ${r.maxContext} tokens`;
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}
