// The byte-level BPE trainer: hand-worked merges, agreement with a naive reference trainer, and exact
// Chinese/English round trips through @huggingface/tokenizers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tokenizer } from '@huggingface/tokenizers';
import { BYTE_TO_CHAR, trainByteLevelBpe } from '../../src/tokenizer/bpe-train.js';

const SPECIALS = ['<unk>', '<s>', '</s>', '<|im_start|>', '<|im_end|>'];

test('GPT-2 byte table: printable bytes map to themselves, the rest from U+0100 on', () => {
  assert.equal(BYTE_TO_CHAR[0x61], 'a');
  assert.equal(BYTE_TO_CHAR[0x21], '!');
  assert.equal(BYTE_TO_CHAR[0x00], '\u0100');
  assert.equal(BYTE_TO_CHAR[0x0a], '\u010a'); // "Ċ"
  assert.equal(BYTE_TO_CHAR[0x20], '\u0120'); // "Ġ"
  assert.equal(BYTE_TO_CHAR[0x7f], '\u0121');
  assert.equal(BYTE_TO_CHAR[0xad], '\u0143'); // "Ń"
  assert.equal(BYTE_TO_CHAR[0xe4], 'ä');
  assert.equal(new Set(BYTE_TO_CHAR).size, 256);
});

test('hand-worked merges', () => {
  // "aaab": pairs aa×2, ab×1 -> merge "a a"; then (aa,a)×1 and (a,b)×1 are below min frequency 2.
  const one = trainByteLevelBpe(['aaab'], { vocabSize: 1000, specialTokens: [] });
  assert.deepEqual(one.model.merges, ['a a']);
  assert.equal(one.model.vocab['aa'], 256);
  assert.equal(Object.keys(one.model.vocab).length, 257);
  // Words "ab", " ab" ×2 (-> "Ġab"), "abc": (a,b)×4 first, then (Ġ,ab)×2; (ab,c)×1 stays.
  const two = trainByteLevelBpe(['ab ab ab', 'abc'], { vocabSize: 1000, specialTokens: ['<s>'] });
  assert.deepEqual(two.model.merges, ['a b', 'Ġ ab']);
  assert.equal(two.model.vocab['<s>'], 0);
  assert.equal(two.model.vocab['a'], 1 + 0x61);
  assert.equal(two.model.vocab['ab'], 257);
  assert.equal(two.model.vocab['Ġab'], 258);
  // The target size caps the merges.
  assert.deepEqual(trainByteLevelBpe(['ab ab ab', 'abc'], { vocabSize: 258, specialTokens: ['<s>'] }).model.merges, ['a b']);
  // Special tokens written in the text are cut out before counting: "<s>" gives no "<s" merges.
  const three = trainByteLevelBpe(['<s>xy<s>xy<s>'], { vocabSize: 1000, specialTokens: ['<s>'] });
  assert.deepEqual(three.model.merges, ['x y']);
});

/** Straightforward BPE: recount every pair after each merge; most frequent first, ties by (left id, right id). */
function naiveMerges(texts: string[], specials: string[], vocabSize: number): string[] {
  const table: string[] = [];
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  for (let b = 0, n = 0; b < 256; b++) table.push(printable(b) ? String.fromCharCode(b) : String.fromCharCode(256 + n++));
  const vocab = [...specials, ...table];
  const ids = new Map(vocab.map((t, i) => [t, i]));
  const re = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
  let words: number[][] = [];
  for (const t of texts) for (const m of t.match(re) ?? []) words.push([...new TextEncoder().encode(m)].map((b) => ids.get(table[b])!));
  const merges: string[] = [];
  while (vocab.length < vocabSize) {
    const counts = new Map<string, number>();
    for (const w of words) for (let i = 0; i + 1 < w.length; i++) counts.set(`${w[i]},${w[i + 1]}`, (counts.get(`${w[i]},${w[i + 1]}`) ?? 0) + 1);
    let best: [number, number] | undefined;
    let bestCount = 1;
    for (const [k, c] of counts) {
      const [a, b] = k.split(',').map(Number);
      if (c > bestCount || (c === bestCount && best && (a < best[0] || (a === best[0] && b < best[1])))) {
        best = [a, b];
        bestCount = c;
      }
    }
    if (!best) break;
    const [a, b] = best;
    const id = vocab.length;
    vocab.push(vocab[a] + vocab[b]);
    merges.push(`${vocab[a]} ${vocab[b]}`);
    words = words.map((w) => {
      const out: number[] = [];
      for (let i = 0; i < w.length; i++) {
        if (w[i] === a && w[i + 1] === b) { out.push(id); i++; } else out.push(w[i]);
      }
      return out;
    });
  }
  return merges;
}

const CORPUS = [
  '今天天气很好，我们去公园散步吧。', 'The weather is nice today, so let us take a walk in the park.',
  '中国的首都是北京。北京是一座历史悠久的城市。', 'The capital of China is Beijing. Beijing is an old city.',
  'aaaa bbbb aaaa abab baba', '1234 12 34 123 4444', "I'm sure you'll see it's fine, isn't it?",
  '  leading spaces and\ttabs\nand new lines\n\n', '春天来了，花儿开了，小鸟在树上唱歌。春天真美！',
];

test('agrees merge for merge with a naive reference trainer', () => {
  const texts = [...CORPUS, ...CORPUS, ...CORPUS.map((t) => t.toUpperCase())];
  const got = trainByteLevelBpe(texts, { vocabSize: 700, specialTokens: SPECIALS }).model.merges;
  const want = naiveMerges(texts, SPECIALS, 700);
  assert.ok(want.length > 100, `reference made ${want.length} merges`);
  assert.deepEqual(got, want);
});

test('round-trips Chinese, English and odd text exactly through @huggingface/tokenizers', () => {
  const json = trainByteLevelBpe([...CORPUS, ...CORPUS], { vocabSize: 600, specialTokens: SPECIALS });
  const tk = new Tokenizer(json, {});
  const samples = [
    '你好，世界！今天天气很好。', 'Hello, world! The capital of China is Beijing.',
    'mixed 中英文 text: 北京 Beijing 123 4.5%', '  two leading spaces, trailing  ', 'tabs\tand\nnewlines\r\n',
    'emoji 🙂👍 and rare 㐀 chars ©®', 'ÀÉÎÕÜ ñ ß', '<|im_start|>user\n你好<|im_end|>\n', "don't won't y'all",
  ];
  for (const s of samples) {
    const ids = tk.encode(s, { add_special_tokens: false }).ids;
    assert.equal(tk.decode(ids, { clean_up_tokenization_spaces: false }), s, JSON.stringify(s));
    assert.ok(ids.every((id: number) => id >= 0 && id < Object.keys(json.model.vocab).length));
  }
  // Special tokens are single ids and never pieces of merges.
  SPECIALS.forEach((s, i) => assert.deepEqual(tk.encode(s, { add_special_tokens: false }).ids, [i]));
  // Trained merges shorten text: a phrase the corpus repeats takes fewer tokens than its 6 characters (18 bytes).
  assert.ok(tk.encode('今天天气很好', { add_special_tokens: false }).ids.length < 6);
});

test('a few seconds for a realistic corpus', () => {
  const texts: string[] = [];
  for (let i = 0; i < 400; i++) texts.push(...CORPUS.map((t) => `${t} ${i} ${t.split('').reverse().join('')}`));
  const t0 = Date.now();
  const json = trainByteLevelBpe(texts, { vocabSize: 2048, specialTokens: SPECIALS });
  const ms = Date.now() - t0;
  assert.ok(ms < 10_000, `took ${ms} ms`);
  assert.ok(Object.keys(json.model.vocab).length <= 2048);
});
