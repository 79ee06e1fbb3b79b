// <output_dir>/metrics.jsonl: one JSON object per logging step, written through at once so a
// crashed or interrupted run keeps every line logged before it stopped. It is sft's own record
// and is written whatever report_to says.
import { closeSync, constants, mkdirSync, openSync, writeSync } from 'node:fs';
import { SftError } from '../errors.js';
import { join } from 'node:path';

export interface MetricsRecord {
  /** Optimizer steps done. */
  step: number;
  /** Fractional epochs done, as HF logs it (e.g. 0.25). */
  epoch: number;
  /** A training line has loss and learning_rate; an evaluation line eval_loss, eval_runtime, ... */
  loss?: number;
  learning_rate?: number;
  grad_norm?: number;
  tokens_per_second?: number;
  /** Anything else worth keeping (eval_loss, train_runtime, ...). */
  [key: string]: number | string | boolean | null | undefined;
}

export class MetricsWriter {
  readonly path: string;
  private fd: number | undefined;

  /** Creates output_dir if needed and starts a new metrics.jsonl (an existing one is replaced), or
   *  appends to it when `append` (a resumed run). */
  constructor(outputDir: string, fileName = 'metrics.jsonl', append = false) {
    mkdirSync(outputDir, { recursive: true });
    this.path = join(outputDir, fileName);
    // O_NOFOLLOW: a link planted at metrics.jsonl is refused, not followed to a file elsewhere.
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW | (append ? constants.O_APPEND : constants.O_TRUNC);
    try {
      this.fd = openSync(this.path, flags, 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new SftError(`${this.path} is a symbolic link: sft does not write through links in output_dir; remove it and run again`);
      throw err;
    }
  }

  /**
   * Appends one line. Non-finite numbers (a diverged loss) become null, since JSON has no NaN;
   * undefined fields are left out.
   */
  write(record: MetricsRecord): void {
    if (this.fd === undefined) throw new Error(`MetricsWriter: ${this.path} is already closed`);
    const line = JSON.stringify(record, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v));
    writeSync(this.fd, line + '\n');
  }

  close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }
}
