// `sft eval` top to bottom: planEval reads the subjects and checks the options (before the model is
// loaded), runEval scores each subject under a progress bar and builds the report, writeReport
// writes it as JSON and Markdown (and C-Eval's submission file for its test split).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { NativeModel } from '../native/types.js';
import type { Tok } from '../tokenizer/types.js';
import { CHAT_TEMPLATE, getTemplate } from '../data/templates.js';
import { resolveTemplate } from '../data/chat-template.js';
import { SftError } from '../errors.js';
import { BENCHMARKS, loadSubjects, type BenchmarkName, type Subject } from './datasets.js';
import { PROMPT_STYLES, buildPrompt } from './prompts.js';
import { makeScorer, type ScoringMode } from './score.js';
import { evaluateSubject, type SubjectResult } from './evaluate.js';
import { buildReport, renderMarkdown, submissionOf, type EvalReport } from './report.js';
import { SubjectProgress } from './progress.js';

export interface PlanOptions {
  benchmark: BenchmarkName;
  dir: string;
  split: string;
  /** Subject handles; all when absent. */
  subjects?: string[];
  shots: number;
  /** Firefly template name: chat-mode prompts. */
  template?: string;
  /** Accepted and recorded; questions are scored one at a time on the batch-1 KV cache, which
   *  computes the shared few-shot prefix once per subject (batching across questions: later). */
  batchSize: number;
}

/** What to score, read and checked before any model is loaded, so a wrong option fails fast. */
export interface EvalPlan {
  benchmark: BenchmarkName;
  split: string;
  subjects: Subject[];
  shots: number;
  /** Chat mode's template name ("chat_template": the model's own, read with its tokenizer). */
  templateName?: string;
  batchSize: number;
}

export function planEval(o: PlanOptions): EvalPlan {
  if (!Number.isInteger(o.shots) || o.shots < 0) throw new SftError(`--shots ${o.shots}: give a whole number from 0 (zero-shot) up to the dev examples per subject (5)`);
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw new SftError(`--batch-size ${o.batchSize}: give a positive whole number`);
  // A misspelt name fails before the model is loaded.
  if (o.template !== undefined && o.template !== CHAT_TEMPLATE) getTemplate(o.template);
  const subjects = loadSubjects({ benchmark: o.benchmark, dir: o.dir, split: o.split, only: o.subjects });
  for (const s of subjects) {
    if (o.shots > s.shots.length) throw new SftError(`--shots ${o.shots}: subject ${s.id} has ${s.shots.length} dev examples; ask for at most ${s.shots.length}`);
  }
  return { benchmark: o.benchmark, split: o.split, subjects, shots: o.shots, templateName: o.template, batchSize: o.batchSize };
}

export interface RunOptions {
  model: NativeModel;
  tok: Tok;
  vocabSize: number;
  /** Longest prompt in tokens. */
  maxContext: number;
  /** Start prompts with the tokenizer's BOS id. */
  bos: boolean;
  /** Default: 'cached' for batch size 1, 'batched' above; 'full' (no cache) is the reference. */
  scoring?: ScoringMode;
  /** For the report. */
  modelDir: string;
  adapterDir?: string;
  /** Where progress goes (default stdout). */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
}

export async function runEval(plan: EvalPlan, o: RunOptions): Promise<EvalReport> {
  if (!Number.isInteger(o.maxContext) || o.maxContext < 1) throw new SftError(`--max-context ${o.maxContext}: give a positive number of tokens`);
  const t0 = Date.now();
  const { subjects } = plan;
  const template = plan.templateName === undefined ? undefined : resolveTemplate(plan.templateName, o.tok);
  const style = PROMPT_STYLES[plan.benchmark];
  const scorer = makeScorer(o.model, o.vocabSize, o.scoring ?? (plan.batchSize > 1 ? 'batched' : 'cached'));
  const progress = new SubjectProgress(o.stream);
  const hasAnswers = BENCHMARKS[plan.benchmark].hasAnswers(plan.split);
  const promptOpts = { style, tok: o.tok, template, bos: o.bos, maxContext: o.maxContext, shots: plan.shots, batchSize: plan.batchSize };

  const results: SubjectResult[] = [];
  for (const [i, subject] of subjects.entries()) {
    progress.start(i, subjects.length, subject.id, subject.questions.length);
    const r = await evaluateSubject(scorer, subject, { ...promptOpts, onQuestion: (done, correct) => progress.update(done, hasAnswers ? correct : null) });
    progress.finish(r.questions, r.correct);
    results.push(r);
  }
  const first = subjects.find((s) => s.questions.length > 0);
  const letterIds = first ? buildPrompt(promptOpts, first, [], first.questions[0]).letterIds : undefined;
  return buildReport(
    {
      benchmark: BENCHMARKS[plan.benchmark].title,
      split: plan.split,
      model: o.modelDir,
      adapter: o.adapterDir,
      prompt: template ? template.name : 'completion',
      shots: plan.shots,
      maxContext: o.maxContext,
      bos: o.bos,
      batchSize: plan.batchSize,
      letterIds,
    },
    results,
    (Date.now() - t0) / 1000,
  );
}

export interface WrittenFiles {
  json: string;
  markdown: string;
  submission?: string;
}

/** report.json + report.md beside it; for C-Eval's test split also report.submission.json. */
export function writeReport(report: EvalReport, out: string): WrittenFiles {
  const base = out.endsWith('.json') ? out.slice(0, -'.json'.length) : out;
  mkdirSync(dirname(out), { recursive: true });
  const files: WrittenFiles = { json: `${base}.json`, markdown: `${base}.md` };
  writeFileSync(files.json, JSON.stringify(report, null, 1) + '\n');
  writeFileSync(files.markdown, renderMarkdown(report));
  if (report.benchmark === BENCHMARKS.ceval.title && report.split === 'test') {
    files.submission = `${base}.submission.json`;
    writeFileSync(files.submission, JSON.stringify(submissionOf(report), null, 1) + '\n');
  }
  return files;
}

/** Whether the tokenizer adds BOS by itself in transformers: tokenizer_config.json's add_bos_token
 *  (Llama-2: true; Qwen2, Baichuan2: false). Unset: false. */
export function tokenizerAddsBos(tokenizerDir: string): boolean {
  const file = join(tokenizerDir, 'tokenizer_config.json');
  if (!existsSync(file)) return false;
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { add_bos_token?: unknown }).add_bos_token === true;
  } catch {
    return false;
  }
}

/** The context length config.json declares (max_position_embeddings; Baichuan2 also model_max_length). */
export function contextOf(hf: Record<string, unknown>, modelDir: string): number {
  for (const key of ['max_position_embeddings', 'model_max_length', 'seq_length']) {
    const v = hf[key];
    if (typeof v === 'number' && Number.isInteger(v) && v > 0) return v;
  }
  throw new SftError(`${join(modelDir, 'config.json')} declares no max_position_embeddings: give --max-context N`);
}
