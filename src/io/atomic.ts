// Writing outputs so that nothing is ever half-written, silently stale, or written through a link.
//
//   writeFileAtomic(file, data)   one file: <file>.tmp-<pid> beside it, fsynced, renamed over it
//   writeFileStreamed(file, ...)  the same for a file written in pieces (a GGUF model, gigabytes)
//   writeFolderFiles(dir, write)  a set of files (an adapter, a model folder): all written into
//                                 <dir>/.sft-staging-<pid>/ first, then each renamed into <dir>;
//                                 files of an earlier write that the new set replaces are removed
//
// rename(2) replaces a name, never the file a symlink points to, so a link planted in an output
// folder is replaced rather than followed out of it. A write that fails (a full disk) removes its
// temporaries and leaves every earlier file as it was; the message names the file, the space the
// write needed and the space free.
import {
  closeSync, existsSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statfsSync, writeFileSync, writeSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { SftError } from '../errors.js';

const STAGING_PREFIX = '.sft-staging-';
const MiB = 2 ** 20;

/** fsync a file or a folder (a folder's fsync makes the renames inside it durable). */
export function fsyncPath(p: string): void {
  const fd = openSync(p, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes all of `data` to `fd`, however many short writes it takes. */
export function writeAll(fd: number, data: Uint8Array): void {
  for (let off = 0; off < data.byteLength; ) off += writeSync(fd, data, off, data.byteLength - off);
}

/** `file` holds exactly `data`, or (on any failure) what it held before. */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fd = openSync(tmp, 'w');
    try {
      writeAll(fd, bytes);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
    fsyncPath(dirname(resolve(file)));
  } catch (err) {
    rmSync(tmp, { force: true });
    throw withTail(writeError(file, err, bytes.byteLength), `${file} was left as it was.`);
  }
}

/** `file` holds exactly what `write` puts, or (on any failure, or a throw from `write`) what it held
 *  before: the pieces go to <file>.tmp-<pid>, which is fsynced and renamed over `file` at the end. */
export async function writeFileStreamed(file: string, bytesNeeded: number, write: (put: (data: Uint8Array) => void) => Promise<void>): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fd = openSync(tmp, 'w');
    try {
      await write((data) => writeAll(fd, data));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
    fsyncPath(dirname(resolve(file)));
  } catch (err) {
    rmSync(tmp, { force: true });
    throw withTail(writeError(file, err, bytesNeeded), existsSync(file) ? `${file} was left as it was.` : `Nothing was written to ${file}.`);
  }
}

export interface FolderWrite {
  /** What the files will take, for the message when the disk is full. */
  bytesNeeded: number;
  /** Names in `dir` that this write replaces even when it does not write them again (the shards of
   *  an earlier model, say): removed once the new files are in place. */
  replaces?: (name: string) => boolean;
}

/** Runs `write(staging)`, which writes the folder's files into `staging`; then moves each into
 *  `dir`. Returns the names written. On failure nothing in `dir` has changed. */
export function writeFolderFiles(dir: string, write: (staging: string) => void, opts: FolderWrite): string[] {
  mkdirSync(dir, { recursive: true });
  const staging = join(dir, `${STAGING_PREFIX}${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging);
  let names: string[];
  try {
    write(staging);
    names = readdirSync(staging);
    for (const n of names) fsyncPath(join(staging, n));
  } catch (err) {
    rmSync(staging, { recursive: true, force: true });
    throw withTail(writeError(join(dir, stagedName(err, staging)), err, opts.bytesNeeded), `Nothing in ${dir} was replaced; free space and run again.`);
  }
  for (const n of names) {
    const target = join(dir, n);
    // A folder (or a link to one) under a name we write: refuse rather than delete what it holds.
    if (existsSync(target) && !lstatSync(target).isSymbolicLink() && lstatSync(target).isDirectory()) {
      rmSync(staging, { recursive: true, force: true });
      throw new SftError(`${target} is a folder, where sft writes a file: move it away and run again`);
    }
  }
  for (const n of names) renameSync(join(staging, n), join(dir, n));
  rmSync(staging, { recursive: true, force: true });
  if (opts.replaces) {
    const kept = new Set(names);
    for (const n of readdirSync(dir)) if (!kept.has(n) && opts.replaces(n)) rmSync(join(dir, n), { force: true });
  }
  fsyncPath(dir);
  return names;
}

/** A write error's message with what the caller knows of the files it left as they were. */
function withTail(err: Error, tail: string): Error {
  return err instanceof SftError && /^could not write /.test(err.message) ? new SftError(`${err.message} ${tail}`) : err;
}

/** Staging folders of killed runs. */
export function removeStagingLeftovers(dir: string): void {
  if (!existsSync(dir)) return;
  for (const d of readdirSync(dir)) if (d.startsWith(STAGING_PREFIX)) rmSync(join(dir, d), { recursive: true, force: true });
}

/** The file a failed staged write was on: the error's path when it names one inside the staging
 *  folder, else the folder itself. */
function stagedName(err: unknown, staging: string): string {
  const e = err as { path?: unknown; dest?: unknown };
  for (const p of [e.dest, e.path]) if (typeof p === 'string' && resolve(dirname(p)) === resolve(staging)) return p.slice(dirname(p).length + 1);
  return '';
}

/** The user's message for a failed write of `file`: what happened, the space it needed and the
 *  space free where the disk is full, and that the earlier files are intact. */
export function writeError(file: string, err: unknown, bytesNeeded: number): Error {
  if (err instanceof SftError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ENOSPC' || e.code === 'EDQUOT') {
    const what = e.code === 'ENOSPC' ? 'no space left on the device' : 'disk quota exceeded';
    return new SftError(`could not write ${file}: ${what}; this output needs ${mib(bytesNeeded)}, ${freeSpace(dirname(file))} on that filesystem.`);
  }
  if (e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS') {
    return new SftError(`could not write ${file}: ${e.code === 'EROFS' ? 'the filesystem is read-only' : 'permission denied'}; choose a folder you can write to.`);
  }
  if (e.code) return new SftError(`could not write ${file}: ${e.message}`);
  return err as Error;
}

function freeSpace(dir: string): string {
  let d = resolve(dir);
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  try {
    const s = statfsSync(d);
    return `${mib(Number(s.bavail) * Number(s.bsize))} free`;
  } catch {
    return 'free space unknown';
  }
}

const mib = (bytes: number): string => (bytes >= 1024 * MiB ? `${(bytes / 1024 / MiB).toFixed(2)} GiB` : `${(bytes / MiB).toFixed(1)} MiB`);

/** writeFileSync whose errors name the file (inside a staging folder, where atomicity comes from
 *  the folder's commit). */
export function writeFileNamed(file: string, data: string | Uint8Array): void {
  try {
    writeFileSync(file, data);
  } catch (err) {
    throw withPath(file, err);
  }
}

/** Attaches `file` to an fs error that lacks it (write(2) errors name no path), so the caller's
 *  message can name the file. */
export function withPath(file: string, err: unknown): unknown {
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e === 'object' && e.code && typeof e.path !== 'string') e.path = file;
  return err;
}
