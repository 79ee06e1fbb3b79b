// One progress bar per subject on a terminal ("[3/52] computer_network ████░░ 12/19 | acc 41.7");
// elsewhere (a pipe, a log file) one plain line per finished subject.
import cliProgress from 'cli-progress';
import { clock } from '../log/progress.js';

type Stream = NodeJS.WritableStream & { isTTY?: boolean };

export class SubjectProgress {
  private bar: cliProgress.SingleBar | undefined;
  private label = '';
  private total = 0;
  private startMs = 0;

  constructor(
    private readonly stream: Stream = process.stdout,
    private readonly useBar = stream.isTTY === true,
  ) {}

  start(index: number, count: number, subject: string, questions: number): void {
    this.label = `[${index + 1}/${count}] ${subject}`;
    this.total = questions;
    this.startMs = Date.now();
    if (!this.useBar) return;
    this.bar = new cliProgress.SingleBar(
      { stream: this.stream, format: '{label} {bar} {value}/{total} | acc {acc} | {elapsed}', hideCursor: false, clearOnComplete: false },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(questions, 0, { label: this.label, acc: '-', elapsed: clock(0) });
  }

  /** `correct` is null when the split has no answers. */
  update(done: number, correct: number | null): void {
    this.bar?.update(done, { acc: accuracy(done, correct), elapsed: clock((Date.now() - this.startMs) / 1000) });
  }

  finish(done: number, correct: number | null): void {
    const secs = (Date.now() - this.startMs) / 1000;
    if (this.bar) {
      this.update(done, correct);
      this.bar.stop();
      this.bar = undefined;
      return;
    }
    this.stream.write(`${this.label}: ${done}/${this.total} questions, acc ${accuracy(done, correct)}, ${clock(secs)}\n`);
  }
}

function accuracy(done: number, correct: number | null): string {
  return correct === null || done === 0 ? '-' : ((100 * correct) / done).toFixed(1);
}
