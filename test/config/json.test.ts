import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JsonSyntaxError, parseJsonObject } from '../../src/config/json.js';

function fails(text: string, line: number, col: number, message: RegExp): void {
  assert.throws(
    () => parseJsonObject(text),
    (e: unknown) => e instanceof JsonSyntaxError && e.pos.line === line && e.pos.col === col && message.test(e.message),
  );
}

test('parses what JSON.parse parses, with positions of keys and values', () => {
  const text = '{\n  "a": 1,\n  "b": [true, false, null, -0.5e-3, "x\\n\\u00e9\\"y"],\n\t"c": {"d": {}}\n}\n';
  const { value, where } = parseJsonObject(text);
  assert.deepEqual(value, JSON.parse(text));
  assert.deepEqual(where.get('a'), { key: { line: 2, col: 3 }, value: { line: 2, col: 8 } });
  assert.deepEqual(where.get('b'), { key: { line: 3, col: 3 }, value: { line: 3, col: 8 } });
  assert.deepEqual(where.get('c'), { key: { line: 4, col: 2 }, value: { line: 4, col: 7 } });
  assert.equal(where.has('d'), false); // only top-level keys
});

test('a byte-order mark and an empty object are fine', () => {
  assert.deepEqual(parseJsonObject('\ufeff{}').value, {});
});

test('a key named __proto__ is an ordinary key', () => {
  const { value } = parseJsonObject('{"__proto__": 1}');
  assert.deepEqual(Object.keys(value), ['__proto__']);
  assert.equal(Object.getPrototypeOf(value), Object.prototype);
});

test('syntax errors carry line and column', () => {
  fails('{"a": 1,}', 1, 9, /trailing comma before "}"/);
  fails('{"a": [1,]}', 1, 10, /trailing comma before "]"/);
  fails('{\n"a": 1\n"b": 2}', 3, 1, /expected "," or "}" after the value of "a"/);
  fails('{"a": 1, "a": 2}', 1, 10, /duplicate key "a"/);
  fails('{"a": "x}', 1, 7, /unterminated string/);
  fails('{"a": "x\ny"}', 1, 7, /unterminated string/);
  fails('{"a": 01}', 1, 7, /invalid number/);
  fails('{"a": 1.}', 1, 7, /invalid number/);
  fails('{"a": tru}', 1, 7, /expected a value/);
  fails("{'a': 1}", 1, 2, /expected a key in double quotes/);
  fails('{"a": \'x\'}', 1, 7, /double quotes/);
  fails('{"a": None}', 1, 7, /None is not JSON; write null/);
  fails('{"a": NaN}', 1, 7, /NaN is not JSON/);
  fails('{\n  // note\n  "a": 1}', 2, 3, /comments are not allowed/);
  fails('{"a": 1} x', 1, 10, /unexpected text after/);
  fails('{"a": 1', 1, 8, /expected "," or "}".*end of the file/);
  fails('{"a" 1}', 1, 6, /expected ":" after key "a"/);
  fails('{"a": "\\x"}', 1, 8, /invalid escape/);
  fails('   ', 1, 4, /the file is empty/);
});
