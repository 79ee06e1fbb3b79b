// Scores one subject: for each question, the prompt with the subject's first `shots` dev examples
// (fewer when it would not fit the context), the next-token logits of the four option letters, and
// the letter with the highest one as the model's answer.
import type { Tok } from '../tokenizer/types.js';
import type { ChatTemplate } from '../data/templates.js';
import { LETTERS, type Letter, type Subject } from './datasets.js';
import { buildPrompt, type PromptStyle } from './prompts.js';
import { argmax, type NextTokenScorer } from './score.js';

export interface QuestionResult {
  id: string;
  pred: Letter;
  answer?: Letter;
  /** Logits of A, B, C, D. */
  logits: number[];
  shotsUsed: number;
  truncated: boolean;
}

export interface SubjectResult {
  id: string;
  name: string;
  nameZh?: string;
  categories: string[];
  questions: number;
  /** null when the split has no answers (C-Eval test). */
  correct: number | null;
  /** Percent, null without answers. */
  accuracy: number | null;
  /** Shots asked for (dev examples used at most). */
  shots: number;
  /** Questions whose prompt dropped one or more shots to fit the context. */
  shotsDropped: number;
  /** Questions too long even without shots: their prompt lost its first tokens. */
  truncated: number;
  /** Questions whose letters could not be read as one next token (see BuiltPrompt). */
  letterMismatch: number;
  predictions: QuestionResult[];
}

export interface EvaluateOptions {
  style: PromptStyle;
  tok: Tok;
  /** Chat mode when set. */
  template?: ChatTemplate;
  bos: boolean;
  maxContext: number;
  /** Dev examples to put before each question (at most the subject's). */
  shots: number;
  /** Called after each question with the count done and the count right so far. */
  onQuestion?: (done: number, correct: number) => void;
  /** Questions scored together (the scorer decides whether that is one forward pass). */
  batchSize?: number;
}

export async function evaluateSubject(scorer: NextTokenScorer, subject: Subject, o: EvaluateOptions): Promise<SubjectResult> {
  const shots = subject.shots.slice(0, o.shots);
  const predictions: QuestionResult[] = [];
  let correct = 0, shotsDropped = 0, truncated = 0, letterMismatch = 0;
  const bs = Math.max(1, o.batchSize ?? 1);
  for (let start = 0; start < subject.questions.length; start += bs) {
    const group = subject.questions.slice(start, start + bs);
    const prompts = group.map((q) => buildPrompt(o, subject, shots, q));
    const logitsList = await scorer.nextMany(prompts.map((p) => p.ids));
    group.forEach((q, k) => {
      const p = prompts[k];
      const letterLogits = p.letterIds.map((id) => logitsList[k][id]);
      const pred = LETTERS[argmax(letterLogits)];
      predictions.push({ id: q.id, pred, answer: q.answer, logits: letterLogits, shotsUsed: p.shotsUsed, truncated: p.truncated });
      if (q.answer !== undefined && pred === q.answer) correct++;
      if (p.shotsUsed < shots.length) shotsDropped++;
      if (p.truncated) truncated++;
      if (p.letterMismatch) letterMismatch++;
      o.onQuestion?.(predictions.length, correct);
    });
  }
  const answered = subject.questions.every((q) => q.answer !== undefined);
  const n = subject.questions.length;
  return {
    id: subject.id,
    name: subject.name,
    nameZh: subject.nameZh,
    categories: subject.categories,
    questions: n,
    correct: answered ? correct : null,
    accuracy: answered && n > 0 ? (100 * correct) / n : null,
    shots: shots.length,
    shotsDropped,
    truncated,
    letterMismatch,
    predictions,
  };
}
