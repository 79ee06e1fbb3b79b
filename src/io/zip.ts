// Just enough of the zip format (PKWARE APPNOTE) to find where each entry's bytes lie in an
// uncompressed archive, as torch.save writes them. A 7B shard is ~10 GB, so only the end records,
// the central directory and the local headers of the entries asked for are read; ZIP64 records
// (needed past 4 GB or 65,535 entries) are honoured.
import fs from 'node:fs';
import { SftError } from '../errors.js';
import { clip } from '../config/json.js';
import { strictUtf8 } from './utf8.js';

export interface ZipEntry {
  name: string;
  /** 0 = stored; anything else is compressed. */
  method: number;
  flags: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

export interface ZipArchive {
  file: string;
  fileSize: number;
  /** In central-directory order (torch writes data.pkl first). */
  entries: ZipEntry[];
  byName: Map<string, ZipEntry>;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_END = 0x06054b50;
const SIG_END64 = 0x06064b50;
const SIG_LOCATOR64 = 0x07064b50;
const END_LEN = 22;
const LOCATOR64_LEN = 20;
// The end record may be followed by a comment of up to 65,535 bytes.
const MAX_END_SEARCH = END_LEN + 0xffff;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

/** Reads the central directory. Throws SftError naming the file when it is not a readable zip. */
export function readZipDirectory(file: string): ZipArchive {
  return withFile(file, (fd, fileSize) => {
    const tailLen = Math.min(fileSize, MAX_END_SEARCH);
    const tail = readAt(file, fd, fileSize - tailLen, tailLen);
    const endPos = findEndRecord(tail);
    if (endPos < 0) throw new SftError(`${file}: not a zip archive (no end-of-central-directory record); the file is truncated or not in this format.`);
    const endAbs = fileSize - tailLen + endPos;
    let count = tail.readUInt16LE(endPos + 10);
    let cdSize = tail.readUInt32LE(endPos + 12);
    let cdOffset = tail.readUInt32LE(endPos + 16);

    // A ZIP64 locator sits right before the end record; torch writes one even for small files.
    if (endAbs >= LOCATOR64_LEN) {
      const loc = readAt(file, fd, endAbs - LOCATOR64_LEN, LOCATOR64_LEN);
      if (loc.readUInt32LE(0) === SIG_LOCATOR64) {
        const end64Offset = u64(file, loc, 8, 'ZIP64 end record offset');
        const end64 = readAt(file, fd, end64Offset, 56);
        if (end64.readUInt32LE(0) !== SIG_END64) throw new SftError(`${file}: the ZIP64 locator points at byte ${end64Offset}, which holds no ZIP64 end record; the file is corrupt.`);
        count = u64(file, end64, 32, 'entry count');
        cdSize = u64(file, end64, 40, 'central directory size');
        cdOffset = u64(file, end64, 48, 'central directory offset');
      } else if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
        throw new SftError(`${file}: the zip end record asks for ZIP64 records that are missing; the file is corrupt.`);
      }
    }
    if (cdOffset + cdSize > endAbs) {
      throw new SftError(`${file}: the zip central directory (bytes ${cdOffset}..${cdOffset + cdSize}) runs past its end record; the file is truncated or corrupt.`);
    }
    const cd = readAt(file, fd, cdOffset, cdSize);
    const entries = parseCentralDirectory(file, cd, count);
    return { file, fileSize, entries, byName: indexByName(file, entries) };
  });
}

function findEndRecord(tail: Buffer): number {
  for (let i = tail.length - END_LEN; i >= 0; i--) {
    // The comment length must reach exactly to the end of the file, so a comment that happens to
    // contain the signature is not mistaken for the record.
    if (tail.readUInt32LE(i) === SIG_END && i + END_LEN + tail.readUInt16LE(i + 20) === tail.length) return i;
  }
  return -1;
}

// Two entries of one name are ambiguous (readers differ on which one wins): one of them would be lost.
function indexByName(file: string, entries: ZipEntry[]): Map<string, ZipEntry> {
  const byName = new Map<string, ZipEntry>();
  for (const e of entries) {
    if (byName.has(e.name)) throw new SftError(`${file}: zip entry ${JSON.stringify(clip(e.name, 100))} appears twice in the central directory; the file is corrupt.`);
    byName.set(e.name, e);
  }
  return byName;
}

function parseCentralDirectory(file: string, cd: Buffer, count: number): ZipEntry[] {
  const entries: ZipEntry[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) {
      throw new SftError(`${file}: zip central directory entry ${i} of ${count} is malformed; the file is corrupt.`);
    }
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    let compressedSize = cd.readUInt32LE(p + 20);
    let size = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cd.length) throw new SftError(`${file}: zip central directory entry ${i} runs past the directory; the file is corrupt.`);
    const name = entryName(file, cd.subarray(p + 46, p + 46 + nameLen), flags, i);

    // A ZIP64 extra field (id 1) holds, in this order, only the fields whose 32-bit slot is saturated.
    let extra = p + 46 + nameLen;
    const extraEnd = extra + extraLen;
    while (extra + 4 <= extraEnd) {
      const id = cd.readUInt16LE(extra);
      const len = cd.readUInt16LE(extra + 2);
      // A field must fit in the extra area its entry declares: past it lie other entries, or the end of
      // the directory. Another kind of field cut short is ignored, as other readers do; a ZIP64 one holds sizes.
      if (extra + 4 + len > extraEnd) {
        if (id === 1) throw new SftError(`${file}: zip entry ${JSON.stringify(clip(name, 100))} has a ZIP64 field that runs past its entry; the file is corrupt.`);
        break;
      }
      if (id === 1) {
        let q = extra + 4;
        const next = (what: string): number => {
          if (q + 8 > extra + 4 + len) throw new SftError(`${file}: zip entry ${JSON.stringify(clip(name, 100))} has a short ZIP64 field (no ${what}); the file is corrupt.`);
          const v = u64(file, cd, q, what);
          q += 8;
          return v;
        };
        if (size === U32_MAX) size = next('size');
        if (compressedSize === U32_MAX) compressedSize = next('compressed size');
        if (localHeaderOffset === U32_MAX) localHeaderOffset = next('header offset');
      }
      extra += 4 + len;
    }
    entries.push({ name, method, flags, compressedSize, size, localHeaderOffset });
    p = end;
  }
  return entries;
}

// Bit 11 of the flags: a UTF-8 name, which must then be UTF-8 (decoded loosely, two damaged names could
// read alike). Without it CP437, which agrees with UTF-8 on the ASCII names torch writes.
function entryName(file: string, bytes: Buffer, flags: number, i: number): string {
  if (!(flags & 0x800)) return bytes.toString('latin1');
  const decoded = strictUtf8(bytes);
  if ('text' in decoded) return decoded.text;
  throw new SftError(`${file}: zip central directory entry ${i} has a name flagged UTF-8 that is not valid UTF-8 (${JSON.stringify(bytes.toString('latin1', 0, 100))}); the file is corrupt.`);
}

/** The absolute file offset of a stored entry's bytes. Refuses compressed or encrypted entries. */
export function entryDataOffset(zip: ZipArchive, entry: ZipEntry): number {
  if (entry.method !== 0) {
    throw new SftError(
      `${zip.file}: zip entry ${JSON.stringify(clip(entry.name, 100))} is compressed (method ${entry.method}); sft reads checkpoints whose entries are ` +
      `stored uncompressed, as torch.save writes them. Re-save the file with torch.save (or unzip and re-zip with "zip -0").`,
    );
  }
  if (entry.flags & 1) throw new SftError(`${zip.file}: zip entry ${JSON.stringify(clip(entry.name, 100))} is encrypted; sft cannot read it.`);
  return withFile(zip.file, (fd) => {
    const h = readAt(zip.file, fd, entry.localHeaderOffset, 30);
    if (h.readUInt32LE(0) !== SIG_LOCAL) {
      throw new SftError(`${zip.file}: zip entry ${JSON.stringify(clip(entry.name, 100))} has no local header at byte ${entry.localHeaderOffset}; the file is corrupt.`);
    }
    // The local extra field can differ from the central one: torch pads it so data starts 64-byte aligned.
    const start = entry.localHeaderOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
    if (start + entry.size > zip.fileSize) {
      throw new SftError(`${zip.file}: zip entry ${JSON.stringify(clip(entry.name, 100))} ends at byte ${start + entry.size}, past the end of the file (${zip.fileSize} bytes); the file is truncated — download it again.`);
    }
    return start;
  });
}

/** The bytes of a small stored entry (e.g. torch's data.pkl). */
export function readZipEntry(zip: ZipArchive, entry: ZipEntry): Buffer {
  const start = entryDataOffset(zip, entry);
  return withFile(zip.file, (fd) => readAt(zip.file, fd, start, entry.size));
}

function u64(file: string, buf: Buffer, at: number, what: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new SftError(`${file}: zip ${what} ${v} is impossibly large; the file is corrupt.`);
  return Number(v);
}

function readAt(file: string, fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw new SftError(`${file}: unexpected end of file at byte ${position + done}; the file is truncated.`);
    done += n;
  }
  return buf;
}

function withFile<T>(file: string, use: (fd: number, size: number) => T): T {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SftError(code === 'ENOENT' ? `${file}: file not found.` : `${file}: cannot open (${code ?? (err as Error).message}).`);
  }
  try {
    const stat = fs.fstatSync(fd);
    // A folder opens fine on Linux; only reading it fails, with a bare EISDIR.
    if (!stat.isFile()) throw new SftError(`${file}: ${stat.isDirectory() ? 'is a folder' : 'is not a regular file'}, not a zip archive.`);
    return use(fd, stat.size);
  } finally {
    fs.closeSync(fd);
  }
}
