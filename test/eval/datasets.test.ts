// Reading the datasets' folders: what a wrong folder, subject or row tells the user.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { loadSubjects } from '../../src/eval/datasets.js';
import { SftError } from '../../src/errors.js';
import { runCli } from '../helpers/cli.js';

const FIXTURES = join(packageRoot, 'test', 'fixtures', 'eval');

function fails(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof SftError && pattern.test(e.message), `expected an SftError matching ${pattern}`);
}

/** A C-Eval-shaped folder with one subject whose val file is `val`. */
function cevalDir(val: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'sft-ceval-'));
  mkdirSync(join(dir, 'dev'));
  mkdirSync(join(dir, 'val'));
  writeFileSync(join(dir, 'dev', 'law_dev.csv'), 'id,question,A,B,C,D,answer,explanation\n0,q,a,b,c,d,A,"why, because"\n');
  writeFileSync(join(dir, 'val', 'law_val.csv'), val);
  return dir;
}

test('a misspelt subject gets a suggestion', () => {
  fails(() => loadSubjects({ benchmark: 'mmlu', dir: join(FIXTURES, 'mmlu'), split: 'test', only: ['global_fact'] }), /"global_fact" is not one of the MMLU subjects — did you mean "global_facts"\?/);
});

test('a missing folder, split or file is named', () => {
  fails(() => loadSubjects({ benchmark: 'ceval', dir: '/nonexistent/ceval', split: 'val' }), /--ceval \/nonexistent\/ceval: no such folder/);
  fails(() => loadSubjects({ benchmark: 'cmmlu', dir: join(FIXTURES, 'cmmlu'), split: 'val' }), /--split val: CMMLU splits to score are test/);
  // Without --subjects every subject is read: the fixture folder lacks all but one.
  fails(() => loadSubjects({ benchmark: 'mmlu', dir: join(FIXTURES, 'mmlu'), split: 'test' }), /abstract_algebra_dev\.csv not found/);
});

test('an answer that is not A-D and a row with a field too many point at their line', () => {
  fails(() => loadSubjects({ benchmark: 'ceval', dir: cevalDir('id,question,A,B,C,D,answer\n0,q,a,b,c,d,E\n'), split: 'val', only: ['law'] }), /law_val\.csv:2: answer "E" is not one of A, B, C, D/);
  fails(() => loadSubjects({ benchmark: 'ceval', dir: cevalDir('id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n1,q,a,b,"c",d,e,B\n'), split: 'val', only: ['law'] }), /law_val\.csv:3: 8 fields where the header has 7/);
});

test('C-Eval test split: no answer column, questions without answers', () => {
  const dir = cevalDir('id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n');
  mkdirSync(join(dir, 'test'));
  writeFileSync(join(dir, 'test', 'law_test.csv'), 'id,question,A,B,C,D\n7,问,a,b,c,d\n');
  const [s] = loadSubjects({ benchmark: 'ceval', dir, split: 'test', only: ['law'] });
  assert.deepEqual(s.questions, [{ id: '7', question: '问', options: ['a', 'b', 'c', 'd'] }]);
  assert.equal(s.shots[0].answer, 'A');
  assert.equal(s.nameZh, '法学');
});

test('sft eval checks the data and options before loading the model', () => {
  const r = runCli(['eval', '--mmlu', join(FIXTURES, 'mmlu'), '--subjects', 'global_fact', '--model', '/nonexistent/model']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /did you mean "global_facts"\?/);
  const shots = runCli(['eval', '--mmlu', join(FIXTURES, 'mmlu'), '--subjects', 'global_facts', '--shots', '6', '--model', '/nonexistent/model']);
  assert.match(shots.stderr, /--shots 6: subject global_facts has 5 dev examples/);
  const two = runCli(['eval', '--ceval', 'a', '--cmmlu', 'b', '--model', 'm']);
  assert.match(two.stderr, /name one dataset folder: --ceval DIR, --cmmlu DIR or --mmlu DIR \(got --ceval and --cmmlu\)/);
});

/** loadSubjects' SftError, which must name a file under `dir` (or --subjects) first and stay readable. */
function refusal(fn: () => unknown, starts: string): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof SftError, `expected an SftError, got ${(e as Error)?.constructor?.name}: ${(e as Error)?.message?.slice(0, 200)}`);
    assert.ok(e.message.startsWith(starts), `starts with ${starts}: ${e.message.slice(0, 200)}`);
    assert.ok(e.message.length < 600, `a ${e.message.length}-character message`);
    return e.message.slice(starts.length);
  }
  assert.fail('no error');
}

test('a subject_mapping.json that is not an object of subjects is an SftError, not a TypeError', () => {
  const dir = cevalDir('id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n');
  const mapping = join(dir, 'subject_mapping.json');
  for (const text of ['null', '5', '[["Law", "法学", "Humanities"]]', '"law"']) {
    writeFileSync(mapping, text);
    assert.match(refusal(() => loadSubjects({ benchmark: 'ceval', dir, split: 'val' }), mapping), /^: expected an object \{subject: \[English name, Chinese name, category\]\}/);
  }
  writeFileSync(mapping, '{}');
  assert.match(refusal(() => loadSubjects({ benchmark: 'ceval', dir, split: 'val', only: ['law'] }), mapping), /^: lists no subjects/);
  writeFileSync(mapping, '{"law": ["Law", "法学", "Humanities"],\n "law": ["Art", "艺术", "Humanities"]}');
  assert.match(refusal(() => loadSubjects({ benchmark: 'ceval', dir, split: 'val' }), mapping), /^:2:2: not valid JSON: duplicate key "law"/);
});

test('a CSV that is not UTF-8, or a folder where a CSV should be: SftErrors naming the file', () => {
  const dir = cevalDir('id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n');
  const val = join(dir, 'val', 'law_val.csv');
  writeFileSync(val, Buffer.concat([Buffer.from('id,question,A,B,C,D,answer\n0,q'), Buffer.from([0xff]), Buffer.from(',a,b,c,d,A\n')]));
  assert.match(refusal(() => loadSubjects({ benchmark: 'ceval', dir, split: 'val', only: ['law'] }), val), /^:2: not valid UTF-8 \(byte 0xff at byte offset 30\)/);
  rmSync(val);
  mkdirSync(val);
  assert.match(refusal(() => loadSubjects({ benchmark: 'ceval', dir, split: 'val', only: ['law'] }), val), /^: is a folder, not a CSV file/);
});

test('a huge header field is cut in the message', () => {
  const dir = cevalDir(`${'x'.repeat(100_000)},question,A,B,C,D,answer\n0,q,a,b,c,d,A\n`);
  assert.match(refusal(() => loadSubjects({ benchmark: 'ceval', dir, split: 'val', only: ['law'] }), join(dir, 'val', 'law_val.csv')), /^:1: no "id" column in the header \(xxxx.*\.\.\.\)/);
});
