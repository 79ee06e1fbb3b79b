// Averages per category and overall, both ways, worked out by hand; the Markdown table and C-Eval's
// submission file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildReport, renderMarkdown, renderTable, submissionOf, type EvalSettings } from '../../src/eval/report.js';
import type { SubjectResult } from '../../src/eval/evaluate.js';

const settings: EvalSettings = { benchmark: 'C-Eval', split: 'val', model: 'm', prompt: 'completion', shots: 5, maxContext: 2048, bos: false, batchSize: 1 };

function subject(id: string, category: string, questions: number, correct: number | null, shotsDropped = 0): SubjectResult {
  return {
    id, name: id, categories: [category], questions, correct, accuracy: correct === null ? null : (100 * correct) / questions,
    shots: 5, shotsDropped, truncated: 0, letterMismatch: 0,
    predictions: Array.from({ length: questions }, (_, i) => ({ id: String(i), pred: 'ABCD'[i % 4] as 'A', logits: [0, 0, 0, 0], shotsUsed: 5, truncated: false })),
  };
}

test('category and overall averages: mean of subject accuracies and share of questions', () => {
  // STEM: 1/2 (50 %) and 3/4 (75 %); Humanities: 1/4 (25 %).
  const r = buildReport(settings, [subject('a', 'STEM', 2, 1), subject('b', 'STEM', 4, 3, 2), subject('c', 'Humanities', 4, 1)], 1);
  assert.deepEqual(r.categories.map((c) => c.name), ['STEM', 'Humanities']);
  const stem = r.categories[0];
  assert.equal(stem.subjectMean, 62.5); // (50 + 75) / 2
  assert.equal(stem.questionMean, (100 * 4) / 6);
  assert.equal(r.average.subjectMean, 50); // (50 + 75 + 25) / 3
  assert.equal(r.average.questionMean, 50); // 5 / 10
  assert.equal(r.average.questions, 10);
  assert.equal(r.shotsDropped, 2);
  assert.match(r.notes.join('\n'), /2 question\(s\) did not fit 2048 tokens with 5 shots/);
  const table = renderTable(r);
  assert.match(table, /^Average\s+3\s+10\s+50\.00\s+50\.00$/m);
  assert.match(table, /^b\s+STEM\s+4\s+75\.00\s+2$/m);
  const md = renderMarkdown(r);
  assert.match(md, /\| STEM \| 2 \| 6 \| 62\.50 \| 66\.67 \|/);
  assert.match(md, /\| \*\*Average\*\* \| 3 \| 10 \| 50\.00 \| 50\.00 \|/);
});

test('no answers (C-Eval test): no accuracy, and the submission maps subject -> id -> letter', () => {
  const r = buildReport({ ...settings, split: 'test' }, [subject('law', 'Humanities', 3, null)], 1);
  assert.equal(r.average.subjectMean, null);
  assert.match(renderTable(r), /^law\s+Humanities\s+3\s+-\s+0$/m);
  assert.deepEqual(submissionOf(r), { law: { '0': 'A', '1': 'B', '2': 'C' } });
});

test('writeReport: JSON and Markdown side by side, plus the submission file for C-Eval test', async () => {
  const { writeReport } = await import('../../src/eval/run.js');
  const dir = mkdtempSync(join(tmpdir(), 'sft-eval-report-'));
  const test = buildReport({ ...settings, split: 'test' }, [subject('law', 'Humanities', 2, null)], 1);
  const files = writeReport(test, join(dir, 'sub', 'ceval.json'));
  assert.deepEqual(files, { json: join(dir, 'sub', 'ceval.json'), markdown: join(dir, 'sub', 'ceval.md'), submission: join(dir, 'sub', 'ceval.submission.json') });
  assert.deepEqual(JSON.parse(readFileSync(files.submission!, 'utf8')), { law: { '0': 'A', '1': 'B' } });
  assert.equal(JSON.parse(readFileSync(files.json, 'utf8')).subjects[0].id, 'law');
  assert.match(readFileSync(files.markdown, 'utf8'), /^# C-Eval test, 5-shot/);
  // A labelled split has no submission file.
  const val = writeReport(buildReport(settings, [subject('law', 'Humanities', 2, 1)], 1), join(dir, 'val.json'));
  assert.equal(val.submission, undefined);
  assert.ok(!existsSync(join(dir, 'val.submission.json')));
});
