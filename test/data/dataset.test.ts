import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync, readFileSync, readdirSync, statSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { prepareDataset, batches, batchesPerEpoch, type PreparedDataset, type Batch } from '../../src/data/dataset.js';
import { getTemplate } from '../../src/data/templates.js';
import { SftError } from '../../src/errors.js';
import { Stopped } from '../../src/util/interrupt.js';
import { fakeTok, spans, R102, R103, EOS, ch } from '../fixtures/data/fake-tok.js';

const tok = fakeTok();
const baichuan = getTemplate('baichuan');
const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/data/${name}`, import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'sft-dataset-'));
const X = -100;

function prepare(file: string, extra: Partial<Parameters<typeof prepareDataset>[0]> = {}): Promise<PreparedDataset> {
  return prepareDataset({ file, tok, template: baichuan, maxSeqLength: 10, vocabSize: tok.vocabSize, cacheDir: join(tmp, 'cache'), ...extra });
}
const plain = (ds: PreparedDataset, i: number) => {
  const s = ds.get(i);
  return { inputIds: Array.from(s.inputIds), labels: Array.from(s.labels) };
};

test('mixed formats: samples, truncation, no-target skip and stats', async () => {
  const ds = await prepare(fixture('mixed.jsonl'));
  try {
    // line 5 ("a long question") is 19 tokens: cut to 10 it keeps no answer token and is skipped.
    assert.deepEqual(ds.stats, { lines: 5, samples: 4, truncated: 1, skippedNoTarget: 1, badLines: 0, tokens: 31, targetTokens: 10 });
    assert.equal(ds.size, 4);
    assert.deepEqual(plain(ds, 0), spans([['<reserved_102>hi<reserved_103>', false], ['yo</s>', true]]));
    assert.deepEqual(plain(ds, 1), spans([['<reserved_102>u<reserved_103>', false], ['v</s>', true]]));
    assert.deepEqual(plain(ds, 2), spans([['<reserved_102>do\nx<reserved_103>', false], ['ok</s>', true]]));
    assert.deepEqual(plain(ds, 3), spans([['<reserved_102>abcdef<reserved_103>', false], ['gh', true]]));
    assert.throws(() => ds.get(4), RangeError);
    assert.equal(statSync(join(ds.cacheDir, 'samples.bin')).size, 31 * 8);
    assert.deepEqual([...new Float64Array(new Uint8Array(readFileSync(join(ds.cacheDir, 'index.bin'))).buffer)], [0, 7, 12, 21, 31]);
  } finally {
    ds.close();
  }
  assert.deepEqual(readdirSync(join(tmp, 'cache')), [], 'close() removes the cache');
});

test('a malformed line stops with FILE:LINE', async () => {
  const f = fixture('bad-lines.jsonl');
  await assert.rejects(prepare(f), (e: unknown) => e instanceof SftError && e.message.startsWith(`${f}:2: malformed JSON (`) && e.message.endsWith('— fix or delete the line'));
});

test('skipBadLines counts and reports bad lines', async () => {
  const f = fixture('bad-lines.jsonl');
  const bad: string[] = [];
  const ds = await prepare(f, { skipBadLines: true, onBadLine: (m) => bad.push(m) });
  try {
    assert.deepEqual(ds.stats, { lines: 4, samples: 2, truncated: 0, skippedNoTarget: 0, badLines: 2, tokens: 7 + 5, targetTokens: 3 + 2 });
    assert.equal(bad.length, 2);
    assert.ok(bad[0].startsWith(`${f}:2: malformed JSON`));
    assert.ok(bad[1].startsWith(`${f}:3: unknown record format`));
  } finally {
    ds.close();
  }
});

test('a line that is not UTF-8 stops the run naming file:line, or is skipped and counted with skipBadLines', async () => {
  const f = join(tmp, 'gbk-line.jsonl');
  writeFileSync(f, Buffer.concat([Buffer.from('{"conversation":[{"human":"hi","assistant":"yo"}]}\n{"conversation":[{"human":"'), Buffer.from([0xc4, 0xe3]), Buffer.from('","assistant":"x"}]}\n')]));
  await assert.rejects(prepare(f, { cacheDir: join(tmp, 'cache-gbk1') }), (e: unknown) => e instanceof SftError && e.message.startsWith(`${f}:2: the line is not valid UTF-8`));
  const bad: string[] = [];
  const ds = await prepare(f, { cacheDir: join(tmp, 'cache-gbk2'), skipBadLines: true, onBadLine: (m) => bad.push(m) });
  try {
    assert.equal(ds.stats.samples, 1);
    assert.equal(ds.stats.badLines, 1);
    assert.match(bad[0], /:2: the line is not valid UTF-8/);
  } finally {
    ds.close();
  }
});

test('an id outside the model vocabulary names file, line and id before anything is kept', async () => {
  const f = join(tmp, 'oov.jsonl');
  writeFileSync(f, '{"conversation":[{"human":"hi","assistant":"yo"}]}\n{"conversation":[{"human":"中","assistant":"yo"}]}\n');
  const cache = join(tmp, 'cache-oov');
  await assert.rejects(
    prepare(f, { vocabSize: 300, cacheDir: cache }),
    (e: unknown) =>
      e instanceof SftError &&
      e.message === `${f}:2: token id 20113 is outside the model's vocabulary (size 300) — the tokenizer does not match the model`,
  );
  assert.ok(!existsSync(cache), 'a failed pass leaves no cache behind, nor the folder it made for it');
});

test('a stop asked for while reading ends the pass with Stopped and removes the partial cache', async () => {
  const f = join(tmp, 'stop.jsonl');
  writeFileSync(f, '{"conversation":[{"human":"hi","assistant":"yo"}]}\n'.repeat(100_000));
  const cache = join(tmp, 'cache-stop', 'nested');
  let stop = false;
  setTimeout(() => (stop = true), 50);  // the timer runs because the pass yields (about every 100 ms)
  await assert.rejects(
    prepare(f, { cacheDir: cache, shouldStop: () => stop }),
    (e: unknown) => e instanceof Stopped && e.exitCode === 130 && /^SIGINT: stopped while reading .*stop\.jsonl \([\d,]+ lines read; the partial data cache was removed\)/.test(e.message),
  );
  assert.ok(!existsSync(join(tmp, 'cache-stop')), 'the folders the pass made are gone');
  // Asked before the pass begins: nothing is made; a cache folder that was there stays.
  const kept = join(tmp, 'cache-kept');
  mkdirSync(kept);
  await assert.rejects(prepare(f, { cacheDir: kept, shouldStop: () => true }), /stopped while about to read/);
  assert.deepEqual(readdirSync(kept), []);
});

test('no usable sample is an error, not an empty dataset', async () => {
  const f = join(tmp, 'none.jsonl');
  writeFileSync(f, '{"conversation":[{"human":"a long question","assistant":"z"}]}\n');
  await assert.rejects(prepare(f), (e: unknown) => e instanceof SftError && /no usable samples.*1 lost every answer token/.test(e.message));
});

// Sample k (line k+1) is <reserved_102><reserved_103> then k+1 'x' then </s>: length k+4.
async function ladder(n: number): Promise<PreparedDataset> {
  const f = join(tmp, `ladder${n}.jsonl`);
  const lines = Array.from({ length: n }, (_, k) => JSON.stringify({ conversation: [{ human: '', assistant: 'x'.repeat(k + 1) }] }));
  writeFileSync(f, lines.join('\n') + '\n');
  return prepare(f, { maxSeqLength: 100 });
}

test('batches: a seeded shuffle per epoch, right padding with labels -100 (pad id = eos id)', async () => {
  const ds = await ladder(20);
  try {
    const opts = { batchSize: 6, seed: 42, epoch: 0, padId: EOS };
    const epoch0 = [...batches(ds, opts)];
    assert.equal(epoch0.length, 4);
    assert.equal(batchesPerEpoch(20, 6), 4);
    assert.deepEqual(epoch0.map((b) => b.indices.length), [6, 6, 6, 2]);
    assert.deepEqual(epoch0.map((b) => b.batch), [0, 1, 2, 3]);
    assert.deepEqual(epoch0.flatMap((b) => b.indices).sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i));
    assert.notDeepEqual(epoch0.flatMap((b) => b.indices), Array.from({ length: 20 }, (_, i) => i), 'shuffled');
    for (const b of epoch0) checkPadded(b);

    assert.deepEqual([...batches(ds, opts)], epoch0, 'same seed and epoch, same batches');
    const again = await ladder(20);
    try {
      assert.deepEqual([...batches(again, opts)], epoch0, 'same data prepared again, same batches');
    } finally {
      again.close();
    }
    const order = (o: typeof opts) => [...batches(ds, o)].flatMap((b) => b.indices);
    assert.notDeepEqual(order({ ...opts, epoch: 1 }), order(opts), 'another epoch, another order');
    assert.notDeepEqual(order({ ...opts, seed: 43 }), order(opts), 'another seed, another order');
    assert.notDeepEqual(order({ ...opts, seed: 0, epoch: 1 }), order({ ...opts, seed: 1, epoch: 0 }));

    const dropped = [...batches(ds, { ...opts, dropLast: true })];
    assert.equal(dropped.length, 3);
    assert.deepEqual(dropped.flatMap((b) => b.indices), epoch0.slice(0, 3).flatMap((b) => b.indices));
  } finally {
    ds.close();
  }
});

function checkPadded(b: Batch): void {
  const x = ch('x');
  assert.equal(b.seqLen, Math.max(...b.indices) + 4);
  assert.equal(b.ids.length, b.indices.length * b.seqLen);
  b.indices.forEach((k, row) => {
    const pad = b.seqLen - (k + 4);
    const wantIds = [R102, R103, ...Array(k + 1).fill(x), EOS, ...Array(pad).fill(EOS)];
    const wantLabels = [X, X, ...Array(k + 1).fill(x), EOS, ...Array(pad).fill(X)];
    assert.deepEqual(Array.from(b.ids.subarray(row * b.seqLen, (row + 1) * b.seqLen)), wantIds);
    assert.deepEqual(Array.from(b.labels.subarray(row * b.seqLen, (row + 1) * b.seqLen)), wantLabels);
  });
}

test('streams a 50k-line file: stats are right and the samples live on disk, not in memory', async () => {
  const f = join(tmp, 'big.jsonl');
  const N = 50_000;
  const filler = 'p'.repeat(150);
  const fd = openSync(f, 'w');
  for (let i = 1; i <= N; i += 1000) {
    let block = '';
    for (let j = i; j < i + 1000; j++) block += JSON.stringify({ conversation: [{ human: `q${j} ${filler}`, assistant: `a${j}` }] }) + '\n';
    writeSync(fd, block);
  }
  closeSync(fd);
  const fileSize = statSync(f).size;
  assert.ok(fileSize > 9e6, `file is ${fileSize} bytes`);

  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  const before = process.memoryUsage();
  const progress: number[] = [];
  const ds = await prepare(f, { maxSeqLength: 1024, onProgress: (n) => progress.push(n) });
  try {
    gc();
    gc();
    const after = process.memoryUsage();
    const held = after.heapUsed - before.heapUsed + (after.arrayBuffers - before.arrayBuffers);
    assert.ok(held < fileSize / 4, `dataset holds ${held} bytes for a ${fileSize}-byte file`);

    // Per line i with d digits: R102 q{i} space filler R103 a{i} EOS = 2d + 156 ids, d + 2 targets.
    let digits = 0;
    for (let i = 1; i <= N; i++) digits += String(i).length;
    assert.deepEqual(ds.stats, { lines: N, samples: N, truncated: 0, skippedNoTarget: 0, badLines: 0, tokens: 2 * digits + 156 * N, targetTokens: digits + 2 * N });
    assert.equal(statSync(join(ds.cacheDir, 'samples.bin')).size, 8 * ds.stats.tokens);
    assert.equal(progress.length, N / 1000 + 1);
    assert.equal(progress[progress.length - 1], N);
    assert.deepEqual(plain(ds, N - 1), spans([[`<reserved_102>q${N} ${filler}<reserved_103>`, false], [`a${N}</s>`, true]]));
    assert.deepEqual(plain(ds, 0), spans([[`<reserved_102>q1 ${filler}<reserved_103>`, false], ['a1</s>', true]]));
  } finally {
    ds.close();
  }
});
