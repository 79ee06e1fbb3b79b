import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeCsv, parseCsv } from '../../src/eval/csv.js';
import { SftError } from '../../src/errors.js';

const fields = (text: string) => parseCsv(text, 'x.csv').map((r) => r.fields);

test('plain rows, LF and CRLF line ends, a final line with or without a newline', () => {
  assert.deepEqual(fields('a,b,c\n1,2,3\n'), [['a', 'b', 'c'], ['1', '2', '3']]);
  assert.deepEqual(fields('a,b\r\n1,2\r\n'), [['a', 'b'], ['1', '2']]);
  assert.deepEqual(fields('a,b\n1,2'), [['a', 'b'], ['1', '2']]);
  assert.deepEqual(fields('a,,\n'), [['a', '', '']]);
});

test('quoted fields hold commas, line breaks and doubled quotes', () => {
  const text = 'id,question,explanation\r\n0,"x, y","1. 第一行\r\n2. 第二行"\r\n1,"他说""好""",""\r\n';
  assert.deepEqual(fields(text), [
    ['id', 'question', 'explanation'],
    ['0', 'x, y', '1. 第一行\r\n2. 第二行'],
    ['1', '他说"好"', ''],
  ]);
});

test('a byte-order mark is dropped, blank lines skipped, rows keep their first line number', () => {
  const rows = parseCsv('\ufeffa,b\n\n"multi\nline",2\n\n3,4\n', 'x.csv');
  assert.deepEqual(rows.map((r) => r.fields), [['a', 'b'], ['multi\nline', '2'], ['3', '4']]);
  assert.deepEqual(rows.map((r) => r.line), [1, 3, 6]);
});

test('quotes inside an unquoted field and text after a closing quote stay as written (as pandas reads them)', () => {
  assert.deepEqual(fields('5"6,"a"b\n'), [['5"6', 'ab']]);
});

test('an unclosed quote is an error naming the file and the line the field starts on', () => {
  assert.throws(() => parseCsv('a,b\n1,"open\nmore\n', 'data/x.csv'), (e: unknown) => e instanceof SftError && /data\/x\.csv:2: a quoted field is never closed/.test(e.message));
});

test('bytes that are not UTF-8 are an error naming the file and line, not text with replacement characters', () => {
  const bytes = Buffer.concat([Buffer.from('id,question\n0,"多行\n问题"\n1,ab'), Buffer.from([0xe4, 0xb8]), Buffer.from('c\n')]);
  assert.throws(() => decodeCsv(bytes, 'data/x.csv'), (e: unknown) => e instanceof SftError && /^data\/x\.csv:4: not valid UTF-8 \(byte 0xe4 at byte offset 34\); save the file as UTF-8/.test(e.message));
  assert.throws(() => decodeCsv(Buffer.from([0xff, 0x41]), 'y.csv'), (e: unknown) => e instanceof SftError && /^y\.csv:1: not valid UTF-8 \(byte 0xff at byte offset 0\)/.test(e.message));
  assert.equal(decodeCsv(Buffer.from('\ufeffa,b\n'), 'z.csv'), '\ufeffa,b\n');
});
