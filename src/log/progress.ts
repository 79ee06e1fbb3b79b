// Training progress on the console. On a terminal: one live bar (step/total, epoch, loss, grad norm,
// lr, eval loss once there is one, tokens/s, elapsed and ETA) with log lines printed above it.
// Anywhere else (a pipe, a CI log, disable_tqdm): one plain line per logging step with the same
// fields, since a redrawn bar would fill a log file with escape codes.
//
// Elapsed time is this process's; the ETA is the remaining steps at this process's average pace, so a
// resumed run (which starts at step N) is not credited with the N steps another process ran.
import cliProgress from 'cli-progress';

export interface ProgressStats {
  loss?: number;
  lr?: number;
  tokensPerSecond?: number;
  /** Fractional epochs done. */
  epoch?: number;
  /** The last step's gradient norm before clipping. */
  gradNorm?: number;
  /** The last evaluation's loss. */
  evalLoss?: number;
}

export interface ProgressOptions {
  /** Where to write; stdout by default. The bar is drawn only when this stream is a TTY. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** false: plain lines even on a terminal (the disable_tqdm key). */
  bar?: boolean;
  /** Plain lines: print at steps that are multiples of this (and at the last step). Default 1: every update(). */
  logEvery?: number;
  /** Millisecond clock, replaceable in tests. */
  now?: () => number;
}

export class Progress {
  private readonly stream: NonNullable<ProgressOptions['stream']>;
  private readonly useBar: boolean;
  private readonly logEvery: number;
  private readonly now: () => number;
  private multi: cliProgress.MultiBar | undefined;
  private bar: cliProgress.SingleBar | undefined;
  private total = 0;
  private first = 0;
  private startMs = 0;
  private stats: ProgressStats = {};
  private step = 0;

  constructor(opts: ProgressOptions = {}) {
    this.stream = opts.stream ?? process.stdout;
    this.useBar = opts.bar !== false && this.stream.isTTY === true;
    this.logEvery = Math.max(1, Math.trunc(opts.logEvery ?? 1));
    this.now = opts.now ?? Date.now;
  }

  /** Begins a run of `total` optimizer steps, `first` of them done already (a resumed run). */
  start(total: number, first = 0): void {
    this.total = total;
    this.first = first;
    this.startMs = this.now();
    this.stats = {};
    this.step = first;
    if (!this.useBar) return;
    this.multi = new cliProgress.MultiBar(
      {
        stream: this.stream,
        // (cli-progress owns {eta}; ours is {remaining}, the same pace rule as the plain lines)
        format: '{bar} {value}/{total} | epoch {epoch} | loss {loss} | grad_norm {gradNorm} | lr {lr}{evalLoss} | {tps} tok/s | {elapsed}<{remaining}',
        hideCursor: false,
        clearOnComplete: false,
        autopadding: true,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar = this.multi.create(total, first, this.payload(first));
  }

  /** Records that `step` optimizer steps are done; stats left out keep their last value. */
  update(step: number, stats: ProgressStats = {}): void {
    this.stats = { ...this.stats, ...stats };
    this.step = step;
    if (this.bar) {
      this.bar.update(step, this.payload(step));
      return;
    }
    if (step % this.logEvery === 0 || step === this.total) this.write(this.line(step));
  }

  /** Records stats between steps (an evaluation's loss): the bar shows them now, plain lines from the
   *  next step on — no second line for a step already printed. */
  record(stats: ProgressStats): void {
    this.stats = { ...this.stats, ...stats };
    this.bar?.update(this.step, this.payload(this.step));
  }

  /** Prints a line of text without breaking the bar. */
  log(line: string): void {
    if (this.multi) {
      this.multi.log(line + '\n');
      this.multi.update(); // draw now rather than at the next tick
    } else {
      this.write(line);
    }
  }

  stop(): void {
    if (!this.multi) return;
    this.multi.update(); // flush log lines still buffered
    this.multi.stop();
    this.multi = undefined;
    this.bar = undefined;
  }

  private write(line: string): void {
    this.stream.write(line + '\n');
  }

  private payload(step: number): Record<string, string> {
    const s = this.stats;
    return {
      epoch: s.epoch === undefined ? '-' : s.epoch.toFixed(2),
      loss: s.loss === undefined ? '-' : s.loss.toFixed(4),
      gradNorm: s.gradNorm === undefined ? '-' : s.gradNorm.toFixed(3),
      lr: s.lr === undefined ? '-' : sci(s.lr),
      // Shown once an evaluation has run (a run without eval_file never shows the field).
      evalLoss: s.evalLoss === undefined ? '' : ` | eval_loss ${s.evalLoss.toFixed(4)}`,
      tps: s.tokensPerSecond === undefined ? '-' : Math.round(s.tokensPerSecond).toString(),
      elapsed: clock((this.now() - this.startMs) / 1000),
      remaining: this.eta(step),
    };
  }

  /** "step 10/150 | epoch 0.07 | loss 2.3456 | grad_norm 1.234 | lr 3.00e-03 | eval_loss 2.4000 | 1234 tok/s | elapsed 0:00:12 | ETA 0:02:48" */
  private line(step: number): string {
    const p = this.payload(step);
    const s = this.stats;
    const parts = [`step ${step}/${this.total}`];
    if (s.epoch !== undefined) parts.push(`epoch ${p.epoch}`);
    if (s.loss !== undefined) parts.push(`loss ${p.loss}`);
    if (s.gradNorm !== undefined) parts.push(`grad_norm ${p.gradNorm}`);
    if (s.lr !== undefined) parts.push(`lr ${p.lr}`);
    if (s.evalLoss !== undefined) parts.push(p.evalLoss.slice(3));
    if (s.tokensPerSecond !== undefined) parts.push(`${p.tps} tok/s`);
    parts.push(`elapsed ${p.elapsed}`, `ETA ${p.remaining}`);
    return parts.join(' | ');
  }

  // Remaining time at this process's average pace: steps done before a resume took none of its time.
  private eta(step: number): string {
    const ran = step - this.first;
    if (ran <= 0) return '-';
    const elapsed = (this.now() - this.startMs) / 1000;
    return clock((elapsed / ran) * Math.max(0, this.total - step));
  }
}

/** 3 significant digits, two-digit exponent as Python/tqdm print it: 3.00e-04. */
function sci(x: number): string {
  return x.toExponential(2).replace(/e([+-])(\d)$/, 'e$10$2');
}

/** h:mm:ss */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${h}:${String(m).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}
