// `sft score ... | head`: the reader closes the pipe once it has what it wanted. Node ignores SIGPIPE,
// so the next write fails with EPIPE, and that 'error' on process.stdout, unhandled, is a crash with a
// stack trace. Commands whose product is what they print end as Unix tools do when their reader goes
// away: quietly, with status 0. A training run's product is its output_dir, not its console lines
// (metrics.jsonl keeps them), so it goes on, printing nothing more.

export type OnClosedOutput = 'exit' | 'continue';

let policy: OnClosedOutput = 'exit';

/** What a closed stdout/stderr does from now on: end the process (status 0), or let it go on. */
export function onClosedOutput(p: OnClosedOutput): void {
  policy = p;
}

/** Installs the EPIPE handling on the streams (once per process: main() calls it). Any other write
 *  error still ends the run as an uncaught error, as it did. */
export function handleClosedOutput(
  streams: NodeJS.WritableStream[] = [process.stdout, process.stderr],
  exit: (code: number) => void = (code) => process.exit(code),
): void {
  for (const s of streams) {
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
      // 'continue': the stream is destroyed now; later writes to it are dropped without an event.
      if (policy === 'exit') exit(0);
    });
  }
}
