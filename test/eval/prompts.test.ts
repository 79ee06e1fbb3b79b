// Prompts against golden strings: all 52 C-Eval subjects (dev + val, the real files) against the
// independent Python rendering in test/fixtures/eval/ceval-golden.json, and hand-written strings for
// C-Eval, CMMLU and MMLU; shot dropping, BOS, letter token ids and chat-mode rendering.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { loadSubjects, type Question, type Subject } from '../../src/eval/datasets.js';
import { PROMPT_STYLES, buildPrompt, chatConversation, rawPrompt, type PromptOptions } from '../../src/eval/prompts.js';
import { getTemplate } from '../../src/data/templates.js';
import { compileChatTemplate } from '../../src/data/chat-template.js';
import type { Tok } from '../../src/tokenizer/types.js';
import { fakeTok, ch } from '../fixtures/data/fake-tok.js';

const CEVAL = join(packageRoot, '..', 'shared', 'ceval');
const FIXTURES = join(packageRoot, 'test', 'fixtures', 'eval');
const noCeval = existsSync(CEVAL) ? false : `C-Eval data not found at ${CEVAL}`;

test('C-Eval: every subject\'s 5-shot val prompts equal the golden Python rendering', { skip: noCeval }, () => {
  const golden = JSON.parse(readFileSync(join(FIXTURES, 'ceval-golden.json'), 'utf8')) as Record<string, { dev: number; val: number; firstPrompt: string; sha256: string }>;
  const subjects = loadSubjects({ benchmark: 'ceval', dir: CEVAL, split: 'val' });
  assert.deepEqual(subjects.map((s) => s.id), Object.keys(golden));
  assert.equal(subjects.length, 52);
  assert.equal(subjects.reduce((n, s) => n + s.questions.length, 0), 1346, 'C-Eval val has 1346 questions');
  const style = PROMPT_STYLES.ceval;
  for (const s of subjects) {
    const g = golden[s.id];
    assert.equal(s.shots.length, g.dev, `${s.id} dev`);
    assert.equal(s.questions.length, g.val, `${s.id} val`);
    const prompts = s.questions.map((q) => rawPrompt(style, s, s.shots.slice(0, 5), q));
    assert.equal(prompts[0], g.firstPrompt, `${s.id} first prompt`);
    assert.equal(createHash('sha256').update(prompts.join('\0'), 'utf8').digest('hex'), g.sha256, `${s.id}: some val prompt differs`);
  }
});

test('C-Eval: a prompt written out by hand (marxism, val question 0, zero- and one-shot)', { skip: noCeval }, () => {
  const [s] = loadSubjects({ benchmark: 'ceval', dir: CEVAL, split: 'val', only: ['marxism'] });
  const header = '以下是中国关于马克思主义基本原理考试的单项选择题，请选出其中的正确答案。\n\n';
  const question =
    '“坐地日行八万里，巡六遥看一千河”，这一著名诗句包含的哲理是____\n' +
    'A. 物质运动的客观性和时空的主观性的统一\nB. 物质运动的无限性和时空的有限性的统一\n' +
    'C. 时空的无限性和有限性的统一\nD. 运动的绝对性和静止的相对性的统一\n答案：';
  const shot =
    '“先天下之忧而忧，后天下之乐而乐”，这句名言所包含的哲理是____\n' +
    'A. 把个人价值融于社会价值之中\nB. 人的自由是相对的\nC. 人的发展具有历史阶段性\nD. 社会发展要以人为本\n答案：A\n\n';
  assert.equal(rawPrompt(PROMPT_STYLES.ceval, s, [], s.questions[0]), header + question);
  assert.equal(rawPrompt(PROMPT_STYLES.ceval, s, s.shots.slice(0, 1), s.questions[0]), header + shot + question);
  assert.equal(s.questions[0].answer, 'D');
  assert.deepEqual(s.categories, ['Social Science']);
});

test('C-Eval: the built-in subject table is the dataset\'s subject_mapping.json', { skip: noCeval }, async () => {
  const { CEVAL_SUBJECTS } = await import('../../src/eval/subjects.js');
  const mapping = JSON.parse(readFileSync(join(CEVAL, 'subject_mapping.json'), 'utf8'));
  assert.deepEqual(Object.keys(CEVAL_SUBJECTS), Object.keys(mapping));
  for (const [k, v] of Object.entries(mapping)) assert.deepEqual([...CEVAL_SUBJECTS[k]], v, k);
});

test('CMMLU: "题目：" items, "答案是：" cue, quoted fields with quotes, commas and a line break', () => {
  const [s] = loadSubjects({ benchmark: 'cmmlu', dir: join(FIXTURES, 'cmmlu'), split: 'test', only: ['arts'] });
  assert.deepEqual(s.categories, ['Humanities']);
  assert.equal(s.shots[2].question, '下列属于"文房四宝"的是');
  assert.equal(s.shots[2].options[1], '墨，纸');
  const expected =
    '以下是关于艺术学的单项选择题，请直接给出正确答案的选项。\n\n' +
    '题目：《蒙娜丽莎》的作者是\nA. 达·芬奇\nB. 米开朗基罗\nC. 拉斐尔\nD. 梵高\n答案是：A\n\n' +
    '题目：京剧的四大行当是\nA. 生旦净丑\nB. 生旦末丑\nC. 生净末丑\nD. 旦净末丑\n答案是：A\n\n' +
    '题目：多行\n题目\nA. 一\nB. 二\nC. 三\nD. 四\n答案是：';
  assert.equal(rawPrompt(PROMPT_STYLES.cmmlu, s, s.shots.slice(0, 2), s.questions[1]), expected);
  assert.deepEqual(s.questions.map((q) => [q.id, q.answer]), [['0', 'A'], ['1', 'C']]);
});

test('MMLU: headerless files, "about  global facts" (two spaces), "Answer: X" shots', () => {
  const [s] = loadSubjects({ benchmark: 'mmlu', dir: join(FIXTURES, 'mmlu'), split: 'test', only: ['global_facts'] });
  assert.deepEqual(s.categories, ['Other']);
  const expected =
    'The following are multiple choice questions (with answers) about  global facts.\n\n' +
    'Which is larger?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: D\n\n' +
    'As of 2019, what share, roughly?\nA. 31%\nB. 46%\nC. 61%\nD. 76%\nAnswer: B\n\n' +
    'Which one, if any?\nA. one, two\nB. three\nC. four\nD. none\nAnswer:';
  assert.equal(rawPrompt(PROMPT_STYLES.mmlu, s, s.shots.slice(0, 2), s.questions[1]), expected);
  assert.deepEqual(s.questions.map((q) => [q.id, q.answer]), [['0', 'B'], ['1', 'D']]);
  assert.equal(s.shots[2].question, 'He said "yes"');
  const [v] = loadSubjects({ benchmark: 'mmlu', dir: join(FIXTURES, 'mmlu'), split: 'val', only: ['global_facts'] });
  assert.equal(v.questions[0].question, 'Capital of France?');
});

// ---- shot dropping, BOS, letters: with the character-level fake tokenizer (1 char = 1 token) ----

const q = (id: string, question: string, answer: 'A' | 'B' | 'C' | 'D'): Question => ({ id, question, options: ['甲', '乙', '丙', '丁'], answer });
const subject: Subject = {
  id: 'demo',
  name: 'Demo',
  nameZh: '测试',
  categories: ['STEM'],
  shots: [q('0', '短题一', 'A'), q('1', '这是一道长得多的题目，长得多', 'B'), q('2', '短题二', 'C'), q('3', '短题三', 'D'), q('4', '短题四', 'A')],
  questions: [q('0', '问题', 'B')],
};
const opts = (o: Partial<PromptOptions> = {}): PromptOptions => ({ style: PROMPT_STYLES.ceval, tok: fakeTok(), bos: false, maxContext: 100000, ...o });
const ids = (text: string) => fakeTok().encode(text);

test('prompts longer than the context drop shots from the end (C-Eval, MMLU)', () => {
  const withShots = (k: number) => rawPrompt(PROMPT_STYLES.ceval, subject, subject.shots.slice(0, k), subject.questions[0]);
  const full = buildPrompt(opts(), subject, subject.shots, subject.questions[0]);
  assert.equal(full.shotsUsed, 5);
  assert.deepEqual(full.ids, ids(withShots(5)));
  const three = buildPrompt(opts({ maxContext: withShots(3).length }), subject, subject.shots, subject.questions[0]);
  assert.equal(three.shotsUsed, 3);
  assert.deepEqual(three.ids, ids(withShots(3)));
  assert.equal(buildPrompt(opts({ maxContext: withShots(3).length - 1 }), subject, subject.shots, subject.questions[0]).shotsUsed, 2);
});

test('CMMLU drops the longest shot first', () => {
  const style = PROMPT_STYLES.cmmlu;
  const all = rawPrompt(style, subject, subject.shots, subject.questions[0]);
  const p = buildPrompt(opts({ style, maxContext: all.length - 1 }), subject, subject.shots, subject.questions[0]);
  assert.equal(p.shotsUsed, 4);
  const kept = subject.shots.filter((s) => s.id !== '1');
  assert.deepEqual(p.ids, ids(rawPrompt(style, subject, kept, subject.questions[0])));
});

test('a prompt too long even without shots keeps its last tokens, the answer cue included', () => {
  const p = buildPrompt(opts({ maxContext: 10 }), subject, subject.shots, subject.questions[0]);
  assert.equal(p.shotsUsed, 0);
  assert.equal(p.truncated, true);
  assert.deepEqual(p.ids, ids('丙\nD. 丁\n答案：'));
  // MMLU with " " and "A" apart: the appended " " counts against the context too.
  const mmlu = buildPrompt(opts({ style: PROMPT_STYLES.mmlu, maxContext: 10 }), subject, subject.shots, subject.questions[0]);
  assert.deepEqual(mmlu.ids, ids('丁\nAnswer: '));
});

test('BOS goes first when asked for', () => {
  const tok = { ...fakeTok(), bosId: 7 };
  const p = buildPrompt(opts({ tok, bos: true }), subject, [], subject.questions[0]);
  assert.equal(p.ids[0], 7);
  assert.deepEqual(p.ids.slice(1), ids(rawPrompt(PROMPT_STYLES.ceval, subject, [], subject.questions[0])));
});

/** fakeTok plus single tokens for some two-character strings, as real BPEs merge " A" or "：A". */
function mergingTok(pairs: Record<string, number>): Tok {
  const base = fakeTok();
  return {
    ...base,
    encode(text: string): number[] {
      const out: number[] = [];
      for (let i = 0; i < text.length; i++) {
        const merged = pairs[text.slice(i, i + 2)];
        if (merged !== undefined) {
          out.push(merged);
          i++;
        } else out.push(...base.encode(text[i]));
      }
      return out;
    },
  };
}

test('letter ids: the token after the prompt that spells each letter as the shots write it', () => {
  const question = subject.questions[0];
  const mmluText = rawPrompt(PROMPT_STYLES.mmlu, subject, [], question);
  // " A" is one token: compared right after "Answer:".
  const spaced = mergingTok({ ' A': 901, ' B': 902, ' C': 903, ' D': 904 });
  const mmlu = buildPrompt(opts({ style: PROMPT_STYLES.mmlu, tok: spaced }), subject, [], question);
  assert.deepEqual(mmlu.letterIds, [901, 902, 903, 904]);
  assert.deepEqual(mmlu.ids, spaced.encode(mmluText));
  assert.equal(mmlu.letterMismatch, false);
  // " " and "A" apart: the shared " " joins the prompt and "A" is read after it.
  const split = buildPrompt(opts({ style: PROMPT_STYLES.mmlu }), subject, [], question);
  assert.deepEqual(split.ids, ids(mmluText + ' '));
  assert.deepEqual(split.letterIds, [ch('A'), ch('B'), ch('C'), ch('D')]);
  assert.equal(split.letterMismatch, false);
  // C-Eval: "A" right after "答案：".
  const ceval = buildPrompt(opts(), subject, [], question);
  assert.deepEqual(ceval.ids, ids(rawPrompt(PROMPT_STYLES.ceval, subject, [], question)));
  assert.deepEqual(ceval.letterIds, [ch('A'), ch('B'), ch('C'), ch('D')]);
  assert.equal(ceval.letterMismatch, false);
  // "：A" … "：D" each one token: "：" leaves the prompt and the merged tokens are compared.
  const merged = mergingTok({ '：A': 990, '：B': 991, '：C': 992, '：D': 993 });
  const m = buildPrompt(opts({ tok: merged }), subject, [], question);
  assert.deepEqual(m.ids, ids(rawPrompt(PROMPT_STYLES.ceval, subject, [], question)).slice(0, -1));
  assert.deepEqual(m.letterIds, [990, 991, 992, 993]);
  assert.equal(m.letterMismatch, false);
  // Only "：B" merges: no single position tells the four apart; the prompt says so.
  assert.equal(buildPrompt(opts({ tok: mergingTok({ '：B': 991 }) }), subject, [], question).letterMismatch, true);
});

test('chat mode: header as the system turn, shots as user/assistant turns (qwen); no system part: header opens the first turn (baichuan)', () => {
  const two = subject.shots.slice(0, 1);
  const qwen = getTemplate('qwen');
  const conv = chatConversation(PROMPT_STYLES.ceval, qwen, subject, two, subject.questions[0]);
  assert.equal(conv.system, '以下是中国关于测试考试的单项选择题，请选出其中的正确答案。');
  const p = buildPrompt(opts({ template: qwen }), subject, two, subject.questions[0]);
  assert.equal(
    fakeTok().decode(p.ids),
    '<|im_start|>system\n以下是中国关于测试考试的单项选择题，请选出其中的正确答案。<|im_end|>\n' +
      '<|im_start|>user\n短题一\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：<|im_end|>\n<|im_start|>assistant\n' +
      'A<|im_end|>\n' +
      '<|im_start|>user\n问题\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：<|im_end|>\n<|im_start|>assistant\n',
  );
  assert.deepEqual(p.letterIds, [ch('A'), ch('B'), ch('C'), ch('D')]);
  const baichuan = buildPrompt(opts({ template: getTemplate('baichuan') }), subject, [], subject.questions[0]);
  assert.equal(fakeTok().decode(baichuan.ids), '<reserved_102>以下是中国关于测试考试的单项选择题，请选出其中的正确答案。\n\n问题\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：<reserved_103>');
});

test("chat mode with the model's own chat_template: the same prompt and letter ids as the built-in it spells", () => {
  const two = subject.shots.slice(0, 1);
  const source =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}" +
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  const own = compileChatTemplate(source, fakeTok());
  const p = buildPrompt(opts({ template: own }), subject, two, subject.questions[0]);
  const q = buildPrompt(opts({ template: getTemplate('qwen') }), subject, two, subject.questions[0]);
  assert.deepEqual(p.ids, q.ids);
  assert.deepEqual(p.letterIds, [ch('A'), ch('B'), ch('C'), ch('D')]);
});
