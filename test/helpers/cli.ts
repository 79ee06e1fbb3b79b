// Runs the sft CLI from the TypeScript sources in a child process (no build step needed).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';

export interface CliResult { status: number | null; stdout: string; stderr: string }

export function runCli(args: string[], opts: { input?: string; cwd?: string } = {}): CliResult {
  const entry = join(packageRoot, 'test', 'helpers', 'sft-entry.ts');
  const r = spawnSync(process.execPath, ['--import', 'tsx', entry, ...args], {
    input: opts.input ?? '',
    cwd: opts.cwd ?? packageRoot,
    encoding: 'utf8',
    timeout: 300_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
