import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toConversation } from '../../src/data/formats.js';
import { getTemplate, type ChatTemplate } from '../../src/data/templates.js';
import { encodeConversation, encodePrompt, renderMarkedSample, type EncodedSample } from '../../src/data/encode.js';
import { SftError } from '../../src/errors.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { fakeTok, spans, EOS, R102, R103, IM_START, IM_END, ch } from '../fixtures/data/fake-tok.js';

const tok = fakeTok();
const X = -100;
const T = true;
const F = false;

const LLAMA2_SYS =
  'You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe. ' +
  'Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. ' +
  'Please ensure that your responses are socially unbiased and positive in nature.\n\n' +
  'If a question does not make any sense, or is not factually coherent, explain why instead of answering something not correct. ' +
  "If you don't know the answer to a question, please don't share false information.";

// One record per format. Firefly carries a system; ChatML and alpaca do not (template default applies).
const RECORDS = {
  firefly: { system: 'S', conversation: [{ human: 'hi', assistant: 'yo' }, { human: 'q', assistant: 'a' }] },
  chatml: { messages: [{ role: 'user', content: 'u' }, { role: 'assistant', content: 'v' }] },
  alpaca: { instruction: 'do', input: 'x', output: 'ok' },
};

// Hand-written spans, [text, trained?], for each template x format.
const EXPECTED: Record<string, Record<keyof typeof RECORDS, [string, boolean][]>> = {
  default: {
    firefly: [['System: S\n\n', F], ['User: hi\nAssistant: ', F], ['yo </s>', T], ['User: q\nAssistant: ', F], ['a </s>', T]],
    chatml: [['User: u\nAssistant: ', F], ['v </s>', T]],
    alpaca: [['User: do\nx\nAssistant: ', F], ['ok </s>', T]],
  },
  baichuan: {
    firefly: [['<reserved_102>hi<reserved_103>', F], ['yo</s>', T], ['<reserved_102>q<reserved_103>', F], ['a</s>', T]],
    chatml: [['<reserved_102>u<reserved_103>', F], ['v</s>', T]],
    alpaca: [['<reserved_102>do\nx<reserved_103>', F], ['ok</s>', T]],
  },
  baichuan2: {
    firefly: [['<reserved_106>hi<reserved_107>', F], ['yo</s>', T], ['<reserved_106>q<reserved_107>', F], ['a</s>', T]],
    chatml: [['<reserved_106>u<reserved_107>', F], ['v</s>', T]],
    alpaca: [['<reserved_106>do\nx<reserved_107>', F], ['ok</s>', T]],
  },
  qwen: {
    firefly: [
      ['<|im_start|>system\nS<|im_end|>\n', F],
      ['<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n', F],
      ['yo<|im_end|>\n', T],
      ['<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n', F],
      ['a<|im_end|>\n', T],
    ],
    chatml: [
      ['<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n', F],
      ['<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n', F],
      ['v<|im_end|>\n', T],
    ],
    alpaca: [
      ['<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n', F],
      ['<|im_start|>user\ndo\nx<|im_end|>\n<|im_start|>assistant\n', F],
      ['ok<|im_end|>\n', T],
    ],
  },
  llama2: {
    firefly: [['<<SYS>>\nS\n<</SYS>>\n\n', F], ['[INST]hi[/INST]', F], ['yo </s>', T], ['[INST]q[/INST]', F], ['a </s>', T]],
    chatml: [[`<<SYS>>\n${LLAMA2_SYS}\n<</SYS>>\n\n`, F], ['[INST]u[/INST]', F], ['v </s>', T]],
    alpaca: [[`<<SYS>>\n${LLAMA2_SYS}\n<</SYS>>\n\n`, F], ['[INST]do\nx[/INST]', F], ['ok </s>', T]],
  },
};

function ok(r: ReturnType<typeof encodeConversation>): EncodedSample {
  assert.ok(!r.noTarget, 'expected a sample with a target');
  return r as EncodedSample;
}

for (const [name, byFormat] of Object.entries(EXPECTED)) {
  for (const [format, parts] of Object.entries(byFormat)) {
    test(`label mask: ${format} record x ${name} template`, () => {
      const conv = toConversation(RECORDS[format as keyof typeof RECORDS], 'f:1');
      const got = ok(encodeConversation(conv, getTemplate(name), tok, 4096));
      assert.deepEqual(got, { ...spans(parts), truncated: false });
    });
  }
}

const hiYo = toConversation({ conversation: [{ human: 'hi', assistant: 'yo' }] }, 'f:1');

test('baichuan ids and labels written out as numbers', () => {
  const got = ok(encodeConversation(hiYo, getTemplate('baichuan'), tok, 100));
  assert.deepEqual(got.inputIds, [R102, 204, 205, R103, 221, 211, EOS]);
  assert.deepEqual(got.labels, [X, X, X, X, 221, 211, EOS]);
  assert.equal(ch('h'), 204);
});

test('qwen: <|im_end|> is one id and is trained, with the newline after it', () => {
  const conv = toConversation({ system: '', conversation: [{ human: 'h', assistant: 'a' }] }, 'f:1');
  const got = ok(encodeConversation(conv, getTemplate('qwen'), tok, 100));
  const nl = ch('\n');
  // "" system still writes a system block, as Firefly does when the record has a system key.
  const sys = [IM_START, ...[...'system'].map(ch), nl, IM_END, nl];
  const user = [IM_START, ...[...'user'].map(ch), nl, ch('h'), IM_END, nl, IM_START, ...[...'assistant'].map(ch), nl];
  const answer = [ch('a'), IM_END, nl];
  assert.deepEqual(got.inputIds, [...sys, ...user, ...answer]);
  assert.deepEqual(got.labels, [...sys.map(() => X), ...user.map(() => X), ...answer]);
});

test('right truncation keeps the first maxSeqLength tokens and reports it', () => {
  const t = getTemplate('baichuan');
  assert.deepEqual(encodeConversation(hiYo, t, tok, 7), { inputIds: [R102, 204, 205, R103, 221, 211, EOS], labels: [X, X, X, X, 221, 211, EOS], truncated: false });
  assert.deepEqual(encodeConversation(hiYo, t, tok, 5), { inputIds: [R102, 204, 205, R103, 221], labels: [X, X, X, X, 221], truncated: true });
});

test('truncation that leaves no target returns the no-target marker', () => {
  const t = getTemplate('baichuan');
  assert.deepEqual(encodeConversation(hiYo, t, tok, 4), { noTarget: true, fullLength: 7 });
  assert.deepEqual(encodeConversation(hiYo, t, tok, 2), { noTarget: true, fullLength: 7 });
});

test('a target only at position 0 trains nothing (shifted loss) and is no-target', () => {
  const bare: ChatTemplate = { name: 'bare', userFormat: '{content}', assistantFormat: '{content}', stopWords: [] };
  const conv = { turns: [{ role: 'user' as const, content: '' }, { role: 'assistant' as const, content: 'x' }] };
  assert.deepEqual(encodeConversation(conv, bare, tok, 10), { noTarget: true, fullLength: 1 });
});

test('default template needs the tokenizer EOS text', () => {
  const noEos = { ...tok, eosToken: undefined };
  assert.throws(() => encodeConversation(hiYo, getTemplate('default'), noEos, 100), SftError);
  const got = ok(encodeConversation(hiYo, getTemplate('default'), fakeTok('<|endoftext|>'), 100));
  assert.equal(tok.decode(got.inputIds), 'User: hi\nAssistant: yo <|endoftext|>');
});

test('encodePrompt: everything up to and including the assistant prefix', () => {
  const conv = { turns: [...hiYo.turns, { role: 'user' as const, content: 'q' }] };
  assert.deepEqual(
    encodePrompt(conv, getTemplate('qwen'), tok),
    tok.encode(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' +
        '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n' +
        '<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n',
    ),
  );
  assert.deepEqual(encodePrompt({ turns: [{ role: 'user', content: 'hi' }] }, getTemplate('baichuan'), tok), [R102, 204, 205, R103]);
  assert.throws(() => encodePrompt(hiYo, getTemplate('qwen'), tok));
});

test('renderMarkedSample marks trained spans', () => {
  const b = ok(encodeConversation(hiYo, getTemplate('baichuan'), tok, 100));
  assert.equal(renderMarkedSample(b.inputIds, b.labels, tok), '<reserved_102>hi<reserved_103>⟦yo</s>⟧');
  const conv = toConversation(RECORDS.firefly, 'f:1');
  const q = ok(encodeConversation(conv, getTemplate('qwen'), tok, 100));
  assert.equal(
    renderMarkedSample(Int32Array.from(q.inputIds), Int32Array.from(q.labels), tok),
    '<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n⟦yo<|im_end|>\n⟧' +
      '<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n⟦a<|im_end|>\n⟧',
  );
  assert.equal(renderMarkedSample([], [], tok), '');
});

test('parseSpecialTokens: special tokens the data writes as text become their ids (off by default)', () => {
  const conv = toConversation({ conversation: [{ human: 'a<|im_end|>', assistant: 'b</s>' }] }, 'f:1');
  const off = ok(encodeConversation(conv, getTemplate('qwen'), tok, 4096));
  const on = ok(encodeConversation(conv, getTemplate('qwen'), tok, 4096, { parseSpecialTokens: true }));
  assert.equal(off.inputIds.filter((id) => id === IM_END).length, 3);
  assert.equal(on.inputIds.filter((id) => id === IM_END).length, 4);
  assert.ok(on.inputIds.includes(EOS) && !off.inputIds.includes(EOS));
  assert.deepEqual(encodePrompt({ turns: [{ role: 'user', content: '<|im_end|>' }] }, getTemplate('qwen'), tok, { parseSpecialTokens: true }).filter((id) => id === IM_END).length, 3);
});

test('a million-character message encodes (no call-stack overflow) and truncates as usual', () => {
  const huge = '你'.repeat(1_000_000);
  const ids = encodePrompt({ system: huge, turns: [{ role: 'user', content: huge }] }, getTemplate('qwen'), tok);
  assert.equal(ids.length, 2_000_000 + tok.encode('<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n').length);
  const enc = ok(encodeConversation({ turns: [{ role: 'user', content: huge }, { role: 'assistant', content: huge }] }, getTemplate('qwen'), tok, 1_500_000));
  assert.equal(enc.inputIds.length, 1_500_000);
  assert.ok(enc.truncated);
});

// Firefly before templates (component/dataset.py SFTDataset at 67dd449): input_ids = [bos] then each
// utterance's ids + [eos]; target_mask 0 for bos and the human utterances with their eos, 1 for the
// assistant utterances with their eos. The record's system is not used.
test('firefly_legacy: <s>input1</s>target1</s>input2</s>target2</s>, targets with their </s> trained', () => {
  const BOS = 8; // fake-tok's "<|endoftext|>" stands in for "<s>"
  const legacy = { ...fakeTok(), bosToken: '<|endoftext|>', bosId: BOS };
  const conv = toConversation(RECORDS.firefly, 'f:1');
  const got = ok(encodeConversation(conv, getTemplate('firefly_legacy'), legacy, 100));
  const t = (s: string) => [...s].map(ch);
  assert.deepEqual(got.inputIds, [BOS, ...t('hi'), EOS, ...t('yo'), EOS, ...t('q'), EOS, ...t('a'), EOS]);
  assert.deepEqual(got.labels, [X, X, X, X, ...t('yo'), EOS, X, X, ...t('a'), EOS]);
  // The prompt for an answer ends with the user's </s>, where training's targets start.
  assert.deepEqual(encodePrompt({ turns: conv.turns.slice(0, 1) }, getTemplate('firefly_legacy'), legacy), [BOS, ...t('hi'), EOS]);
  assert.throws(() => encodeConversation(conv, getTemplate('firefly_legacy'), tok, 100), (e: unknown) => e instanceof SftError && /BOS/.test(e.message));
});

// The PEFT prompt-tuning write-up (bloom-1b4-zh, alpaca data): instruction = tokenizer(("Human: " +
// instruction + "\n" + input).strip() + "\n\nAssistant: "), response = tokenizer(output + eos_token),
// labels = [-100] * len(instruction) + response. The expected text is built by that formula here.
test('human_assistant: the prompt-tuning write-up\'s alpaca format, loss on the output and EOS only', () => {
  const writeUp = (r: { instruction: string; input: string }) => `Human: ${r.instruction}\n${r.input}`.trim() + '\n\nAssistant: ';
  for (const rec of [{ instruction: '把这句话翻译成英文', input: '今天天气很好', output: 'The weather is nice today.' }, { instruction: '介绍一下长城', input: '', output: '长城是……' }]) {
    const got = ok(encodeConversation(toConversation(rec, 'f:1'), getTemplate('human_assistant'), tok, 4096));
    const want = spans([[writeUp(rec), F], [`${rec.output}</s>`, T]]);
    assert.deepEqual(got.inputIds, want.inputIds);
    assert.deepEqual(got.labels, want.labels);
    assert.deepEqual(encodePrompt({ turns: toConversation(rec, 'f:1').turns.slice(0, 1) }, getTemplate('human_assistant'), tok), tok.encode(writeUp(rec)));
  }
});

test('renderMarkedSample: a sample cut inside a character shows the whole text and marks the cut (no U+FFFD)', async () => {
  // A byte-level tokenizer that never saw Chinese: each of 你 and 好 is three byte tokens.
  const dir = mkdtempSync(join(tmpdir(), 'sft-render-'));
  try {
    initModel({ arch: 'qwen2', outDir: dir, hidden: 16, layers: 1, heads: 2, intermediate: 16, vocab: 300, seed: 1, maxPosition: 64, force: true, texts: ['hello world'] });
    const bpe = await loadTokenizer(dir);
    const ids = bpe.encode('ab你好');
    const hao = bpe.encode('好');
    assert.equal(hao.length, 3, 'premise: 好 is three tokens');
    const labels = ids.map((id, i) => (i < 2 ? -100 : id));
    assert.equal(renderMarkedSample(ids, labels, bpe), 'ab⟦你好⟧');
    // max_seq_length cut after the first byte of 好, then after its second.
    const cut = (n: number) => renderMarkedSample(ids.slice(0, n), labels.slice(0, n), bpe, { truncated: true });
    assert.equal(cut(ids.length), 'ab⟦你好⟧');
    assert.equal(cut(ids.length - 2), 'ab⟦你⟨cut inside a character: 1 token⟩⟧');
    assert.equal(cut(ids.length - 1), 'ab⟦你⟨cut inside a character: 2 tokens⟩⟧');
    // Cut inside the first character of a span: nothing whole is left in it.
    assert.equal(cut(3), 'ab⟦⟨cut inside a character: 1 token⟩⟧');
    // A U+FFFD the text really holds is shown as it is in a sample that was not truncated.
    const real = bpe.encode('a\uFFFD');
    assert.equal(real.length, 4, 'premise: U+FFFD is three byte tokens');
    assert.equal(renderMarkedSample(real, real.map(() => -100), bpe), 'a\uFFFD');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
