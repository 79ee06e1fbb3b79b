// JSON array data files (LLaMA-Factory's layout, alpaca_zh.json): streamed record by record with
// exact positions; a bad record is reported like a bad JSONL line, a broken array stops the read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync, openSync, writeSync, closeSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { readJsonArray, type JsonArrayRecord } from '../../src/data/json-array.js';
import { detectLayout, parseRecord, readRecords } from '../../src/data/records.js';
import { prepareDataset, batches, type PreparedDataset } from '../../src/data/dataset.js';
import { getTemplate } from '../../src/data/templates.js';
import { SftError } from '../../src/errors.js';
import { fakeTok } from '../fixtures/data/fake-tok.js';

const dir = mkdtempSync(join(tmpdir(), 'sft-json-array-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const tok = fakeTok();

async function collect(file: string, opts: { chunkSize?: number; maxRecordBytes?: number } = {}): Promise<JsonArrayRecord[]> {
  const out: JsonArrayRecord[] = [];
  for await (const r of readJsonArray(file, opts)) out.push(r);
  return out;
}
const write = (name: string, content: string | Buffer): string => {
  const f = join(dir, name);
  writeFileSync(f, content);
  return f;
};

// BOM | "[\r\n" | tab, an object whose string holds "]" and an escaped quote | a number between
// spaces | a string ending in an escaped backslash | a nested array holding "}" | null.
// Positions worked out independently (line = 1 + newlines before, column = characters since the
// line's start + 1, BOM not counted; offset in bytes).
const trickyBody = '[\r\n\t{"a":"中]\\""},  7 ,\n  "s\\\\" ,[1,{"b":"}"}],null]\n';
const tricky = write('tricky.json', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(trickyBody)]));
const trickyWant: JsonArrayRecord[] = [
  { index: 0, line: 2, column: 2, offset: 7, text: '{"a":"中]\\""}' },
  { index: 1, line: 2, column: 17, offset: 24, text: '7' },
  { index: 2, line: 3, column: 3, offset: 30, text: '"s\\\\"' },
  { index: 3, line: 3, column: 10, offset: 37, text: '[1,{"b":"}"}]' },
  { index: 4, line: 3, column: 24, offset: 51, text: 'null' },
];

test('records and their exact positions: BOM, CRLF, tabs, brackets and escaped quotes inside strings, scalars', async () => {
  assert.deepEqual(await collect(tricky), trickyWant);
  assert.deepEqual((await collect(tricky)).map((r) => JSON.parse(r.text)), JSON.parse(trickyBody));
});

test('any chunk size gives the same records (BOM, multi-byte characters and escapes split across chunks)', async () => {
  for (const chunkSize of [1, 2, 3, 4, 5, 7, 11, 16]) assert.deepEqual(await collect(tricky, { chunkSize }), trickyWant, `chunk ${chunkSize}`);
});

test('empty arrays and whitespace', async () => {
  assert.deepEqual(await collect(write('empty.json', '[]')), []);
  assert.deepEqual(await collect(write('empty2.json', ' \n\t[ \r\n ] \n\n')), []);
  const one = await collect(write('one.json', '[{"x":1}]'));
  assert.deepEqual(one, [{ index: 0, line: 1, column: 2, offset: 1, text: '{"x":1}' }]);
});

/** The SftError message of reading `content` as an array. */
async function arrayError(name: string, content: string | Buffer, opts: { chunkSize?: number; maxRecordBytes?: number } = {}): Promise<string> {
  const f = write(name, content);
  try {
    await collect(f, opts);
  } catch (err) {
    assert.ok(err instanceof SftError, String(err));
    assert.ok(err.message.startsWith(`${f}:`), err.message);
    return err.message.slice(f.length);
  }
  assert.fail(`${name} was read without an error`);
}

test('a broken array stops the read at the exact place, with what to do', async () => {
  // [line:column] of the fault, worked out by hand.
  assert.match(await arrayError('trunc1.json', '[{"a":1},\n {"b": "x'), /^:2:10: the file ends inside record 2, which starts at 2:2 \(in a string never closed\) — the file is cut short/);
  assert.match(await arrayError('trunc2.json', '[{"a":1}'), /^:1:9: the array is not closed: no "\]" after record 1 — the file is cut short/);
  assert.match(await arrayError('trunc3.json', '[1, 2'), /^:1:6: the file ends inside record 2, which starts at 1:5 —/);
  assert.match(await arrayError('trunc4.json', '['), /^:1:2: the array is not closed/);
  assert.match(await arrayError('trailing.json', '[{"a":1},\n]'), /^:2:1: a trailing comma \(at 1:9\) before the closing "\]" — delete it/);
  assert.match(await arrayError('missing.json', '[{"a":1}\n  {"b":2}]'), /^:2:3: expected "," or "\]" after record 1, found "\{" — a missing comma\?/);
  assert.match(await arrayError('leading.json', '[ , {"a":1}]'), /^:1:3: a comma where record 1 should start — delete it/);
  assert.match(await arrayError('double.json', '[{"a":1},,{"a":1}]'), /^:1:10: a comma where record 2 should start/);
  assert.match(await arrayError('mismatch.json', '[{"a":[1, 2}]'), /^:1:12: "\}" does not close the "\[" before it/);
  assert.match(await arrayError('after.json', '[{"a":1}]\n[{"a":2}]'), /^:2:1: "\[" after the array's closing "\]" — a \.json data file holds one array of records/);
  assert.match(await arrayError('object.json', '\n {"a":1}'), /^:2:2: expected "\[" \(the start of an array of records\), found "\{"/);
  assert.match(await arrayError('blank.json', ' \n '), /^: the file is empty/);
  assert.match(await arrayError('halfbom.json', Buffer.from([0xef, 0xbb, 0x5b, 0x5d])), /^:1:1: an incomplete byte-order mark/);
});

test('a record whose inside is malformed is reported as that record, by position and index; the rest reads on', async () => {
  const f = write('bad-record.json', '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "output": },\n  {"instruction": "d", "output": "e"}\n]\n');
  const recs = [];
  for await (const r of readRecords(f)) recs.push(r);
  assert.equal(recs.length, 3);
  assert.deepEqual(parseRecord(recs[0]), { instruction: 'a', output: 'b' });
  assert.throws(() => parseRecord(recs[1]), (e: unknown) => e instanceof SftError && new RegExp(`^${f}:3:3 \\(record 2, \\.\\[1\\]\\): malformed JSON \\(.+\\) — fix or delete the record$`).test(e.message));
  assert.deepEqual(parseRecord(recs[2]), { instruction: 'd', output: 'e' });
});

test('bytes that are not UTF-8: the record is named; a GBK byte that breaks the structure says UTF-8 too', async () => {
  const gbk = Buffer.from([0xc4, 0xe3, 0xba, 0xc3]); // 你好 in GBK
  const f = write('gbk.json', Buffer.concat([Buffer.from('[{"output":"ok"},\n {"output":"'), gbk, Buffer.from('"}]')]));
  const recs = await collect(f, { chunkSize: 3 });
  assert.equal(recs.length, 2);
  assert.equal(recs[1].text, '');
  assert.match(recs[1].error!, new RegExp(`^${f}:2:2 \\(record 2, \\.\\[1\\]\\): the record is not valid UTF-8 — convert the file to UTF-8`));
  // 0x5c (a backslash in ASCII) is a GBK trail byte: here it escapes the closing quote.
  const msg = await arrayError('gbk-break.json', Buffer.concat([Buffer.from('[{"output":"'), Buffer.from([0x81, 0x5c]), Buffer.from('"}]')]));
  assert.match(msg, /^:1:2 \(record 1, \.\[0\]\): the record is not valid UTF-8, and the array cannot be read past it/);
});

test('a huge string, deep nesting, and a record larger than the limit', async () => {
  const huge = 'é'.repeat(3_000_000);
  const f = write('huge.json', `[{"output":"${huge}"},{"output":"x"}]`);
  const recs = await collect(f, { chunkSize: 65536 });
  assert.equal(recs.length, 2);
  assert.equal((JSON.parse(recs[0].text) as { output: string }).output, huge);
  assert.deepEqual([recs[1].line, recs[1].column, recs[1].offset], [1, 3_000_000 + 16, 6_000_000 + 15]);
  const depth = 100_000;
  const deep = await collect(write('deep.json', `[${'['.repeat(depth)}${']'.repeat(depth)}, {}]`));
  assert.equal(deep.length, 2);
  assert.equal(deep[0].text.length, 2 * depth);
  assert.match(await arrayError('big.json', `[{"a":"${'x'.repeat(5000)}"}]`, { maxRecordBytes: 4096 }), /^:1:2 \(record 1, \.\[0\]\): the record is larger than 4096 bytes — check the file/);
  // A string never closed would take the rest of the file: the limit stops it, and says why it may be.
  const unclosed = `[{"a":"${'x'.repeat(5000)}, {"a": "b"}]`;
  assert.match(await arrayError('unclosed.json', unclosed, { maxRecordBytes: 4096, chunkSize: 1024 }), /larger than 4096 bytes \(a string that is never closed\?\)/);
});

test('the layout is told by the content: "[" first is an array, whatever the name', async () => {
  assert.equal(detectLayout(tricky), 'json-array');
  assert.equal(detectLayout(write('array.jsonl', '\n\n  [{"a":1}]')), 'json-array');
  assert.equal(detectLayout(write('lines.json', '{"a":1}\n{"a":2}\n')), 'jsonl');
  assert.equal(detectLayout(write('bom-lines.json', '\ufeff{"a":1}\n')), 'jsonl');
  assert.throws(() => detectLayout(join(dir, 'nope.json')), (e: unknown) => e instanceof SftError && /no such file/.test(e.message));
});

// ---- through prepareDataset ------------------------------------------------------------------------

const RECORDS = [
  { instruction: 'do', input: 'x', output: 'ok' },
  { conversation: [{ human: 'hi', assistant: 'yo' }] },
  { messages: [{ role: 'user', content: 'u' }, { role: 'assistant', content: 'v' }] },
  { instruction: '中文', input: '', output: '好' },
];
const prepare = (file: string, extra: Partial<Parameters<typeof prepareDataset>[0]> = {}): Promise<PreparedDataset> =>
  prepareDataset({ file, tok, template: getTemplate('baichuan'), maxSeqLength: 64, vocabSize: tok.vocabSize, cacheDir: join(dir, 'cache'), ...extra });
const samples = (ds: PreparedDataset) => Array.from({ length: ds.size }, (_, i) => ds.get(i)).map((s) => [Array.from(s.inputIds), Array.from(s.labels)]);

test('a JSON array trains exactly as the same records as JSON Lines: samples, stats, batch order', async () => {
  const lines = write('same.jsonl', RECORDS.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const array = write('same.json', JSON.stringify(RECORDS, null, 2));
  const a = await prepare(lines);
  const b = await prepare(array);
  try {
    assert.deepEqual(samples(b), samples(a));
    assert.deepEqual(b.stats, a.stats);
    const order = (ds: PreparedDataset) => [...batches(ds, { batchSize: 2, seed: 3, epoch: 1, padId: 0 })].map((x) => x.indices);
    assert.deepEqual(order(b), order(a));
  } finally {
    a.close();
    b.close();
  }
});

test('prepareDataset on an array: a bad record stops the pass naming it; skipBadLines skips it and counts it', async () => {
  const f = write('mixed.json', `[\n${JSON.stringify(RECORDS[0])},\n  {"instruction": 1, "output": "b"},\n  {"foo": 2},\n${JSON.stringify(RECORDS[1])}\n]`);
  await assert.rejects(prepare(f, { cacheDir: join(dir, 'cache-bad1') }), (e: unknown) => e instanceof SftError && e.message.startsWith(`${f}:3:3 (record 2, .[1]): "instruction" must be a string`));
  const bad: string[] = [];
  const ds = await prepare(f, { cacheDir: join(dir, 'cache-bad2'), skipBadLines: true, onBadLine: (m) => bad.push(m) });
  try {
    assert.deepEqual([ds.stats.lines, ds.stats.samples, ds.stats.badLines], [4, 2, 2]);
    assert.deepEqual(bad.map((m) => m.slice(f.length).split(':').slice(0, 3).join(':')), [':3:3 (record 2, .[1])', ':4:3 (record 3, .[2])']);
  } finally {
    ds.close();
  }
  // A broken array is not a bad record: it stops the pass even when bad records are skipped.
  const cut = write('cut.json', `[${JSON.stringify(RECORDS[0])}, {"instruction": "a", "out`);
  await assert.rejects(prepare(cut, { cacheDir: join(dir, 'cache-cut'), skipBadLines: true }), (e: unknown) => e instanceof SftError && /the file ends inside record 2/.test(e.message));
  assert.ok(!existsSync(join(dir, 'cache-cut')), 'the stopped pass leaves no cache');
  await assert.rejects(prepare(write('none.json', '[]')), (e: unknown) => e instanceof SftError && /no usable samples — 0 records read/.test(e.message));
});

test('a .json holding JSON Lines trains as JSON Lines', async () => {
  const ds = await prepare(write('lines-named.json', RECORDS.map((r) => JSON.stringify(r)).join('\n')));
  try {
    assert.equal(ds.size, RECORDS.length);
  } finally {
    ds.close();
  }
});

const ALPACA_ZH = fileURLToPath(new URL('../../../shared/conversations/alpaca_zh_demo.json', import.meta.url));

test('the real alpaca_zh_demo.json (a JSON array of 1,000 records) loads', { skip: existsSync(ALPACA_ZH) ? false : `${ALPACA_ZH} is absent` }, async () => {
  const ds = await prepare(ALPACA_ZH, { maxSeqLength: 100_000, cacheDir: join(dir, 'cache-alpaca') });
  try {
    assert.deepEqual([ds.stats.lines, ds.stats.samples, ds.stats.badLines], [1000, 1000, 0]);
  } finally {
    ds.close();
  }
});

test('streams a large array: live memory stays far below the file size while reading', async () => {
  const f = join(dir, 'big.json');
  const N = 20_000;
  const filler = 'p'.repeat(2000);
  const fd = openSync(f, 'w');
  writeSync(fd, '[\n');
  for (let i = 0; i < N; i += 1000) {
    const block: string[] = [];
    for (let j = i; j < i + 1000; j++) block.push(JSON.stringify({ instruction: `q${j} ${filler}`, output: `a${j}` }, null, 2));
    writeSync(fd, block.join(',\n') + (i + 1000 < N ? ',\n' : '\n'));
  }
  writeSync(fd, ']\n');
  closeSync(fd);
  const size = statSync(f).size;
  // Live memory, garbage collected first, every 2,000 records: a chunk or two and its records, not the file.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  const base = process.memoryUsage();
  let peak = 0;
  let n = 0;
  for await (const rec of readRecords(f)) {
    const r = parseRecord(rec) as { output: string };
    assert.equal(r.output, `a${n}`);
    if (++n % 2000 === 0) {
      gc();
      const m = process.memoryUsage();
      peak = Math.max(peak, m.heapUsed - base.heapUsed + m.arrayBuffers - base.arrayBuffers);
    }
  }
  assert.equal(n, N);
  assert.ok(size > 40e6, `file is ${size} bytes`);
  // Reading the file whole would hold at least its bytes (and then its strings); the reader holds a
  // chunk or a few and their records (8-16 MB measured, with the read stream's buffers and GC timing).
  assert.ok(peak < size / 2, `reading held up to ${peak} bytes more for a ${size}-byte file`);
});
