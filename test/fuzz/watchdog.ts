// Runs test/fuzz/runner.ts in a child process and kills it when one case runs longer than
// perCaseMs, naming that case: a hang is a failure with a case number, never a stuck test run.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';

export interface Failure { case: number; what: string; type?: string; message: string; stack?: string; input: string }

export interface FuzzResult {
  counts: Record<string, number>;
  failures: Failure[];
  /** The case that ran past perCaseMs (the child was killed). */
  hung?: number;
  exitCode: number | null;
  stderr: string;
  /** The runner's "# {json}" line (memory figures), when it writes one. */
  memory?: unknown;
}

/** Time for tsx to start the child before its first case. */
const STARTUP_MS = 20_000;

export function runFuzz(kind: string, seed: number, count: number, perCaseMs = 5000): Promise<FuzzResult> {
  return watchRunner(join(packageRoot, 'test', 'fuzz', 'runner.ts'), [kind, String(seed), String(count)], { perCaseMs });
}

export interface WatchOptions {
  perCaseMs: number;
  /** Time allowed before case 0 (tsx start, loading tokenizers). */
  startupMs?: number;
  /** Flags for node itself, e.g. a bounded heap. */
  nodeFlags?: string[];
}

/** Any runner that speaks the protocol ("> N", "! {json}", "# {json}" memory, "= {json}" counts),
 *  run as a child that is killed when one case outlives perCaseMs. */
export function watchRunner(runner: string, args: string[], opts: WatchOptions): Promise<FuzzResult> {
  const child = spawn(process.execPath, [...(opts.nodeFlags ?? []), '--import', 'tsx', runner, ...args], { cwd: packageRoot });
  const result: FuzzResult = { counts: {}, failures: [], exitCode: null, stderr: '' };
  let current = -1;
  let since = Date.now();
  let partial = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (line.startsWith('> ')) [current, since] = [Number(line.slice(2)), Date.now()];
      else if (line.startsWith('! ')) result.failures.push(JSON.parse(line.slice(2)) as Failure);
      else if (line.startsWith('# ')) result.memory = JSON.parse(line.slice(2));
      else if (line.startsWith('= ')) result.counts = JSON.parse(line.slice(2)) as Record<string, number>;
    }
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => (result.stderr += s));
  const timer = setInterval(() => {
    if (Date.now() - since > (current < 0 ? opts.startupMs ?? STARTUP_MS : opts.perCaseMs)) {
      result.hung = current;
      child.kill('SIGKILL');
    }
  }, 50);
  return new Promise((resolve) => {
    child.on('close', (code) => {
      clearInterval(timer);
      result.exitCode = code;
      resolve(result);
    });
  });
}
