import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readJsonlLines, type JsonlLine } from '../../src/data/jsonl.js';
import { parseRecord } from '../../src/data/records.js';
import { SftError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'sft-jsonl-'));
const parseJsonLine = (file: string, l: JsonlLine) => parseRecord({ where: `${file}:${l.line}`, text: l.text, error: l.error, unit: 'line' });

async function collect(file: string, chunkSize?: number): Promise<JsonlLine[]> {
  const out: JsonlLine[] = [];
  for await (const l of readJsonlLines(file, { chunkSize })) out.push(l);
  return out;
}

// Bytes by hand: BOM(3) | {"a":1}\r\n (9) | \n (1) | "  \n" (3) | {"b":"中文"}\n (8 + 6 + 1) | {"c":2} (no newline)
const tricky = join(dir, 'tricky.jsonl');
writeFileSync(tricky, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"a":1}\r\n\n  \n{"b":"中文"}\n{"c":2}')]));
const expected: JsonlLine[] = [
  { line: 1, offset: 3, text: '{"a":1}' },
  { line: 4, offset: 16, text: '{"b":"中文"}' },
  { line: 5, offset: 31, text: '{"c":2}' },
];

test('lines, byte offsets, BOM, CRLF, blank lines and a last line without newline', async () => {
  assert.deepEqual(await collect(tricky), expected);
});

test('any chunk size gives the same lines (multi-byte characters split across chunks)', async () => {
  for (const size of [1, 2, 3, 5, 7, 16]) assert.deepEqual(await collect(tricky, size), expected, `chunk ${size}`);
});

test('malformed JSON names file and line', async () => {
  const f = join(dir, 'bad.jsonl');
  writeFileSync(f, '{"a":1}\n\n{"a":\n');
  const lines = await collect(f);
  assert.deepEqual(parseJsonLine(f, lines[0]), { a: 1 });
  assert.throws(
    () => parseJsonLine(f, lines[1]),
    (e: unknown) => e instanceof SftError && new RegExp(`^${f}:3: malformed JSON \\(.+\\) — fix or delete the line$`).test(e.message),
  );
});

test('bytes that are not UTF-8 name file and line', async () => {
  const f = join(dir, 'gbk.jsonl');
  writeFileSync(f, Buffer.concat([Buffer.from('{"a":1}\n{"a":"'), Buffer.from([0xc4, 0xe3, 0xba, 0xc3]), Buffer.from('"}\n')]));
  const lines = await collect(f, 4);
  assert.equal(lines.length, 2);
  assert.equal(lines[0].error, undefined);
  // The bad line is reported, not silently decoded: parsing it raises the FILE:LINE error.
  assert.throws(() => parseJsonLine(f, lines[1]), (e: unknown) => e instanceof SftError && e.message.startsWith(`${f}:2: `) && /not valid UTF-8/.test(e.message));
});

test('a missing file is an SftError naming it', async () => {
  const f = join(dir, 'nope.jsonl');
  await assert.rejects(collect(f), (e: unknown) => e instanceof SftError && e.message.startsWith(f));
});

test('one object pretty-printed over several lines gets a hint, not just "malformed JSON"', async () => {
  const f = join(dir, 'object.json');
  writeFileSync(f, '{\n  "instruction": "a",\n  "output": "b"\n}\n');
  const [first] = await collect(f);
  assert.throws(() => parseJsonLine(f, first), (e: unknown) => e instanceof SftError && e.message.startsWith(`${f}:1: malformed JSON`) && /JSON written over several lines: JSON Lines holds one record per line/.test(e.message));
});
