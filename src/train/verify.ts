// `sft verify DIR`: the checks a resume makes, on a checkpoint or on an output_dir and all its
// checkpoints, with nothing changed. One line per folder checked; the newest good checkpoint named.
import { existsSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { SftError } from '../errors.js';
import { TRAINER_STATE, listCheckpoints } from './checkpoint.js';
import { MANIFEST, verifyManifest } from './manifest.js';
import { checkCheckpoint, describeChecked } from './resume.js';

export interface VerifyReport {
  lines: string[];
  /** Folders that failed. */
  failed: number;
}

export function verifyFolder(dir: string): VerifyReport {
  if (!existsSync(dir)) throw new SftError(`${dir}: no such folder`);
  if (!statSync(dir).isDirectory()) throw new SftError(`${dir} is a file: give a checkpoint folder or an output_dir`);
  const lines: string[] = [];
  let failed = 0;
  const check = (label: string, run: () => string): boolean => {
    try {
      lines.push(`ok      ${label}: ${run()}`);
      return true;
    } catch (err) {
      if (!(err instanceof SftError)) throw err;
      failed++;
      lines.push(`FAILED  ${label}: ${err.message}`);
      return false;
    }
  };
  if (existsSync(join(dir, TRAINER_STATE))) {
    check(dir, () => describeChecked(checkCheckpoint(dir)));
    return { lines, failed };
  }
  const checkpoints = listCheckpoints(dir);
  const hasFinal = existsSync(join(dir, MANIFEST));
  if (!checkpoints.length && !hasFinal) {
    throw new SftError(`${dir} holds no sft output to verify (no ${MANIFEST}, no checkpoint-N folder with ${TRAINER_STATE})`);
  }
  if (hasFinal) {
    check(`${dir} (final output)`, () => {
      const n = verifyManifest(dir);
      return `${n} files match their SHA-256`;
    });
  }
  let newestGood: string | undefined;
  for (const c of checkpoints) if (check(c.dir, () => describeChecked(checkCheckpoint(c.dir)))) newestGood = c.dir;
  if (checkpoints.length) {
    lines.push(newestGood ? `newest checkpoint that passes: ${basename(newestGood)} (resume with --resume ${basename(newestGood)})` : 'no checkpoint passes');
  }
  return { lines, failed };
}
