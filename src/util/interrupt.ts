// Ctrl-C (SIGINT) and SIGTERM during long phases. The train command's signal handler records the
// request here (requestStop); a long loop (reading the data, loading the weights, the micro-batches
// of a step) polls it through poller(), which yields to the event loop now and then, so that the
// handler gets to run at all while the loop works, and says when to stop. A stop before training
// has begun throws Stopped: the CLI prints its message and exits 130 (143 for SIGTERM).
import { SftError } from '../errors.js';

let requested: NodeJS.Signals | undefined;

export function requestStop(signal: NodeJS.Signals): void {
  requested = signal;
}

export function clearStopRequest(): void {
  requested = undefined;
}

/** The signal that asked to stop, if one did. */
export function stopRequested(): NodeJS.Signals | undefined {
  return requested;
}

/** The exit status of a run stopped by `signal`, as a shell reports it: 128 + the signal's number. */
export function signalExitCode(signal: NodeJS.Signals): number {
  return signal === 'SIGTERM' ? 143 : 130;
}

/** A stop asked for before any training step: `what` says what was under way and what was undone. */
export class Stopped extends SftError {
  constructor(what: string, signal: NodeJS.Signals = requested ?? 'SIGINT') {
    super(`${signal}: stopped while ${what}; nothing was trained (run the same command again to start over)`, signalExitCode(signal));
    this.name = 'Stopped';
  }
}

/**
 * For a long loop: `if (await poll()) ...` on every iteration. Cheap while less than `everyMs` has
 * passed since the last yield; then it yields to the event loop once (signal handlers run) and
 * returns what `shouldStop` says (default: whether a signal asked to stop).
 */
export function poller(shouldStop: () => boolean = () => requested !== undefined, everyMs = 100): () => Promise<boolean> {
  let last = Date.now();
  return async () => {
    if (Date.now() - last < everyMs) return false;
    await new Promise((resolve) => setImmediate(resolve));
    last = Date.now();
    return shouldStop();
  };
}
