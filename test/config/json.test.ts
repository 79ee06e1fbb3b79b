import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonSyntaxError, parseJsonObject } from '../../src/config/json.js';
import { loadConfig } from '../../src/config/loader.js';
import { SftError } from '../../src/errors.js';

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
  fails('{"a": NaN}', 1, 7, /NaN is not a finite number/);
  fails('{\n  // note\n  "a": 1}', 2, 3, /comments are not allowed/);
  fails('{"a": 1} x', 1, 10, /unexpected text after/);
  fails('{"a": 1', 1, 8, /expected "," or "}".*end of the file/);
  fails('{"a" 1}', 1, 6, /expected ":" after key "a"/);
  fails('{"a": "\\x"}', 1, 8, /invalid escape/);
  fails('   ', 1, 4, /the file is empty/);
});

test('Infinity, -Infinity, NaN and numbers that overflow to Infinity are refused as typed, with the key and the position', () => {
  const refuses = (text: string, line: number, col: number, message: RegExp) =>
    assert.throws(() => parseJsonObject(text), (e: unknown) => e instanceof JsonSyntaxError && e.pos.line === line && e.pos.col === col && message.test(e.message), message.source);
  refuses('{\n  "output_dir": "o",\n  "learning_rate": 1e400\n}', 3, 20, /^"learning_rate": 1e400 is not a finite number/);
  refuses('{"learning_rate": -1e400}', 1, 19, /^"learning_rate": -1e400 is not a finite number/);
  refuses('{"learning_rate": Infinity}', 1, 19, /^"learning_rate": Infinity is not a finite number/);
  refuses('{"learning_rate": -Infinity}', 1, 19, /^"learning_rate": -Infinity is not a finite number/);
  refuses('{"learning_rate": NaN}', 1, 19, /^"learning_rate": NaN is not a finite number/);
  // Inside a list or a nested object, the nearest key names the value.
  refuses('{"betas": [0.9, 1E999]}', 1, 17, /^"betas": 1E999 is not a finite number/);
  refuses('{"a": {"b": 2e308}}', 1, 13, /^"b": 2e308 is not a finite number/);
  // Underflow is not an error: 1e-400 is a finite number, read as 0 as JSON.parse reads it.
  assert.equal(parseJsonObject('{"a": 1e-400}').value.a, 0);
  assert.equal(parseJsonObject('{"a": 1.7976931348623157e308}').value.a, Number.MAX_VALUE);
});

test('a config file with such a number: FILE:LINE:COL, the key and what was typed', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sft-json-'));
  try {
    const file = join(dir, 'lr.json');
    for (const typed of ['1e400', '-1e400', 'Infinity', '-Infinity', 'NaN']) {
      writeFileSync(file, `{\n  "output_dir": "o",\n  "learning_rate": ${typed}\n}\n`);
      assert.throws(() => loadConfig(file), (e: unknown) => {
        assert.ok(e instanceof SftError);
        assert.equal(e.message.split('(')[0].trim(), `${file}:3:20: "learning_rate": ${typed} is not a finite number`);
        assert.doesNotMatch(e.message, /null/);
        return true;
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('positions stay cheap: 50,000 top-level keys parse in well under a second each', () => {
  const text = '{\n' + Array.from({ length: 50_000 }, (_, i) => `  "k${i}": ${i}`).join(',\n') + '\n}';
  const t0 = performance.now();
  const { where } = parseJsonObject(text);
  const ms = performance.now() - t0;
  assert.deepEqual(where.get('k49999'), { key: { line: 50_001, col: 3 }, value: { line: 50_001, col: 13 } });
  assert.ok(ms < 3000, `${ms.toFixed(0)} ms`);
});
