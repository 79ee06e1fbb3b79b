// End-of-training metrics with HF Trainer's keys and its log_metrics() layout, so sft's
// summary reads like the one Firefly prints:
//
//   ***** train metrics *****
//     epoch                    =        1.0
//     total_flos               =      123GF
//     train_loss               =     1.2345
//     train_runtime            = 0:01:23.45
//     train_samples_per_second =     12.345
//     train_steps_per_second   =      0.123
//
// Values follow HF (trainer_utils.speed_metrics, Trainer._finalize_training, metrics_format):
// runtime rounded to 4 places, rates to 3; the printer shows floats rounded to 4 places the way
// Python prints them, runtime as h:mm:ss.cc, total_flos in units of 2^30 ("GF").
//
// The rates are this process's work over this process's runtime, also after a resume: samples,
// steps and tokens run since it started. transformers 5 computes train_tokens_per_second the same
// way (num_input_tokens_seen minus what the resumed state had); its final samples/s and steps/s
// instead divide the whole run's max_steps by the resumed process's runtime, which overstates a
// resumed run's speed. total_flos, epoch and train_loss cover the whole run, as in HF.

export interface TrainSummaryInput {
  runtimeSec: number;
  /** Training samples the run covered: HF uses max_steps * total batch size, or examples * epochs. */
  samples: number;
  /** Optimizer steps this process ran (HF uses state.max_steps, the whole run's). */
  steps: number;
  /** Mean training loss over all optimizer steps. */
  trainLoss: number;
  /** Floating-point operations (see flosFor). */
  totalFlos: number;
  /** Fractional epochs done; HF always reports it. */
  epoch?: number;
  /** Training tokens this process ran (padding included); adds train_tokens_per_second (HF does
   *  when counting input tokens). */
  tokens?: number;
}

export type TrainMetrics = Record<string, number>;

export function trainSummary(s: TrainSummaryInput): TrainMetrics {
  const runtime = round(s.runtimeSec, 4);
  const m: TrainMetrics = { train_runtime: runtime };
  if (s.runtimeSec !== 0) {
    m.train_samples_per_second = round(s.samples / s.runtimeSec, 3);
    m.train_steps_per_second = round(s.steps / s.runtimeSec, 3);
    if (s.tokens !== undefined) m.train_tokens_per_second = round(s.tokens / s.runtimeSec, 3);
  }
  m.total_flos = s.totalFlos;
  m.train_loss = s.trainLoss;
  if (s.epoch !== undefined) m.epoch = s.epoch;
  return m;
}

/**
 * HF's estimate of training compute (PreTrainedModel.floating_point_ops): 6 multiply-adds per
 * token per parameter (forward + backward), counting every non-embedding parameter of the model,
 * frozen ones included.
 */
export function flosFor(tokens: number, nonEmbeddingParams: number): number {
  return 6 * tokens * nonEmbeddingParams;
}

// Keys HF holds as Python floats: an integral value still prints as "1.0".
const FLOAT_KEYS = new Set(['epoch', 'train_loss', 'train_samples_per_second', 'train_steps_per_second', 'train_tokens_per_second']);

/** The `***** <split> metrics *****` block, one line per key, sorted, ending with a newline. */
export function formatMetrics(split: string, metrics: Record<string, number>): string {
  const shown: [string, string][] = Object.keys(metrics)
    .sort()
    .map((k) => [k, formatValue(k, metrics[k])]);
  const kw = Math.max(...shown.map(([k]) => k.length));
  const vw = Math.max(...shown.map(([, v]) => v.length));
  const lines = [`***** ${split} metrics *****`, ...shown.map(([k, v]) => `  ${k.padEnd(kw)} = ${v.padStart(vw)}`)];
  return lines.join('\n') + '\n';
}

export function printMetrics(split: string, metrics: Record<string, number>, write: (s: string) => void = (s) => process.stdout.write(s)): void {
  write(formatMetrics(split, metrics));
}

function formatValue(key: string, v: number): string {
  if (key.includes('_runtime')) return secondsToTimedelta(v);
  if (key === 'total_flos') return `${Math.floor(Math.trunc(v) / 2 ** 30)}GF`;
  if (FLOAT_KEYS.has(key) || !Number.isInteger(v)) return pyFloat(round(v, 4));
  return String(v);
}

/** Python's str(datetime.timedelta(seconds=int(s))) + "." + hundredths, as HF's _secs2timedelta. */
export function secondsToTimedelta(secs: number): string {
  const whole = Math.trunc(secs);
  const cs = Math.trunc(Math.abs(secs - whole) * 100);
  const days = Math.floor(whole / 86400);
  const rest = whole - days * 86400;
  const h = Math.floor(rest / 3600);
  const mm = String(Math.floor((rest % 3600) / 60)).padStart(2, '0');
  const ss = String(rest % 60).padStart(2, '0');
  const dayPart = days === 0 ? '' : `${days} day${Math.abs(days) === 1 ? '' : 's'}, `;
  return `${dayPart}${h}:${mm}:${ss}.${String(cs).padStart(2, '0')}`;
}

/** Python's repr() of a float: shortest round-trip digits, exponent form below 1e-4 or from 1e16. */
export function pyFloat(v: number): string {
  if (Number.isNaN(v)) return 'nan';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  if (v === 0) return Object.is(v, -0) ? '-0.0' : '0.0';
  const [mant, expText] = v.toExponential().split('e'); // shortest digits that round-trip
  const exp = Number(expText);
  const sign = v < 0 ? '-' : '';
  const digits = mant.replace('-', '').replace('.', '');
  if (exp >= -4 && exp < 16) {
    if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
    const int = digits.slice(0, exp + 1).padEnd(exp + 1, '0');
    return `${sign}${int}.${digits.slice(exp + 1) || '0'}`;
  }
  const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
}

// Python's round(x, n) for display purposes (halfway cases, rare in binary, may round up instead of to even).
function round(x: number, places: number): number {
  return Number(x.toFixed(places));
}
