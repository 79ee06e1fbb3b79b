// sft_manifest.json: the size and SHA-256 of every file sft wrote into a checkpoint or a final
// output folder, written last. A resume (and `sft verify`) recomputes them, so a flipped bit, a
// truncated copy or a hand-edited file is found before anything is read into a run.
//
//   { "format": "sft-manifest", "version": 1, "files": { "<name>": { "bytes": N, "sha256": "<hex>" } } }
//
// Files added to the folder later (a README, say) are not part of it and are not checked.
import { createHash } from 'node:crypto';
import { closeSync, existsSync, lstatSync, openSync, readFileSync, readSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SftError } from '../errors.js';
import { JsonSyntaxError, clip, parseJsonObject } from '../config/json.js';
import { writeFileNamed } from '../io/atomic.js';

export const MANIFEST = 'sft_manifest.json';

export interface ManifestEntry {
  bytes: number;
  sha256: string;
}

/** Hashes every regular file in `dir` (not the manifest, not subfolders) and writes the manifest. */
export function writeManifest(dir: string): void {
  const files: Record<string, ManifestEntry> = {};
  for (const name of readdirSync(dir).sort()) {
    if (name === MANIFEST || !lstatSync(join(dir, name)).isFile()) continue;
    files[name] = hashFile(join(dir, name));
  }
  writeFileNamed(join(dir, MANIFEST), JSON.stringify({ format: 'sft-manifest', version: 1, files }, null, 1) + '\n');
}

export function hashFile(file: string): ManifestEntry {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(1 << 22);
  const fd = openSync(file, 'r');
  let bytes = 0;
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; bytes += n) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return { bytes, sha256: h.digest('hex') };
}

/** 'missing' when the folder has no manifest (written by an sft before manifests); otherwise the
 *  number of files verified. Throws an SftError naming the first file that does not match. */
export function verifyManifest(dir: string): number | 'missing' {
  const file = join(dir, MANIFEST);
  if (!existsSync(file)) return 'missing';
  const entries = readManifest(file);
  for (const [name, want] of entries) {
    const path = join(dir, name);
    if (!existsSync(path)) throw new SftError(`${path} is missing (${MANIFEST} lists it): the folder is incomplete`);
    if (!lstatSync(path).isFile()) throw new SftError(`${path} is not a regular file, but ${MANIFEST} lists it as one`);
    const got = hashFile(path);
    if (got.bytes !== want.bytes) throw new SftError(`${path} has ${got.bytes} bytes, ${MANIFEST} says ${want.bytes}: the file was truncated or changed after sft wrote it`);
    if (got.sha256 !== want.sha256) throw new SftError(`${path}: its SHA-256 differs from the one in ${MANIFEST}: the file was damaged or changed after sft wrote it`);
  }
  return entries.length;
}

function readManifest(file: string): [string, ManifestEntry][] {
  let value: Record<string, unknown>;
  try {
    value = parseJsonObject(readFileSync(file, 'utf8')).value;
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new SftError(`${file}:${err.pos.line}:${err.pos.col}: ${err.message}: the manifest is damaged`);
    throw err;
  }
  const bad = (why: string) => new SftError(`${file}: ${why}: the manifest is damaged`);
  if (value.format !== 'sft-manifest' || value.version !== 1) throw bad(`not an sft manifest of version 1 (format ${clip(JSON.stringify(value.format) ?? 'missing')}, version ${clip(JSON.stringify(value.version) ?? 'missing')})`);
  const files = value.files;
  if (files === null || typeof files !== 'object' || Array.isArray(files)) throw bad('"files" is not an object');
  const out: [string, ManifestEntry][] = [];
  for (const [name, e] of Object.entries(files as Record<string, unknown>)) {
    // A manifest names files in its own folder only: no path may lead out of it.
    if (name === '' || name === '.' || name === '..' || /[/\\\0]/.test(name)) throw bad(`file name ${clip(JSON.stringify(name))} is not a plain file name`);
    const { bytes, sha256 } = (e ?? {}) as Record<string, unknown>;
    if (!Number.isSafeInteger(bytes) || (bytes as number) < 0) throw bad(`"${clip(name)}".bytes is ${clip(JSON.stringify(bytes) ?? 'missing')}`);
    if (typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256)) throw bad(`"${clip(name)}".sha256 is not 64 hex digits`);
    out.push([name, { bytes: bytes as number, sha256 }]);
  }
  return out;
}
