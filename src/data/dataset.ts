// Training data, prepared in one streaming pass: read -> parse -> convert -> encode -> check ids ->
// append to a binary cache on disk. Memory holds one record at a time plus 8 bytes per sample, so a
// data file larger than memory trains fine, JSON Lines or one JSON array (records.ts). Every id is checked against the model's vocabulary here,
// before any compute, so a mismatched tokenizer fails with FILE:LINE (FILE:LINE:COLUMN and the record
// of an array) instead of a CUDA fault.
//
// Cache layout, in a fresh folder under cacheDir (removed by close()), or with `persistKey` in
// cacheDir/dataset-<key>/ (kept by close(), reused by the next call with the same key: a resumed run
// does not read the data again; remove() deletes it):
//   samples.bin  per sample: n int32 input ids, then n int32 labels (host byte order)
//   index.bin    float64 starts[0..size]: sample i holds tokens [starts[i], starts[i+1])
//   stats.json   the pass's DatasetStats, written last: its presence marks a complete cache
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, renameSync, rmdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { SftError } from '../errors.js';
import type { Tok } from '../tokenizer/types.js';
import { readRecords, parseRecord, detectLayout, type DataLayout } from './records.js';
import { toConversation, type Conversation } from './formats.js';
import { encodeConversation, IGNORE } from './encode.js';
import type { ChatTemplate } from './templates.js';
import { mulberry32 } from '../util/random.js';
import { poller, Stopped, stopRequested } from '../util/interrupt.js';

export interface DatasetStats {
  /** Records read: non-blank lines of JSON Lines, elements of a JSON array. */
  lines: number;
  /** Samples kept (= dataset size). */
  samples: number;
  /** Kept samples that were cut to maxSeqLength. */
  truncated: number;
  /** Samples dropped because truncation left no target token. */
  skippedNoTarget: number;
  /** Records dropped under skipBadLines (malformed JSON or an unusable record). */
  badLines: number;
  /** Tokens in kept samples. */
  tokens: number;
  /** Positions the shifted loss trains on (labels[i] != -100, i >= 1) in kept samples. */
  targetTokens: number;
}

export interface Sample {
  inputIds: Int32Array;
  labels: Int32Array;
}

export interface PreparedDataset {
  size: number;
  get(i: number): Sample;
  stats: DatasetStats;
  /** Folder holding the cache files; removed by close() unless persistent. */
  cacheDir: string;
  /** True when an earlier pass's persistent cache was reused (the data file was not read). */
  reused: boolean;
  close(): void;
  /** close() and delete the cache, persistent or not. */
  remove(): void;
}

export interface PrepareOptions {
  file: string;
  tok: Tok;
  template: ChatTemplate;
  maxSeqLength: number;
  /** The model's vocabulary size (embedding rows), which may differ from tok.vocabSize. */
  vocabSize: number;
  cacheDir: string;
  /** Drop lines with malformed JSON or an unusable record instead of stopping; each is counted
   *  and reported through onBadLine (lines that are not UTF-8 too). Out-of-vocabulary ids always stop. */
  skipBadLines?: boolean;
  onBadLine?: (message: string) => void;
  /** Called every PROGRESS_EVERY lines and once at the end with the lines read so far. */
  onProgress?: (lines: number) => void;
  /** Keep the cache in cacheDir/dataset-<persistKey>/ and reuse it when it is already complete. The
   *  caller's key must change whenever anything that shapes the samples does (file, tokenizer, ...). */
  persistKey?: string;
  /** Special-token strings in messages become their ids (config parse_special_tokens); default: text. */
  parseSpecialTokens?: boolean;
  /** Polled about every 100 ms (the pass yields to the event loop then, so a signal handler runs):
   *  true stops the pass with Stopped, and the partial cache is removed. Default: a Ctrl-C or
   *  SIGTERM recorded by the train command (util/interrupt.ts). */
  shouldStop?: () => boolean;
}

const PROGRESS_EVERY = 1000;
const WRITE_BUFFER_INTS = 1 << 18; // 1 MiB

export async function prepareDataset(opts: PrepareOptions): Promise<PreparedDataset> {
  const { file, tok, template, maxSeqLength, vocabSize } = opts;
  if (!Number.isInteger(maxSeqLength) || maxSeqLength < 2)
    throw new SftError(`max_seq_length must be an integer of at least 2, got ${maxSeqLength}`);
  if (!Number.isInteger(vocabSize) || vocabSize < 1) throw new SftError(`vocabulary size must be a positive integer, got ${vocabSize}`);

  const shouldStop = opts.shouldStop ?? (() => stopRequested() !== undefined);
  if (shouldStop()) throw new Stopped(`about to read ${file}`);
  // The first folder this call creates (output_dir itself, on a first run): a failed or stopped
  // pass removes it again when it is left empty.
  const created = mkdirSync(opts.cacheDir, { recursive: true });
  const finalDir = opts.persistKey ? join(opts.cacheDir, `dataset-${opts.persistKey}`) : undefined;
  if (finalDir && existsSync(join(finalDir, 'stats.json'))) return openCache(finalDir, true, true);
  let layout: DataLayout;
  try {
    layout = detectLayout(file);
  } catch (err) {
    if (created) removeEmptyFolders(opts.cacheDir, created);
    throw err;
  }
  const unit = layout === 'json-array' ? 'record' : 'line';
  const dir = mkdtempSync(join(opts.cacheDir, 'dataset-'));
  const fd = openSync(join(dir, 'samples.bin'), 'w+');
  const stats: DatasetStats = { lines: 0, samples: 0, truncated: 0, skippedNoTarget: 0, badLines: 0, tokens: 0, targetTokens: 0 };
  const stopNow = poller(shouldStop);
  let index: Float64Array;
  try {
    const writer = new SampleWriter(fd);
    for await (const rec of readRecords(file, { layout })) {
      if (await stopNow()) throw new Stopped(`reading ${file} (${stats.lines.toLocaleString('en')} ${unit}s read; the partial data cache was removed)`);
      stats.lines++;
      if (opts.onProgress && stats.lines % PROGRESS_EVERY === 0) opts.onProgress(stats.lines);
      const where = rec.where;
      let conv: Conversation;
      try {
        conv = toConversation(parseRecord(rec), where);
      } catch (err) {
        if (!(err instanceof SftError) || !opts.skipBadLines) throw err;
        stats.badLines++;
        opts.onBadLine?.(err.message);
        continue;
      }
      let enc;
      try {
        enc = encodeConversation(conv, template, tok, maxSeqLength, { parseSpecialTokens: opts.parseSpecialTokens ?? false });
      } catch (err) {
        // The model's chat_template can refuse a conversation (raise_exception, a role it rejects).
        if (!(err instanceof SftError)) throw err;
        const located = new SftError(`${where}: ${err.message}`);
        if (!opts.skipBadLines) throw located;
        stats.badLines++;
        opts.onBadLine?.(located.message);
        continue;
      }
      if (enc.noTarget) {
        stats.skippedNoTarget++;
        continue;
      }
      for (const id of enc.inputIds) {
        if (!(Number.isInteger(id) && id >= 0 && id < vocabSize))
          throw new SftError(
            `${where}: token id ${id} is outside the model's vocabulary (size ${vocabSize}) — the tokenizer does not match the model`,
          );
      }
      writer.append(enc.inputIds, enc.labels);
      const n = enc.inputIds.length;
      stats.samples++;
      stats.tokens += n;
      if (enc.truncated) stats.truncated++;
      for (let i = 1; i < n; i++) if (enc.labels[i] !== IGNORE) stats.targetTokens++;
    }
    opts.onProgress?.(stats.lines);
    if (stats.samples === 0) {
      throw new SftError(
        `${file}: no usable samples — ${stats.lines} ${unit}s read, ${stats.badLines} bad, ` +
          `${stats.skippedNoTarget} lost every answer token to truncation (raise max_seq_length)`,
      );
    }
    index = writer.finish();
    writeFileSync(join(dir, 'index.bin'), Buffer.from(index.buffer, index.byteOffset, index.byteLength));
    writeFileSync(join(dir, 'stats.json'), JSON.stringify(stats));
  } catch (err) {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
    if (created) removeEmptyFolders(opts.cacheDir, created);
    throw err;
  }
  closeSync(fd);
  if (!finalDir) return openCache(dir, false, false);
  rmSync(finalDir, { recursive: true, force: true });  // an incomplete leftover of a killed pass
  renameSync(dir, finalDir);
  return openCache(finalDir, true, false);
}

/** rmdir `dir` and its parents up to and including `top` while they are empty (never a file). */
function removeEmptyFolders(dir: string, top: string): void {
  for (let d = resolve(dir); ; d = dirname(d)) {
    try {
      rmdirSync(d);
    } catch {
      return;  // not empty, or gone
    }
    if (d === resolve(top) || dirname(d) === d) return;
  }
}

/** A complete cache folder as a dataset. */
function openCache(dir: string, persistent: boolean, reused: boolean): PreparedDataset {
  const stats = JSON.parse(readFileSync(join(dir, 'stats.json'), 'utf8')) as DatasetStats;
  const raw = readFileSync(join(dir, 'index.bin'));
  const index = new Float64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  if (index.length !== stats.samples + 1) throw new SftError(`${dir}: the data cache is damaged (index has ${index.length - 1} samples, stats ${stats.samples}); delete the folder`);
  const fd = openSync(join(dir, 'samples.bin'), 'r');
  let open = true;
  const close = () => {
    if (!open) return;
    open = false;
    closeSync(fd);
  };
  return {
    size: stats.samples,
    stats,
    cacheDir: dir,
    reused,
    get(i: number): Sample {
      if (!open) throw new Error('dataset is closed');
      if (!(Number.isInteger(i) && i >= 0 && i < stats.samples)) throw new RangeError(`sample ${i} out of range [0, ${stats.samples})`);
      const n = index[i + 1] - index[i];
      const both = new Int32Array(2 * n);
      readSync(fd, Buffer.from(both.buffer), 0, both.byteLength, index[i] * 8);
      return { inputIds: both.subarray(0, n), labels: both.subarray(n) };
    },
    close(): void {
      close();
      if (!persistent) rmSync(dir, { recursive: true, force: true });
    },
    remove(): void {
      close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Appends samples to samples.bin through a 1 MiB buffer and keeps the starts index. */
class SampleWriter {
  private buf = new Int32Array(WRITE_BUFFER_INTS);
  private used = 0;
  private written = 0; // bytes in the file
  private starts = new Float64Array(1024); // starts[0] = 0
  private count = 0;

  constructor(private readonly fd: number) {}

  append(inputIds: number[], labels: number[]): void {
    this.put(inputIds);
    this.put(labels);
    if (this.count + 2 > this.starts.length) {
      const grown = new Float64Array(this.starts.length * 2);
      grown.set(this.starts);
      this.starts = grown;
    }
    this.starts[this.count + 1] = this.starts[this.count] + inputIds.length;
    this.count++;
  }

  /** Flushes and returns starts[0..count]. */
  finish(): Float64Array {
    this.flush();
    return this.starts.slice(0, this.count + 1);
  }

  private put(values: number[]): void {
    if (values.length > WRITE_BUFFER_INTS - this.used) this.flush();
    if (values.length > WRITE_BUFFER_INTS) {
      this.write(Buffer.from(Int32Array.from(values).buffer));
    } else {
      this.buf.set(values, this.used);
      this.used += values.length;
    }
  }

  private flush(): void {
    if (this.used === 0) return;
    this.write(Buffer.from(this.buf.buffer, 0, this.used * 4));
    this.used = 0;
  }

  private write(bytes: Buffer): void {
    for (let done = 0; done < bytes.length; )
      done += writeSync(this.fd, bytes, done, bytes.length - done, this.written + done);
    this.written += bytes.length;
  }
}

export interface Batch {
  /** [rows, seqLen] row-major, right-padded with padId. */
  ids: Int32Array;
  /** [rows, seqLen], -100 on padding: padding is masked by labels, never by comparing ids to EOS. */
  labels: Int32Array;
  /** 0-based index of the batch within its epoch. */
  batch: number;
  seqLen: number;
  /** Dataset indices of the rows, in row order. */
  indices: number[];
}

export interface BatchOptions {
  batchSize: number;
  seed: number;
  epoch: number;
  padId: number;
  /** Drop the last, smaller batch of an epoch. Default false: every sample is seen each epoch. */
  dropLast?: boolean;
  /** Start at this batch of the epoch (resuming): earlier batches are skipped without reading them. */
  startBatch?: number;
}

export function batchesPerEpoch(size: number, batchSize: number, dropLast = false): number {
  return dropLast ? Math.floor(size / batchSize) : Math.ceil(size / batchSize);
}

/** One epoch of batches in a shuffled order that depends only on (seed, epoch); each batch is padded
 *  to its own longest sample. */
export function* batches(ds: Pick<PreparedDataset, 'size' | 'get'>, opts: BatchOptions): Generator<Batch> {
  const { batchSize, padId } = opts;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new SftError(`batch size must be a positive integer, got ${batchSize}`);
  const order = shuffledOrder(ds.size, opts.seed, opts.epoch);
  const count = batchesPerEpoch(ds.size, batchSize, opts.dropLast);
  for (let b = opts.startBatch ?? 0; b < count; b++) {
    const indices = Array.from(order.subarray(b * batchSize, Math.min((b + 1) * batchSize, ds.size)));
    const rows = indices.map((i) => ds.get(i));
    const seqLen = Math.max(...rows.map((r) => r.inputIds.length));
    const ids = new Int32Array(rows.length * seqLen).fill(padId);
    const labels = new Int32Array(rows.length * seqLen).fill(IGNORE);
    rows.forEach((r, k) => {
      ids.set(r.inputIds, k * seqLen);
      labels.set(r.labels, k * seqLen);
    });
    yield { ids, labels, batch: b, seqLen, indices };
  }
}

/** Fisher–Yates with mulberry32; (seed, epoch) are mixed so that (1, 0) and (0, 1) differ. */
function shuffledOrder(size: number, seed: number, epoch: number): Uint32Array {
  const order = new Uint32Array(size);
  for (let i = 0; i < size; i++) order[i] = i;
  const rand = mulberry32((Math.trunc(seed) ^ Math.imul(Math.trunc(epoch) + 1, 0x9e3779b9)) >>> 0);
  for (let i = size - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}
