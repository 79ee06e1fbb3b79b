// The sentencepiece tokenizer.model reader: a hand-built ModelProto (always runs) with hand-worked
// merges, ids and normalization, then the real Baichuan-7B and Llama-2 models from ../shared against
// ids recorded with sentencepiece and transformers 5.18 (scripts/reference/sentencepiece_ids.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../../src/native/binding.js';
import { SftError } from '../../src/errors.js';
import {
  CharsMap,
  PieceType,
  bpeMerges,
  flavourFor,
  normalizeForSentencePiece,
  parseModelProto,
  sentencePieceTokenizer,
  tokenizerJson,
} from '../../src/tokenizer/sentencepiece.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';

// --- a protobuf writer for hand-built models -------------------------------------------------------
const varint = (n: number): number[] => {
  let v = BigInt.asUintN(64, BigInt(n));
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
};
const tag = (field: number, wire: number) => varint(field * 8 + wire);
const bytesField = (field: number, b: number[]) => [...tag(field, 2), ...varint(b.length), ...b];
const strField = (field: number, s: string) => bytesField(field, [...Buffer.from(s, 'utf8')]);
const intField = (field: number, v: number) => [...tag(field, 0), ...varint(v)];
const floatField = (field: number, v: number) => {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v);
  return [...tag(field, 5), ...b];
};

const { NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE } = PieceType;
const TINY_PIECES: [string, number, number][] = [
  ['<unk>', 0, UNKNOWN], // 0
  ['<s>', 0, CONTROL], // 1
  ['</s>', 0, CONTROL], // 2
  ['<0x0A>', 0, BYTE], // 3
  ['<sep>', 0, USER_DEFINED], // 4
  ['ab', -1, NORMAL], // 5
  ['▁ab', -2, NORMAL], // 6
  ['bc', -1.5, NORMAL], // 7  scores out of id order on purpose
  ['abc', -4, NORMAL], // 8
  ['▁a', -0.5, NORMAL], // 9
  ['▁', -6, NORMAL], // 10
  ['a', -7, NORMAL], // 11
  ['b', -8, NORMAL], // 12
  ['c', -9, NORMAL], // 13
  ['<A>', 0, USER_DEFINED], // 14
];

/** A darts-clone double array with two rules, worked out by hand: "A" -> "a", "AB" -> "x".
 *  Root unit 0 has offset 1, so byte c goes to unit 1^c; a matching unit (label | has_leaf bit 8 |
 *  offset 1 << 10) moves on to unit ^ 1, where a leaf unit (bit 31) holds the replacement's offset. */
function tinyCharsMap(): number[] {
  const units = new Uint32Array(66);
  units[0] = 1 << 10;
  units[1 ^ 0x41] = (0x41 | 0x100 | (1 << 10)) >>> 0; // "A" at unit 64
  units[65] = 0x80000000; // value 0: "a"
  units[65 ^ 0x42] = (0x42 | 0x100 | (1 << 10)) >>> 0; // "AB" at unit 3
  units[2] = (0x80000000 | 2) >>> 0; // value 2: "x"
  const trie = Buffer.from(units.buffer);
  const sizeLE = Buffer.alloc(4);
  sizeLE.writeUInt32LE(trie.length);
  return [...sizeLE, ...trie, ...Buffer.from('a\0x\0', 'latin1')];
}

function tinyModelBytes(opts: { modelType?: number; removeExtraWhitespaces?: boolean } = {}): Uint8Array {
  const out: number[] = [];
  for (const [piece, score, type] of TINY_PIECES) {
    out.push(...bytesField(1, [...strField(1, piece), ...floatField(2, score), ...(type !== NORMAL ? intField(3, type) : [])]));
  }
  const trainer = [
    ...strField(2, 'tiny'), // model_prefix: skipped
    ...intField(3, opts.modelType ?? 2),
    ...intField(4, TINY_PIECES.length),
    ...floatField(10, 0.9995), // character_coverage: skipped
    ...intField(25, 1),
    ...intField(35, 1),
    ...intField(40, 0),
    ...intField(41, 1),
    ...intField(42, 2),
    ...intField(43, -1), // a negative int32: ten varint bytes
  ];
  out.push(...bytesField(2, trainer));
  const normalizer = [...strField(1, 'tiny'), ...bytesField(2, tinyCharsMap()), ...intField(4, opts.removeExtraWhitespaces ? 1 : 0)];
  out.push(...bytesField(3, normalizer));
  out.push(...bytesField(4, [...strField(1, 'self test data: skipped')]));
  return Uint8Array.from(out);
}

test('hand-built ModelProto: pieces, types, scores and specs parse', () => {
  const m = parseModelProto(tinyModelBytes());
  assert.deepEqual(
    m.pieces.map((p) => [p.piece, p.score, p.type]),
    TINY_PIECES,
  );
  assert.deepEqual(m.trainer, {
    modelType: 2,
    vocabSize: 15,
    splitDigits: true,
    byteFallback: true,
    treatWhitespaceAsSuffix: false,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
  });
  assert.equal(m.normalizer.name, 'tiny');
  assert.equal(m.normalizer.addDummyPrefix, true); // unset: the proto default
  assert.equal(m.normalizer.removeExtraWhitespaces, false);
  assert.equal(m.normalizer.escapeWhitespaces, true);
  assert.equal(m.normalizer.precompiledCharsmap.length, 4 + 66 * 4 + 4);
});

test('merges: every two-piece split of a normal or user-defined piece, highest piece score first', () => {
  const m = parseModelProto(tinyModelBytes());
  assert.deepEqual(bpeMerges(m), [
    ['▁', 'a'], // ▁a -0.5
    ['a', 'b'], // ab -1
    ['b', 'c'], // bc -1.5
    ['▁', 'ab'], // ▁ab -2, split after one character first
    ['▁a', 'b'],
    ['a', 'bc'], // abc -4
    ['ab', 'c'],
  ]);
});

test('tokenizer.json: added tokens, Metaspace scheme, decoder, BPE flags', () => {
  const m = parseModelProto(tinyModelBytes());
  const j = tokenizerJson(m, { kind: 'llama', legacy: false, addPrefixSpace: true }) as Record<string, any>;
  assert.deepEqual(
    j.added_tokens.map((t: any) => [t.id, t.content, t.special, t.normalized]),
    [
      [0, '<unk>', true, false],
      [1, '<s>', true, false],
      [2, '</s>', true, false],
      [4, '<sep>', false, false],
      [14, '<A>', false, false],
    ],
  );
  assert.deepEqual(j.pre_tokenizer, { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false });
  assert.equal(j.normalizer, null);
  assert.deepEqual(j.decoder.decoders.map((d: any) => d.type), ['Replace', 'ByteFallback', 'Fuse', 'Strip']);
  assert.equal(j.model.type, 'BPE');
  assert.equal(j.model.unk_token, '<unk>');
  assert.equal(j.model.byte_fallback, true);
  assert.equal(j.model.fuse_unk, true);
  assert.equal(j.model.vocab['▁ab'], 6);
  const legacy = tokenizerJson(m, { kind: 'llama', legacy: true, addPrefixSpace: true }) as Record<string, any>;
  assert.equal(legacy.pre_tokenizer.prepend_scheme, 'always');
  const sp = tokenizerJson(m, { kind: 'sentencepiece' }) as Record<string, any>;
  assert.equal(sp.pre_tokenizer, null);
  // "pad" named by a tokenizer_config becomes special too when it is a piece.
  const named = tokenizerJson(m, { kind: 'sentencepiece' }, ['c']) as Record<string, any>;
  assert.ok(named.added_tokens.some((t: any) => t.content === 'c' && t.special));
});

test('flavour: Baichuan tokenizer classes encode with sentencepiece, others as LlamaTokenizer', () => {
  assert.deepEqual(flavourFor({ tokenizer_class: 'BaiChuanTokenizer' }, {}), { kind: 'sentencepiece' });
  assert.deepEqual(flavourFor({ tokenizer_class: 'BaichuanTokenizer' }, {}), { kind: 'sentencepiece' });
  assert.deepEqual(flavourFor({}, { model_type: 'baichuan' }), { kind: 'sentencepiece' });
  assert.deepEqual(flavourFor({ tokenizer_class: 'LlamaTokenizer' }, { model_type: 'baichuan' }), { kind: 'llama', legacy: false, addPrefixSpace: true });
  assert.deepEqual(flavourFor({ legacy: true }, {}), { kind: 'llama', legacy: true, addPrefixSpace: true });
});

test('hand-built model through the engine: merge order, prefixes, user-defined and special tokens, bytes', () => {
  const m = parseModelProto(tinyModelBytes());
  const llama = sentencePieceTokenizer(m, { kind: 'llama', legacy: false, addPrefixSpace: true });
  const legacy = sentencePieceTokenizer(m, { kind: 'llama', legacy: true, addPrefixSpace: true });
  const sp = sentencePieceTokenizer(m, { kind: 'sentencepiece' });
  // "▁abc": ▁+a first (-0.5), then b+c (-1.5) beats ▁a+b (-2) -> ▁a bc (by piece id it would be ▁ab c).
  assert.deepEqual(llama.encode('abc'), [9, 7]);
  assert.deepEqual(sp.encode('abc'), [9, 7]);
  // User-defined symbols split the text and are never merged; only the first segment gets "▁" ...
  assert.deepEqual(llama.encode('ab<sep>ab'), [6, 4, 5]);
  assert.deepEqual(sp.encode('ab<sep>ab'), [6, 4, 5]);
  // ... except with legacy, and in sentencepiece after a special token (each stretch is encoded alone).
  assert.deepEqual(legacy.encode('ab<sep>ab'), [6, 4, 6]);
  assert.deepEqual(llama.encode('a</s>b'), [9, 2, 12]);
  assert.deepEqual(legacy.encode('a</s>b'), [9, 2, 10, 12]);
  assert.deepEqual(sp.encode('a</s>b'), [9, 2, 10, 12]);
  // A character outside the vocab falls back to its UTF-8 bytes.
  assert.deepEqual(llama.encode('\n'), [10, 3]);
  // Decoding drops the one "▁" the encoder added, per stretch in the sentencepiece flavour.
  assert.equal(llama.decode([9, 2, 12], false), 'a</s>b');
  assert.equal(llama.decode([9, 2, 12], true), 'ab');
  assert.equal(sp.decode([9, 2, 10, 12], false), 'a</s>b');
  assert.equal(sp.decode([9, 2, 10, 12], true), 'ab');
  assert.equal(sp.decode([10, 3, 6], false), '\n ab');
});

test('sentencepiece normalizer: charsmap longest rule, user-defined symbols untouched, spaces', () => {
  const cm = new CharsMap(Uint8Array.from(tinyCharsMap()));
  const match = (s: string, pos = 0) => {
    const m = cm.match(Buffer.from(s), pos);
    return m && [m[0], Buffer.from(m[1]).toString()];
  };
  assert.deepEqual(match('A'), [1, 'a']);
  assert.deepEqual(match('ABA'), [2, 'x']);
  assert.deepEqual(match('BAB', 1), [2, 'x']);
  assert.equal(match('BA'), undefined);

  const norm = normalizeForSentencePiece(parseModelProto(tinyModelBytes()));
  assert.equal(norm('A'), '▁a');
  assert.equal(norm('ABA'), '▁xa');
  assert.equal(norm('<A>A<sep>'), '▁<A>a<sep>');
  assert.equal(norm(' A  B '), '▁▁a▁▁B▁');
  assert.equal(norm(''), '');
  const squeeze = normalizeForSentencePiece(parseModelProto(tinyModelBytes({ removeExtraWhitespaces: true })));
  assert.equal(squeeze('  A   B  '), '▁a▁B');
  assert.equal(squeeze('   '), '');
});

test('unusable files: Unigram, not a model, truncated', () => {
  const unigram = parseModelProto(tinyModelBytes({ modelType: 1 }), 'x/tokenizer.model');
  assert.throws(() => sentencePieceTokenizer(unigram, { kind: 'sentencepiece' }, { file: 'x/tokenizer.model' }), (e: unknown) => {
    return e instanceof SftError && /x\/tokenizer\.model: a sentencepiece UNIGRAM model .*only BPE/.test(e.message);
  });
  assert.throws(() => parseModelProto(Buffer.from('x'), 'x/tokenizer.model'), /x\/tokenizer\.model: not a readable sentencepiece model/);
  assert.throws(() => parseModelProto(tinyModelBytes().subarray(0, 40)), /not a readable sentencepiece model/);
  assert.throws(() => parseModelProto(Buffer.from('version https://git-lfs.github.com/spec/v1\n')), SftError);
});

// --- the real models -------------------------------------------------------------------------------
const shared = path.join(packageRoot, '..', 'shared', 'tokenizers');
const fixtures = path.join(packageRoot, 'test', 'fixtures', 'sentencepiece');
const corpus: string[] = JSON.parse(fs.readFileSync(path.join(fixtures, 'corpus.json'), 'utf8')).lines;

interface Reference {
  tokenizer_model: string;
  tokenizer_config: Record<string, unknown>;
  vocab_size: number;
  bos_id: number;
  eos_id: number;
  unk_id: number;
  ids: number[][];
  decoded: string[];
  decoded_skip_special: string[];
}

/** A temp model folder: a link to the shared tokenizer.model and the reference's tokenizer_config.json. */
function modelFolder(ref: Reference): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-sp-'));
  const source = path.join(packageRoot, ref.tokenizer_model);
  try {
    fs.symlinkSync(source, path.join(dir, 'tokenizer.model'));
  } catch {
    fs.copyFileSync(source, path.join(dir, 'tokenizer.model'));
  }
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(ref.tokenizer_config));
  return dir;
}

for (const [name, modelDir] of [
  ['baichuan-7b', 'baichuan-7b'],
  ['llama-2', 'llama-2'],
  ['llama-2-legacy', 'llama-2'],
]) {
  const file = path.join(shared, modelDir, 'tokenizer.model');
  const skip = fs.existsSync(file) ? false : `no ${file} (../shared absent)`;
  test(`${name}: tokenizer.model alone gives the reference ids and decodes for every corpus line`, { skip }, async (t) => {
    const ref: Reference = JSON.parse(fs.readFileSync(path.join(fixtures, `${name}.json`), 'utf8'));
    const dir = modelFolder(ref);
    try {
      const start = performance.now();
      const tok = await loadTokenizer(dir);
      const ms = performance.now() - start;
      t.diagnostic(`${name}: loadTokenizer took ${ms.toFixed(0)} ms`);
      assert.ok(ms < 5000, `loading took ${ms.toFixed(0)} ms`);
      assert.equal(tok.vocabSize, ref.vocab_size);
      assert.equal(tok.bosId, ref.bos_id);
      assert.equal(tok.eosId, ref.eos_id);
      assert.equal(tok.tokenToId('<unk>'), ref.unk_id);
      assert.equal(tok.bosToken, '<s>');
      assert.equal(tok.eosToken, '</s>');
      corpus.forEach((line, i) => {
        assert.deepEqual(tok.encode(line), ref.ids[i], `encode line ${i} ${JSON.stringify(line)}`);
        assert.equal(tok.decode(ref.ids[i]), ref.decoded[i], `decode line ${i}`);
        assert.equal(tok.decode(ref.ids[i], { skipSpecialTokens: true }), ref.decoded_skip_special[i], `decode (skip special) line ${i}`);
      });
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });
}

test('real models: bos/eos/unk and vocab size come from tokenizer.model when there is no tokenizer_config.json', {
  skip: fs.existsSync(path.join(shared, 'baichuan-7b', 'tokenizer.model')) ? false : '../shared absent',
}, async () => {
  for (const [modelDir, size] of [['baichuan-7b', 64000], ['llama-2', 32000]] as const) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sft-sp-'));
    try {
      fs.symlinkSync(path.join(shared, modelDir, 'tokenizer.model'), path.join(dir, 'tokenizer.model'));
      const tok = await loadTokenizer(dir);
      assert.equal(tok.vocabSize, size);
      assert.deepEqual([tok.bosId, tok.eosId, tok.tokenToId('<unk>'), tok.padId], [1, 2, 0, undefined]);
      assert.deepEqual(tok.encode('</s>'), [2]);
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  }
});

test('baichuan-7b: the nmt_nfkc normalizer matches sentencepiece on every code point', {
  skip: fs.existsSync(path.join(shared, 'baichuan-7b', 'tokenizer.model')) ? false : '../shared absent',
}, () => {
  const model = parseModelProto(fs.readFileSync(path.join(shared, 'baichuan-7b', 'tokenizer.model')));
  const changes: Record<string, string> = JSON.parse(fs.readFileSync(path.join(fixtures, 'baichuan-7b-normalizer.json'), 'utf8')).changes;
  const norm = normalizeForSentencePiece(model);
  const wrong: string[] = [];
  for (let cp = 0; cp < 0x110000; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const c = String.fromCodePoint(cp);
    const expected = changes[cp] ?? '▁' + c.replaceAll(' ', '▁');
    if (norm(c) !== expected && wrong.push(`U+${cp.toString(16)}: ${JSON.stringify(norm(c))} != ${JSON.stringify(expected)}`) >= 10) break;
  }
  assert.deepEqual(wrong, []);
});
