// Evaluation during training: when it runs (eval_strategy, eval_steps, do_eval), what it computes
// (eval_loss), and which step is the best so far (metric_for_best_model, greater_is_better).
//
// eval_loss is the mean token cross-entropy over ALL trained (assistant) tokens of eval_file, encoded
// exactly as training encodes train_file (template, max_seq_length, truncation; labels -100 are not
// counted): sum over the whole set / number of such tokens. HF's Trainer averages differently: it
// takes each batch's mean loss and averages those, weighted by the batch's sample count, so a batch
// of short answers counts as much as one of long answers; on a set whose batches hold equal numbers
// of target tokens the two agree. sft's figure does not depend on per_device_eval_batch_size.
//
// It is computed by forward passes in eval mode (no dropout) that read and write nothing the
// training uses: no random numbers are drawn, the data order and the optimizer state are untouched,
// so a run with evaluation trains exactly as the same run without it.
import type { NativeModel } from '../native/types.js';
import type { TrainConfig } from '../config/schema.js';
import type { PreparedDataset } from '../data/dataset.js';
import { IGNORE } from '../data/encode.js';
import { resolveInterval } from './schedule.js';

export interface EvalPlan {
  /** Evaluate after step `done` (1-based count of optimizer steps done)? */
  at(done: number): boolean;
  /** In words, for the start of the run. */
  describe: string;
}

/**
 * When evaluations happen, as HF's DefaultFlowCallback decides: "steps" every eval_steps (null:
 * logging_steps; < 1: a ratio of the total, rounded up) and after the last step if it is not a
 * multiple (HF 5); "epoch" at the step that completes each epoch; "no" never, except once after the
 * last step when do_eval is true (what HF's example scripts do with trainer.evaluate()).
 */
export function evalPlan(cfg: Pick<TrainConfig, 'eval_strategy' | 'eval_steps' | 'logging_steps' | 'do_eval'>, totalSteps: number, epochEnds: (done: number) => boolean): EvalPlan {
  if (cfg.eval_strategy === 'steps') {
    const every = Math.max(1, resolveInterval(cfg.eval_steps ?? cfg.logging_steps, totalSteps));
    return { at: (d) => d % every === 0 || d === totalSteps, describe: `every ${every} steps and after the last` };
  }
  if (cfg.eval_strategy === 'epoch') return { at: (d) => epochEnds(d) || d === totalSteps, describe: 'at the end of each epoch' };
  if (cfg.do_eval) return { at: (d) => d === totalSteps, describe: 'once, after the last step (do_eval)' };
  return { at: () => false, describe: 'never' };
}

/** Whether step `done` completes an epoch: its micro-batches cross an epoch boundary. */
export function epochEndsAt(done: number, accum: number, batchesPerEpoch: number): boolean {
  return Math.floor((done * accum) / batchesPerEpoch) > Math.floor(((done - 1) * accum) / batchesPerEpoch);
}

export interface EvalLoss {
  /** Mean cross-entropy per trained token (nats). */
  loss: number;
  /** Trained tokens counted. */
  tokens: number;
  samples: number;
  /** Batches of per_device_eval_batch_size samples. */
  batches: number;
}

export interface EvalLossOptions {
  /** Samples per eval batch (per_device_eval_batch_size). */
  batchSize: number;
  /** Most rows in one forward pass: the run's planned batch, so evaluation allocates nothing. */
  maxRows: number;
  padId: number;
  /** Polled between forward passes: true abandons the evaluation (resolves undefined). */
  shouldStop?: () => boolean | Promise<boolean>;
}

/**
 * eval_loss over `data` in file order. Each forward pass takes consecutive samples right-padded to
 * the longest of them (causal attention: padding after a token never changes its logits), and the
 * loss at position t is -log softmax(logits[t])[labels[t + 1]] where that label is not -100: the
 * engine's own cross-entropy (forwardLoss, eval mode), summed in float64 here.
 */
export async function evalLoss(model: NativeModel, data: Pick<PreparedDataset, 'size' | 'get'>, opts: EvalLossOptions): Promise<EvalLoss | undefined> {
  const rowsPerPass = Math.max(1, Math.min(opts.batchSize, opts.maxRows));
  let sum = 0, tokens = 0;
  for (let start = 0; start < data.size; start += rowsPerPass) {
    if (opts.shouldStop && (await opts.shouldStop())) return undefined;
    const rows = Array.from({ length: Math.min(rowsPerPass, data.size - start) }, (_, k) => data.get(start + k));
    const T = Math.max(...rows.map((r) => r.inputIds.length));
    const ids = new Int32Array(rows.length * T).fill(opts.padId);
    rows.forEach((r, k) => ids.set(r.inputIds, k * T));
    // Position t is scored on the label of t + 1 (the token it predicts); padding is never a target.
    const targets = new Int32Array(rows.length * T).fill(IGNORE);
    rows.forEach((r, k) => targets.set(r.labels.subarray(1), k * T));
    const r = await model.forwardLoss(ids, targets, rows.length, T);
    sum += r.lossSum;
    tokens += r.tokens;
  }
  return { loss: tokens ? sum / tokens : NaN, tokens, samples: data.size, batches: Math.ceil(data.size / Math.max(1, opts.batchSize)) };
}

/** HF's _determine_best_metric: a strictly better value than the best so far is a new best. */
export function isNewBest(value: number, best: number | null, greaterIsBetter: boolean): boolean {
  if (!Number.isFinite(value)) return false;
  if (best === null) return true;
  return greaterIsBetter ? value > best : value < best;
}
