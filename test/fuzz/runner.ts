// The fuzz cases, run in a child process so that a watchdog (watchdog.ts) can kill one that hangs,
// even in synchronous code. Protocol on stdout, one line each (pipes are synchronous on Linux, so
// the last "> N" is on the pipe before case N runs):
//   > N          case N starts
//   ! {json}     case N ended in something other than a result or a proper SftError
//   = {json}     all done: outcome counts
// Replay one case:  node --import tsx test/fuzz/runner.ts <kind> <seed> <count> --case N
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SftError } from '../../src/errors.js';
import { readJsonlLines, type JsonlLine } from '../../src/data/jsonl.js';
import { parseRecord } from '../../src/data/records.js';
import { toConversation } from '../../src/data/formats.js';
import { encodeConversation } from '../../src/data/encode.js';
import { prepareDataset } from '../../src/data/dataset.js';
import { BUILT_IN_NAMES, getTemplate } from '../../src/data/templates.js';

// The built-in templates (the model's own chat_template has its tests in test/data/chat-template.test.ts);
// firefly_legacy writes BOS, which not every tokenizer here names.
const TEMPLATE_NAMES = BUILT_IN_NAMES.filter((n) => n !== 'firefly_legacy');
import { loadConfig, configFromObject } from '../../src/config/loader.js';
import { packageRoot } from '../../src/native/binding.js';
import { fakeTok } from '../fixtures/data/fake-tok.js';
import { rng, corruptLine, goodLine, corruptConfig, corruptOverrides, arrayFile, type Rand } from './corrupt.js';
import { isDeepStrictEqual } from 'node:util';
import { readJsonArray, recordWhere } from '../../src/data/json-array.js';
import { detectLayout } from '../../src/data/records.js';

export const KINDS = ['jsonl-lines', 'jsonl-files', 'json-arrays', 'config', 'overrides', 'self-check'] as const;
export type Kind = (typeof KINDS)[number];

/** Case i of a run has its own generator, so any case can be replayed alone. */
export const caseRand = (seed: number, i: number): Rand => rng(Math.imul(seed, 1_000_003) + i * 7919 + 1);

const tok = fakeTok();
const parseJsonLine = (file: string, l: JsonlLine) => parseRecord({ where: `${file}:${l.line}`, text: l.text, error: l.error, unit: 'line' });
const dir = mkdtempSync(join(tmpdir(), 'sft-fuzz-'));
const counts: Record<string, number> = {};
const count = (outcome: string) => (counts[outcome] = (counts[outcome] ?? 0) + 1);
let failures = 0;
/** The current case's input, for the report when it fails. */
let current: Buffer | string[] = [];

class Unexpected extends Error {}

function report(i: number, what: string, err: unknown, input: Buffer | string[]): void {
  if (++failures > 20) return;
  const e = err as Error;
  const shown = Array.isArray(input) ? JSON.stringify(input) : JSON.stringify(input.subarray(0, 300).toString('latin1'));
  process.stdout.write(`! ${JSON.stringify({ case: i, what, type: e?.constructor?.name, message: String(e?.message).slice(0, 300), stack: e instanceof Unexpected ? undefined : e?.stack?.split('\n').slice(0, 8).join('\n'), input: shown })}\n`);
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** An SftError about `file` must say which line: FILE:N with N in `lines` (or FILE: for the whole file). */
function checkDataError(err: unknown, file: string, lines: Set<number> | number, wholeFileOk: boolean): string {
  if (!(err instanceof SftError)) throw err;
  const m = new RegExp(`^${escapeRe(file)}:(\\d+)`).exec(err.message);
  if (!m) {
    if (wholeFileOk && err.message.startsWith(`${file}: `)) return 'file-error';
    throw new Unexpected(`SftError does not name ${file} and a line: ${err.message.slice(0, 200)}`);
  }
  const n = Number(m[1]);
  const ok = typeof lines === 'number' ? n === lines : lines.has(n);
  if (!ok) throw new Unexpected(`SftError blames line ${n}, expected ${typeof lines === 'number' ? lines : [...lines].join(',')}: ${err.message.slice(0, 200)}`);
  return 'line-error';
}

/** A read size that splits lines, and multi-byte characters, at odd places: a few bytes for short
 *  inputs, a few dozen chunks for long ones. */
const awkwardChunk = (r: Rand, length: number): number => Math.max(1 + r.int(8), Math.ceil(length / (2 + r.int(40))));

// ---- JSONL, one corrupted line per file, through reader, parser, converter and encoder ------------------

async function jsonlLine(r: Rand, i: number): Promise<{ input: Buffer; outcome: string }> {
  const input = (current = corruptLine(r));
  const file = join(dir, `case-${i}.jsonl`); // a new file each time: rewriting one is slower
  writeFileSync(file, input);
  const lineCount = input.toString('latin1').split('\n').length;
  const template = getTemplate(r.pick(TEMPLATE_NAMES));
  const maxSeqLength = r.pick([2, 8, 64, 100_000]);
  let outcome = 'ok';
  try {
    for await (const rec of readJsonlLines(file, { chunkSize: awkwardChunk(r, input.length) })) {
      if (rec.line < 1 || rec.line > lineCount) throw new Unexpected(`line number ${rec.line} outside 1..${lineCount}`);
      try {
        const conv = toConversation(parseJsonLine(file, rec), `${file}:${rec.line}`);
        const enc = encodeConversation(conv, template, tok, maxSeqLength);
        if (!('noTarget' in enc) && enc.inputIds.length > maxSeqLength) throw new Unexpected('sample longer than max_seq_length');
        outcome = 'noTarget' in enc ? 'no-target' : outcome;
      } catch (err) {
        if (err instanceof Unexpected) throw err;
        outcome = checkDataError(err, file, rec.line, false);
      }
    }
  } catch (err) {
    if (err instanceof Unexpected) throw err;
    outcome = checkDataError(err, file, new Set(Array.from({ length: lineCount }, (_, k) => k + 1)), false); // bad UTF-8
  }
  return { input, outcome };
}

// ---- JSONL files: good and corrupted lines mixed, through prepareDataset ------------------------------

/** The file's lines worked out without streaming: split on \n, BOM dropped on line 1, a final \r
 *  dropped; `text` undefined where the bytes are not UTF-8. Blank lines are left out. */
function referenceLines(bytes: Buffer): { line: number; text?: string }[] {
  const out: { line: number; text?: string }[] = [];
  const parts: Buffer[] = [];
  for (let from = 0; ; ) {
    const nl = bytes.indexOf(0x0a, from);
    parts.push(bytes.subarray(from, nl < 0 ? bytes.length : nl));
    if (nl < 0) break;
    from = nl + 1;
  }
  for (let i = 0; i < parts.length; i++) {
    let b = parts[i];
    if (i === parts.length - 1 && b.length === 0) break; // after the last newline
    if (i === 0 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) b = b.subarray(3);
    if (b[b.length - 1] === 0x0d) b = b.subarray(0, b.length - 1);
    try {
      const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(b);
      if (text.trim() !== '') out.push({ line: i + 1, text });
    } catch {
      out.push({ line: i + 1 });
    }
  }
  return out;
}

/** readJsonlLines at an awkward chunk size against the reference. A line that is not UTF-8 must be
 *  reported naming its line: either thrown (reading stops there) or yielded with `error` set. */
async function checkReader(file: string, input: Buffer, r: Rand): Promise<void> {
  const want = referenceLines(input);
  let k = 0;
  try {
    for await (const rec of readJsonlLines(file, { chunkSize: awkwardChunk(r, input.length) })) {
      const w = want[k++];
      if (!w || rec.line !== w.line) throw new Unexpected(`readJsonlLines yields line ${rec.line}, the reference line ${w?.line}`);
      const error = (rec as { error?: string }).error;
      if (w.text === undefined) {
        if (!error) throw new Unexpected(`line ${w.line} is not UTF-8 but is yielded as text`);
        checkDataError(new SftError(error), file, w.line, false);
      } else if (error || rec.text !== w.text) throw new Unexpected(`line ${w.line}: the text differs from the reference`);
    }
  } catch (err) {
    if (err instanceof Unexpected) throw err;
    const w = want[k];
    if (!w || w.text !== undefined) throw err;
    checkDataError(err, file, w.line, false);
    return;
  }
  if (k !== want.length) throw new Unexpected(`readJsonlLines stops after ${k} of ${want.length} lines`);
}

async function jsonlFile(r: Rand, i: number): Promise<{ input: Buffer; outcome: string }> {
  const pieces: Buffer[] = [];
  const bad = new Set<number>();
  let good = 0;
  let line = 1;
  for (let k = 0, n = 1 + r.int(20); k < n; k++) {
    const isGood = r.chance(0.5);
    const b = isGood ? goodLine(r) : corruptLine(r);
    const spans = b.toString('latin1').split('\n').length;
    if (isGood) good++;
    else for (let s = 0; s < spans; s++) bad.add(line + s);
    pieces.push(b);
    line += spans;
  }
  const input = (current = Buffer.concat(pieces.flatMap((p, k) => (k ? [Buffer.from(r.chance(0.2) ? '\r\n' : '\n'), p] : [p]))));
  const file = join(dir, `file-${i}.jsonl`);
  writeFileSync(file, input);

  await checkReader(file, input, r);

  const template = getTemplate(r.pick(TEMPLATE_NAMES));
  const opts = { file, tok, template, maxSeqLength: 100_000, vocabSize: tok.vocabSize, cacheDir: join(dir, 'cache') };
  let outcome: string;
  try {
    const ds = await prepareDataset(opts);
    if (ds.stats.samples < good) throw new Unexpected(`${ds.stats.samples} samples from ${good} good lines`);
    ds.close();
    outcome = 'strict-ok';
  } catch (err) {
    if (err instanceof Unexpected) throw err;
    outcome = 'strict-' + checkDataError(err, file, bad, good === 0);
  }
  const skipped: string[] = [];
  try {
    const ds = await prepareDataset({ ...opts, skipBadLines: true, onBadLine: (m) => skipped.push(m) });
    const st = ds.stats;
    ds.close();
    if (st.samples < good) throw new Unexpected(`skipBadLines: ${st.samples} samples from ${good} good lines`);
    if (st.samples + st.badLines + st.skippedNoTarget !== st.lines) throw new Unexpected(`skipBadLines: stats do not add up ${JSON.stringify(st)}`);
    if (skipped.length !== st.badLines) throw new Unexpected('skipBadLines: onBadLine calls != badLines');
    for (const m of skipped) checkDataError(new SftError(m), file, bad, false);
    outcome += st.badLines ? ' skip-some' : ' skip-none';
  } catch (err) {
    if (err instanceof Unexpected) throw err;
    // Skipping bad lines, only a file with no usable line stops (and, where the reader stops on
    // them, a line that is not UTF-8).
    const kind = checkDataError(err, file, bad, good === 0);
    if (kind === 'line-error' && !/not valid UTF-8/.test((err as Error).message)) throw new Unexpected(`skipBadLines stopped on: ${(err as Error).message.slice(0, 200)}`);
    outcome += ' skip-' + kind;
  }
  return { input, outcome };
}

// ---- JSON arrays: damaged files, through the streaming reader and prepareDataset --------------------------

/** Line and column (1-based, characters, BOM not counted) of byte `offset`, counted on from `from`. */
function advance(bytes: Buffer, from: { at: number; line: number; column: number }, offset: number): { at: number; line: number; column: number } {
  let { at, line, column } = from;
  for (; at < offset; at++) {
    if (bytes[at] === 0x0a) [line, column] = [line + 1, 0];
    else if ((bytes[at] & 0xc0) !== 0x80) column++;
  }
  return { at, line, column };
}

/** Deep equality; where nesting is too deep to compare (deepText), the counts. */
function sameValues(a: unknown[], b: unknown[]): boolean {
  try {
    return isDeepStrictEqual(a, b);
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    return a.length === b.length;
  }
}

/** The array reader must agree with JSON.parse on the whole file: a file it accepts yields exactly
 *  its elements, at exact positions, with no error; a file it refuses (or that is not UTF-8) is
 *  reported, by a record's error or a thrown SftError, naming FILE:LINE:COLUMN inside the file. */
async function jsonArrays(r: Rand, i: number): Promise<{ input: Buffer; outcome: string }> {
  const { bytes } = arrayFile(r);
  const input = (current = bytes);
  const file = join(dir, `array-${i}.json`);
  writeFileSync(file, input);
  if (detectLayout(file) !== 'json-array') return { input, outcome: 'not-an-array' };
  const bom = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  let reference: unknown[] | undefined;
  try {
    const v: unknown = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(bom)));
    if (Array.isArray(v)) reference = v;
  } catch {
    // refused: the reader must say so
  }
  const lineCount = input.toString('latin1').split('\n').length;
  const checkWhere = (message: string): void => {
    if (message.startsWith(`${file}: `)) return; // the whole file (an empty one)
    const m = new RegExp(`^${escapeRe(file)}:(\\d+):(\\d+)`).exec(message);
    if (!m || Number(m[1]) < 1 || Number(m[1]) > lineCount || Number(m[2]) < 1) throw new Unexpected(`error without a FILE:LINE:COLUMN in the file: ${message.slice(0, 200)}`);
  };
  const got: unknown[] = [];
  let reported: string | undefined;
  let pos = { at: bom, line: 1, column: 0 };
  let last = -1;
  let index = -1;
  try {
    for await (const rec of readJsonArray(file, { chunkSize: awkwardChunk(r, input.length) })) {
      if (rec.index !== ++index) throw new Unexpected(`record index ${rec.index} after ${index - 1}`);
      if (rec.offset <= last) throw new Unexpected(`record ${rec.index} starts at byte ${rec.offset}, not after the one before (${last})`);
      last = rec.offset;
      pos = advance(input, pos, rec.offset);
      if (rec.line !== pos.line || rec.column !== pos.column + 1) throw new Unexpected(`record ${rec.index} at ${rec.line}:${rec.column}, its byte ${rec.offset} is at ${pos.line}:${pos.column + 1}`);
      if (!rec.error && !input.subarray(rec.offset, rec.offset + Buffer.byteLength(rec.text)).equals(Buffer.from(rec.text))) throw new Unexpected(`record ${rec.index}: its text is not the file's bytes at its offset`);
      const where = recordWhere(file, rec);
      try {
        got.push(parseRecord({ where, text: rec.text, error: rec.error, unit: 'record' }));
      } catch (err) {
        if (!(err instanceof SftError)) throw err;
        if (!err.message.startsWith(where)) throw new Unexpected(`a record's error does not start with its place: ${err.message.slice(0, 200)}`);
        reported ??= err.message;
      }
    }
  } catch (err) {
    if (err instanceof Unexpected || !(err instanceof SftError)) throw err;
    checkWhere(err.message);
    reported ??= err.message;
  }
  if (reference && reported) throw new Unexpected(`JSON.parse reads the file, the reader refuses it: ${reported.slice(0, 200)}`);
  if (!reference && !reported) throw new Unexpected('JSON.parse refuses the file (or it is not UTF-8), the reader reports nothing');
  if (reference && !sameValues(got, reference)) throw new Unexpected(`the records differ from JSON.parse's elements (${got.length} vs ${reference.length})`);
  let outcome = reference ? 'valid' : 'refused';
  if (input.length > 300_000) return { input, outcome: outcome + ' large' };
  // Through prepareDataset: any end is a result or an SftError naming the file and a place in it.
  const opts = { file, tok, template: getTemplate(r.pick(TEMPLATE_NAMES)), maxSeqLength: 100_000, vocabSize: tok.vocabSize, cacheDir: join(dir, 'cache') };
  for (const skipBadLines of [false, true]) {
    try {
      const ds = await prepareDataset({ ...opts, skipBadLines, onBadLine: (m) => checkWhere(m) });
      const st = ds.stats;
      ds.close();
      if (st.samples + st.badLines + st.skippedNoTarget !== st.lines) throw new Unexpected(`stats do not add up ${JSON.stringify(st)}`);
      outcome += skipBadLines ? ' skip-ok' : ' strict-ok';
    } catch (err) {
      if (err instanceof Unexpected || !(err instanceof SftError)) throw err;
      checkWhere(err.message);
      outcome += skipBadLines ? ' skip-error' : ' strict-error';
    }
  }
  return { input, outcome };
}

// ---- configs --------------------------------------------------------------------------------------------

const BASES = readdirSync(join(packageRoot, 'configs'))
  .filter((f) => f.endsWith('.json'))
  .map((f) => JSON.parse(readFileSync(join(packageRoot, 'configs', f), 'utf8')) as Record<string, never>);

function config(r: Rand, i: number): { input: Buffer; outcome: string } {
  const input = (current = corruptConfig(r.pick(BASES), r));
  const file = join(dir, `train_args-${i}.json`);
  writeFileSync(file, input);
  const overrides = r.chance(0.2) ? corruptOverrides(r) : [];
  try {
    loadConfig(file, overrides);
    return { input, outcome: 'ok' };
  } catch (err) {
    if (!(err instanceof SftError)) throw err;
    if (!err.message.startsWith(`${file}:`) && !err.message.startsWith('command line:')) throw new Unexpected(`error names neither the file nor the command line: ${err.message.slice(0, 200)}`);
    return { input, outcome: err.message.startsWith(`${file}:`) && /^:\d+:\d+: /.test(err.message.slice(file.length)) ? 'error-at-line' : 'error' };
  }
}

function overrides(r: Rand): { input: string[]; outcome: string } {
  const input = (current = corruptOverrides(r));
  try {
    configFromObject(r.pick(BASES), input, 'config');
    return { input, outcome: 'ok' };
  } catch (err) {
    if (!(err instanceof SftError)) throw err;
    if (!/^(command line|config): /.test(err.message)) throw new Unexpected(`error names neither the config nor the command line: ${err.message.slice(0, 200)}`);
    return { input, outcome: 'error' };
  }
}

// ---- main ----------------------------------------------------------------------------------------------

async function runCase(kind: Kind, r: Rand, i: number): Promise<{ input: Buffer | string[]; outcome: string }> {
  if (kind === 'jsonl-lines') return jsonlLine(r, i);
  if (kind === 'jsonl-files') return jsonlFile(r, i);
  if (kind === 'json-arrays') return jsonArrays(r, i);
  if (kind === 'config') return config(r, i);
  if (kind === 'overrides') return overrides(r);
  // The watchdog's own check: a result, a crash of the wrong kind, then a case that never ends.
  if (i === 1) JSON.parse('null').field; // a TypeError, as a careless guard would throw
  if (i === 2) for (;;);
  return { input: [], outcome: 'ok' };
}

async function main(): Promise<void> {
  const [kind, seedText, countText, flag, only] = process.argv.slice(2) as [Kind, string, string, string?, string?];
  if (!KINDS.includes(kind)) throw new Error(`kind must be one of ${KINDS.join(', ')}`);
  const seed = Number(seedText), n = Number(countText);
  const first = flag === '--case' ? Number(only) : 0;
  const last = flag === '--case' ? first + 1 : n;
  for (let i = first; i < last; i++) {
    process.stdout.write(`> ${i}\n`);
    current = [];
    try {
      const { input, outcome } = await runCase(kind, caseRand(seed, i), i);
      count(outcome);
      if (flag === '--case') process.stdout.write(`case ${i}: ${outcome}\n${Array.isArray(input) ? JSON.stringify(input) : input.toString('latin1')}\n`);
    } catch (err) {
      count('UNEXPECTED');
      report(i, kind, err, current);
    }
  }
  rmSync(dir, { recursive: true, force: true });
  process.stdout.write(`= ${JSON.stringify(counts)}\n`);
}

await main();
