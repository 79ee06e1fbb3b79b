// The KV-cache path (shared few-shot prefix computed once per subject, each question fed on top)
// against full-prompt scoring (one forward pass over the whole prompt, no cache): same answers and
// the same letter logits, on real C-Eval 5-shot prompts, with and without shots dropped to fit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { initModel } from '../../src/model/init.js';
import { loadModel, type LoadedModel } from '../../src/model/load.js';
import { loadSubjects, type Subject } from '../../src/eval/datasets.js';
import { PROMPT_STYLES, buildPrompt } from '../../src/eval/prompts.js';
import { makeScorer } from '../../src/eval/score.js';
import { evaluateSubject, type EvaluateOptions, type SubjectResult } from '../../src/eval/evaluate.js';

const CEVAL = join(packageRoot, '..', 'shared', 'ceval');
const skip = existsSync(CEVAL) ? false : `C-Eval data not found at ${CEVAL}`;

// Short subjects, a few questions each: the full-prompt path recomputes every prompt.
const SUBJECTS = ['middle_school_geography', 'high_school_biology'];
const QUESTIONS = 6;

async function setup(): Promise<{ loaded: LoadedModel; subjects: Subject[] }> {
  const all = loadSubjects({ benchmark: 'ceval', dir: CEVAL, split: 'val', only: SUBJECTS });
  const subjects = all.map((s) => ({ ...s, questions: s.questions.slice(0, QUESTIONS) }));
  // A tokenizer trained on the subjects' own text keeps the prompts short.
  const texts = all.flatMap((s) => [...s.shots, ...s.questions].map((q) => [q.question, ...q.options].join('\n')));
  const dir = join(mkdtempSync(join(tmpdir(), 'sft-eval-score-')), 'model');
  initModel({ arch: 'llama', outDir: dir, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128, vocab: 1024, seed: 5, maxPosition: 4096, force: true, texts });
  return { loaded: await loadModel({ modelDir: dir }), subjects };
}

async function scoreAll(loaded: LoadedModel, subjects: Subject[], mode: 'cached' | 'full', maxContext: number): Promise<{ results: SubjectResult[]; reused: number; computed: number }> {
  const scorer = makeScorer(loaded.model, loaded.native.vocabSize, mode);
  const o: EvaluateOptions = { style: PROMPT_STYLES.ceval, tok: loaded.tok, bos: false, maxContext, shots: 5 };
  const results: SubjectResult[] = [];
  for (const s of subjects) results.push(await evaluateSubject(scorer, s, o));
  return { results, reused: scorer.reused, computed: scorer.computed };
}

function assertSameAnswers(a: SubjectResult[], b: SubjectResult[]): void {
  for (let i = 0; i < a.length; i++) {
    assert.deepEqual(a[i].predictions.map((p) => p.pred), b[i].predictions.map((p) => p.pred), `${a[i].id}: answers differ`);
    assert.deepEqual(a[i].predictions.map((p) => p.shotsUsed), b[i].predictions.map((p) => p.shotsUsed));
    for (let j = 0; j < a[i].predictions.length; j++) {
      const x = a[i].predictions[j].logits, y = b[i].predictions[j].logits;
      for (let k = 0; k < 4; k++) assert.ok(Math.abs(x[k] - y[k]) < 1e-3 * Math.max(1, Math.abs(y[k])), `${a[i].id} q${j} letter ${k}: ${x[k]} vs ${y[k]}`);
    }
  }
}

test('cached-prefix scoring gives the answers and letter logits of full-prompt scoring', { skip }, async () => {
  const { loaded, subjects } = await setup();
  const cached = await scoreAll(loaded, subjects, 'cached', 4096);
  const full = await scoreAll(loaded, subjects, 'full', 4096);
  assertSameAnswers(cached.results, full.results);
  assert.ok(cached.results.every((r) => r.shotsDropped === 0));
  // The subject's header and shots were computed once: every later question reused them.
  const prefix = (s: Subject) => buildPrompt({ style: PROMPT_STYLES.ceval, tok: loaded.tok, bos: false, maxContext: 4096 }, s, s.shots, s.questions[0]).ids.length - loaded.tok.encode(PROMPT_STYLES.ceval.body(s.questions[0])).length;
  const minReuse = subjects.reduce((n, s) => n + (s.questions.length - 1) * prefix(s), 0);
  assert.ok(cached.reused >= minReuse, `reused ${cached.reused} tokens, expected at least ${minReuse}`);
  assert.equal(cached.reused + cached.computed, full.computed);

  // A context too small for five shots: both paths drop the same shots and still agree.
  const lens = subjects[0].questions.map((q) => buildPrompt({ style: PROMPT_STYLES.ceval, tok: loaded.tok, bos: false, maxContext: 1e9 }, subjects[0], subjects[0].shots, q).ids.length);
  const tight = Math.min(...lens) - 1;
  const cachedTight = await scoreAll(loaded, subjects, 'cached', tight);
  const fullTight = await scoreAll(loaded, subjects, 'full', tight);
  assertSameAnswers(cachedTight.results, fullTight.results);
  assert.equal(cachedTight.results[0].shotsDropped, QUESTIONS, 'every question of the first subject lost shots');
  for (const r of cachedTight.results) for (const p of r.predictions) assert.ok(p.shotsUsed < 5 || r.id !== subjects[0].id);
});
