// Reads a sentencepiece tokenizer.model (Llama, Baichuan) without Python and runs it in
// @huggingface/tokenizers, the engine tokenizer.json files run in.
//
// The file is a protobuf ModelProto (google/sentencepiece:src/sentencepiece_model.proto): pieces with
// score and type, a trainer_spec, a normalizer_spec. Only BPE models are read. Two flavours, because
// the two families' own tokenizers really differ:
// - "llama" (LlamaTokenizer, and any other class): what transformers 5.18's LlamaTokenizer builds — a
//   Metaspace pre-tokenizer that puts "▁" before the first segment only ("legacy": true in
//   tokenizer_config: before every segment between added tokens), control pieces as special added
//   tokens, user-defined pieces as plain added tokens, no normalizer (the model's normalizer_spec is
//   ignored, as transformers does) — over BPE with sentencepiece's merge order (see bpeMerges).
// - "sentencepiece" (BaiChuanTokenizer/BaichuanTokenizer): those classes call sentencepiece's own
//   encode on each stretch of text between special tokens. Here that stretch is normalized in
//   TypeScript exactly as sentencepiece does (precompiled charsmap, user-defined symbols left alone,
//   dummy "▁" prefix, spaces to "▁"), and the engine does the rest: user-defined symbols as added tokens
//   (never merged, as sentencepiece freezes them) and the same BPE.
// split_digits is a training option: a model trained with it has no multi-digit pieces, and Baichuan
// makes each digit a user-defined symbol, so digits come out one piece each in both flavours.
import { Tokenizer } from '@huggingface/tokenizers';
import { SftError } from '../errors.js';
import type { PartsEngine, Protected } from './parts.js';
import { jsonLengthBound, jsonPartsEngine, lengthBound } from './text-engine.js';

export const PieceType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;
export const ModelType = { UNIGRAM: 1, BPE: 2, WORD: 3, CHAR: 4 } as const;

export interface SpPiece {
  piece: string;
  score: number;
  type: number;
}

export interface SpModel {
  pieces: SpPiece[];
  trainer: {
    modelType: number;
    vocabSize: number;
    splitDigits: boolean;
    byteFallback: boolean;
    treatWhitespaceAsSuffix: boolean;
    unkId: number;
    bosId: number;
    eosId: number;
    padId: number;
  };
  normalizer: {
    name: string;
    precompiledCharsmap: Uint8Array;
    addDummyPrefix: boolean;
    removeExtraWhitespaces: boolean;
    escapeWhitespaces: boolean;
  };
}

// ---------------------------------------------------------------------------------------------------
// Protobuf wire format: just what ModelProto needs (varint, fixed32, fixed64, length-delimited).
// One reader walks the whole buffer; a sub-message is read up to its end offset.

class WireReader {
  pos = 0;
  private readonly view: DataView;
  private readonly text: Buffer;

  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.text = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  private byte(): number {
    if (this.pos >= this.buf.length) throw new Error(`truncated at byte ${this.pos}`);
    return this.buf[this.pos++];
  }

  /** An unsigned varint as a number; int32 fields write negatives as 10-byte two's complement. */
  varint(): number {
    let v = 0;
    for (let shift = 0; shift < 28; shift += 7) {
      const b = this.byte();
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
    }
    // Past 28 bits: finish in BigInt (rare: negative int32s, huge values).
    let big = BigInt(v);
    for (let shift = 28n; shift < 70n; shift += 7n) {
      const b = this.byte();
      big |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return Number(BigInt.asIntN(64, big));
    }
    throw new Error(`varint longer than 10 bytes at byte ${this.pos}`);
  }

  /** A length-delimited field's end offset; pos is left at its start. */
  delimitedEnd(end: number): number {
    const len = this.varint();
    if (this.pos + len > end) throw new Error(`field of ${len} bytes runs past its message at byte ${this.pos}`);
    return this.pos + len;
  }

  string(end: number): string {
    const stop = this.delimitedEnd(end);
    const s = this.text.toString('utf8', this.pos, stop);
    this.pos = stop;
    return s;
  }

  bytes(end: number): Uint8Array {
    const stop = this.delimitedEnd(end);
    const b = this.buf.slice(this.pos, stop);
    this.pos = stop;
    return b;
  }

  float32(end: number): number {
    if (this.pos + 4 > end) throw new Error(`truncated float at byte ${this.pos}`);
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  skip(wire: number, end: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.pos = this.delimitedEnd(end);
    else if (wire === 5) this.pos += 4;
    else throw new Error(`unsupported wire type ${wire} at byte ${this.pos}`);
    if (this.pos > end) throw new Error('truncated');
  }
}

/** Parses tokenizer.model bytes. Unset fields take the proto's defaults. */
export function parseModelProto(buf: Uint8Array, file = 'tokenizer.model'): SpModel {
  const model: SpModel = {
    pieces: [],
    trainer: { modelType: ModelType.UNIGRAM, vocabSize: 8000, splitDigits: false, byteFallback: false, treatWhitespaceAsSuffix: false, unkId: 0, bosId: 1, eosId: 2, padId: -1 },
    normalizer: { name: '', precompiledCharsmap: new Uint8Array(0), addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true },
  };
  try {
    const r = new WireReader(buf);
    while (r.pos < buf.length) {
      const tag = r.varint();
      const field = tag >>> 3;
      const wire = tag & 7;
      if (wire !== 2 || field < 1 || field > 3) {
        r.skip(wire, buf.length);
        continue;
      }
      const end = r.delimitedEnd(buf.length);
      if (field === 1) model.pieces.push(readPiece(r, end));
      else if (field === 2) readTrainerSpec(r, end, model.trainer);
      else readNormalizerSpec(r, end, model.normalizer);
    }
  } catch (err) {
    throw new SftError(`${file}: not a readable sentencepiece model (${(err as Error).message}). Check that the file is complete (not a Git LFS pointer).`);
  }
  if (model.pieces.length === 0) throw new SftError(`${file}: no pieces — not a sentencepiece model.`);
  return model;
}

function readPiece(r: WireReader, end: number): SpPiece {
  const p: SpPiece = { piece: '', score: 0, type: PieceType.NORMAL };
  while (r.pos < end) {
    const tag = r.varint();
    if (tag === 0x0a) p.piece = r.string(end); // field 1, length-delimited
    else if (tag === 0x15) p.score = r.float32(end); // field 2, fixed32
    else if (tag === 0x18) p.type = r.varint(); // field 3, varint
    else r.skip(tag & 7, end);
  }
  return p;
}

function readTrainerSpec(r: WireReader, end: number, t: SpModel['trainer']): void {
  const ints: Record<number, keyof SpModel['trainer']> = { 3: 'modelType', 4: 'vocabSize', 40: 'unkId', 41: 'bosId', 42: 'eosId', 43: 'padId' };
  const bools: Record<number, keyof SpModel['trainer']> = { 24: 'treatWhitespaceAsSuffix', 25: 'splitDigits', 35: 'byteFallback' };
  while (r.pos < end) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0 && field in ints) (t[ints[field]] as number) = r.varint();
    else if (wire === 0 && field in bools) (t[bools[field]] as boolean) = r.varint() !== 0;
    else r.skip(wire, end);
  }
}

function readNormalizerSpec(r: WireReader, end: number, n: SpModel['normalizer']): void {
  while (r.pos < end) {
    const tag = r.varint();
    if (tag === 0x0a) n.name = r.string(end);
    else if (tag === 0x12) n.precompiledCharsmap = r.bytes(end);
    else if (tag === 0x18) n.addDummyPrefix = r.varint() !== 0;
    else if (tag === 0x20) n.removeExtraWhitespaces = r.varint() !== 0;
    else if (tag === 0x28) n.escapeWhitespaces = r.varint() !== 0;
    else r.skip(tag & 7, end);
  }
}

// ---------------------------------------------------------------------------------------------------
// Merges and tokenizer.json.

/** The BPE merges, in sentencepiece's order: every split of a piece into two in-vocab halves, ranked
 *  by the piece's score, highest first (ties: piece id, then split point). Only pieces sentencepiece
 *  merges into count (normal and user-defined; never control, unknown or byte pieces). transformers'
 *  LlamaConverter ranks the same way, and so do the merges in Llama-2's published tokenizer.json;
 *  transformers 5.x building from tokenizer.model ranks by piece id instead, which differs where
 *  scores run against id order (Llama-2's whitespace-only pieces "▁▁"…, scored -1e9 so that
 *  sentencepiece merges them last: "a  b" is ▁a ▁ ▁b, not ▁a ▁▁ b). */
export function bpeMerges(model: SpModel): [string, string][] {
  const vocab = new Set(model.pieces.map((p) => p.piece));
  const merges: [string, string][] = [];
  const pieceId: number[] = []; // the merged piece, per merge
  model.pieces.forEach(({ piece, type }, id) => {
    if (type !== PieceType.NORMAL && type !== PieceType.USER_DEFINED) return;
    // Split points between code points (never inside a surrogate pair).
    for (let k = 1; k < piece.length; k++) {
      const c = piece.charCodeAt(k);
      if (c >= 0xdc00 && c <= 0xdfff) continue;
      const left = piece.slice(0, k);
      const right = piece.slice(k);
      if (vocab.has(left) && vocab.has(right)) {
        merges.push([left, right]);
        pieceId.push(id);
      }
    }
  });
  const score = (i: number) => model.pieces[pieceId[i]].score;
  const order = merges.map((_, i) => i).sort((a, b) => score(b) - score(a) || a - b);
  return order.map((i) => merges[i]);
}

export type SpFlavour = { kind: 'llama'; legacy: boolean; addPrefixSpace: boolean } | { kind: 'sentencepiece' };

/** tokenizer_class names a Baichuan tokenizer (a sentencepiece wrapper): its flavour; else transformers' Llama.
 *  Without tokenizer_config.json, config.json's model_type decides. */
export function flavourFor(tokenizerConfig: Record<string, unknown>, modelConfig: Record<string, unknown>): SpFlavour {
  const cls = typeof tokenizerConfig.tokenizer_class === 'string' ? tokenizerConfig.tokenizer_class : '';
  const modelType = typeof modelConfig.model_type === 'string' ? modelConfig.model_type : '';
  if (/baichuan/i.test(cls) || (cls === '' && /baichuan/i.test(modelType))) return { kind: 'sentencepiece' };
  return { kind: 'llama', legacy: tokenizerConfig.legacy === true, addPrefixSpace: tokenizerConfig.add_prefix_space !== false };
}

/** Tokens written in text that stand for themselves: control and unknown pieces, plus `named` ones in the vocab. */
function specialPieceIds(model: SpModel, named: string[]): Set<number> {
  const ids = new Set<number>();
  model.pieces.forEach((p, id) => {
    if (p.type === PieceType.CONTROL || p.type === PieceType.UNKNOWN || named.includes(p.piece)) ids.add(id);
  });
  return ids;
}

/** The tokenizer.json object for `model`. `specialTokens`: token names tokenizer_config.json gives
 *  (bos/eos/unk/pad), made special added tokens like the control pieces. */
export function tokenizerJson(model: SpModel, flavour: SpFlavour, specialTokens: string[] = []): Record<string, unknown> {
  const specials = specialPieceIds(model, specialTokens);
  const vocab: Record<string, number> = {};
  const added: Record<string, unknown>[] = [];
  model.pieces.forEach((p, id) => {
    vocab[p.piece] = id;
    const special = specials.has(id);
    if (special || p.type === PieceType.USER_DEFINED) {
      added.push({ id, content: p.piece, single_word: false, lstrip: false, rstrip: false, normalized: false, special });
    }
  });
  const unk = model.pieces[model.trainer.unkId]?.piece ?? '<unk>';
  const llama = flavour.kind === 'llama';
  // sentencepiece drops the first piece's leading "▁" when it added a dummy prefix (or strips spaces).
  const stripFirstSpace = llama ? flavour.addPrefixSpace : model.normalizer.addDummyPrefix || model.normalizer.removeExtraWhitespaces;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    // sentencepiece flavour: normalized in TypeScript before the engine sees the text (normalizeForSentencePiece).
    normalizer: null,
    pre_tokenizer: llama
      ? { type: 'Metaspace', replacement: '▁', prepend_scheme: !flavour.addPrefixSpace ? 'never' : flavour.legacy ? 'always' : 'first', split: false }
      : null,
    // BOS is added by sft's templates and callers, never by encode().
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(stripFirstSpace ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: unk,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: model.trainer.byteFallback,
      ignore_merges: false,
      vocab,
      merges: bpeMerges(model),
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// sentencepiece's normalizer (src/normalizer.cc), for the sentencepiece flavour.

/** A byte trie for longest-prefix matches (the user-defined symbols). */
type ByteTrie = Map<number, ByteTrie> & { end?: boolean };

function byteTrie(words: string[]): ByteTrie {
  const root: ByteTrie = new Map();
  const enc = new TextEncoder();
  for (const w of words) {
    let node = root;
    for (const b of enc.encode(w)) {
      let next = node.get(b);
      if (!next) node.set(b, (next = new Map()));
      node = next;
    }
    node.end = true;
  }
  return root;
}

function longestTrieMatch(trie: ByteTrie, bytes: Uint8Array, pos: number): number {
  let node: ByteTrie | undefined = trie;
  let best = 0;
  for (let i = pos; i < bytes.length && node; i++) {
    node = node.get(bytes[i]);
    if (node?.end) best = i - pos + 1;
  }
  return best;
}

/** The precompiled charsmap: u32 LE trie size, a darts-clone double array of that many bytes, then
 *  the NUL-terminated replacement strings the trie's values point into. */
export class CharsMap {
  private readonly units: Uint32Array;
  private readonly strings: Uint8Array;

  constructor(blob: Uint8Array) {
    const dv = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const size = blob.length > 4 ? dv.getUint32(0, true) : 0;
    if (blob.length <= 4 || size >= blob.length || size % 4 !== 0) throw new Error('broken precompiled_charsmap');
    this.units = new Uint32Array(size / 4);
    for (let i = 0; i < this.units.length; i++) this.units[i] = dv.getUint32(4 + 4 * i, true);
    this.strings = blob.subarray(4 + size);
  }

  /** The longest rule matching bytes from `pos`: [bytes consumed, replacement], or undefined. */
  match(bytes: Uint8Array, pos: number): [number, Uint8Array] | undefined {
    const u = this.units;
    // darts-clone unit fields: label in bits 0-7 (bit 31 set on leaf units), has_leaf bit 8,
    // offset = bits 10-31, shifted left 8 more when bit 9 is set; a leaf unit's value is bits 0-30.
    const offset = (unit: number) => (unit >>> 10) * ((unit & 0x200) !== 0 ? 256 : 1);
    let node = offset(u[0]);
    let bestLen = 0;
    let bestValue = 0;
    for (let i = pos; i < bytes.length; i++) {
      node ^= bytes[i];
      const unit = u[node];
      if (unit === undefined || (unit & 0x800000ff) >>> 0 !== bytes[i]) break;
      node ^= offset(unit);
      if ((unit >>> 8) & 1) {
        bestLen = i - pos + 1;
        bestValue = u[node] & 0x7fffffff;
      }
    }
    if (bestLen === 0) return undefined;
    let end = bestValue;
    while (end < this.strings.length && this.strings[end] !== 0) end++;
    return [bestLen, this.strings.subarray(bestValue, end)];
  }
}

function utf8CharLength(lead: number): number {
  return lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
}

const SPACE = 0x20; // written as "▁" (e2 96 81) when escapeWhitespaces is on

/** Where a stretch sits in the text sentencepiece normalizes as one: `start` false when it continues
 *  after a user-defined symbol (no dummy prefix, leading spaces kept), `end` false when one follows. */
export interface StretchEdges {
  start?: boolean;
  end?: boolean;
}

/** sentencepiece's Normalize for `model`: user-defined symbols pass through untouched, other text goes
 *  through the charsmap (longest rule), optional whitespace squeezing, the dummy "▁" prefix, spaces to "▁".
 *  `asText`: user-defined symbols normalized like any text instead (the markers a template protects). */
export function normalizeForSentencePiece(model: SpModel, asText: ReadonlySet<string> = new Set()): (text: string, edges?: StretchEdges) => string {
  const spec = model.normalizer;
  const charsMap = spec.precompiledCharsmap.length > 0 ? new CharsMap(spec.precompiledCharsmap) : undefined;
  const userDefined = byteTrie(model.pieces.filter((p) => p.type === PieceType.USER_DEFINED && !asText.has(p.piece)).map((p) => p.piece));
  const enc = new TextEncoder();
  const dec = new TextDecoder('utf-8', { ignoreBOM: true });

  // One normalized unit at `pos`: [bytes consumed, output bytes].
  const prefix = (bytes: Uint8Array, pos: number): [number, Uint8Array] => {
    const user = longestTrieMatch(userDefined, bytes, pos);
    if (user > 0) return [user, bytes.subarray(pos, pos + user)];
    const rule = charsMap?.match(bytes, pos);
    if (rule) return rule;
    const len = Math.min(utf8CharLength(bytes[pos]), bytes.length - pos);
    return [len, bytes.subarray(pos, pos + len)];
  };
  const isSpace = (b: Uint8Array) => b.length === 1 && b[0] === SPACE;

  return (text: string, edges: StretchEdges = {}): string => {
    const atStart = edges.start ?? true;
    const atEnd = edges.end ?? true;
    const bytes = enc.encode(text);
    let pos = 0;
    if (spec.removeExtraWhitespaces && atStart) {
      for (let p = prefix(bytes, pos); pos < bytes.length && isSpace(p[1]); p = prefix(bytes, pos)) pos += p[0];
    }
    // Nothing here, but a user-defined symbol follows: the stretch is not empty, so it has its prefix.
    if (pos >= bytes.length) return !atEnd && atStart && spec.addDummyPrefix ? (spec.escapeWhitespaces ? '\u2581' : ' ') : '';
    const out: number[] = [];
    const pushSpace = () => (spec.escapeWhitespaces ? out.push(0xe2, 0x96, 0x81) : out.push(SPACE));
    if (spec.addDummyPrefix && atStart) pushSpace();
    // After a user-defined symbol (which ends in no space) nothing is squeezed yet.
    let prevSpace = spec.removeExtraWhitespaces && atStart;
    while (pos < bytes.length) {
      const [consumed, piece] = prefix(bytes, pos);
      let start = 0;
      while (prevSpace && start < piece.length && piece[start] === SPACE) start++;
      if (start < piece.length) {
        for (let k = start; k < piece.length; k++) {
          if (piece[k] === SPACE) pushSpace();
          else out.push(piece[k]);
        }
        prevSpace = piece[piece.length - 1] === SPACE;
      }
      pos += consumed;
      if (!spec.removeExtraWhitespaces) prevSpace = false;
    }
    let n = out.length;
    if (spec.removeExtraWhitespaces && atEnd) {
      const w = spec.escapeWhitespaces ? 3 : 1;
      while (n >= w && (w === 1 ? out[n - 1] === SPACE : out[n - 3] === 0xe2 && out[n - 2] === 0x96 && out[n - 1] === 0x81)) n -= w;
    }
    return dec.decode(Uint8Array.from(out.slice(0, n)));
  };
}

// ---------------------------------------------------------------------------------------------------
// The loaded tokenizer.

export interface SentencePieceTokenizer {
  /** The engine tokenizer built from the tokenizer.json object. */
  engine: Tokenizer;
  encode(text: string): number[];
  decode(ids: number[], skipSpecialTokens: boolean): string;
  /** Text with special tokens off, for encodeParts (parts.ts). */
  parts: PartsEngine;
  /** A cheap lower bound on the tokens of a text, where the model allows one (byte fallback). */
  minTokens?: (text: string) => number;
}

export interface SentencePieceOptions {
  /** Token names tokenizer_config.json gives (bos/eos/unk/pad): special like the control pieces. */
  specialTokens?: string[];
  /** Passed to the engine as its tokenizer config. */
  engineConfig?: Record<string, unknown>;
  cleanUpSpaces?: boolean;
  file?: string;
}

export function sentencePieceTokenizer(model: SpModel, flavour: SpFlavour, opts: SentencePieceOptions = {}): SentencePieceTokenizer {
  const file = opts.file ?? 'tokenizer.model';
  const { modelType } = model.trainer;
  if (modelType !== ModelType.BPE) {
    const name = Object.entries(ModelType).find(([, v]) => v === modelType)?.[0] ?? String(modelType);
    throw new SftError(
      `${file}: a sentencepiece ${name} model (trainer_spec.model_type ${modelType}); sft reads only BPE tokenizer.model files (Llama, Baichuan) so far. ` +
        `Convert it to tokenizer.json with transformers: AutoTokenizer.from_pretrained(dir).save_pretrained(dir).`,
    );
  }
  if (flavour.kind === 'sentencepiece' && model.trainer.treatWhitespaceAsSuffix) {
    throw new SftError(`${file}: trainer_spec.treat_whitespace_as_suffix is set, which sft does not support; convert the tokenizer to tokenizer.json with transformers.`);
  }
  const json = tokenizerJson(model, flavour, opts.specialTokens);
  const engineConfig = opts.engineConfig ?? {};
  const engine = new Tokenizer(json, engineConfig);
  const decodeOpts = (skip: boolean) => ({ skip_special_tokens: skip, clean_up_tokenization_spaces: opts.cleanUpSpaces ?? false });
  if (flavour.kind === 'llama') {
    return {
      engine,
      encode: (text) => engine.encode(text, { add_special_tokens: false }).ids,
      decode: (ids, skip) => engine.decode(ids, decodeOpts(skip)),
      parts: jsonPartsEngine(json, engine, engineConfig),
      minTokens: jsonLengthBound(json, engine, engineConfig),
    };
  }

  // sentencepiece flavour: cut at special tokens, sentencepiece-encode each stretch on its own (so each
  // gets its dummy prefix), and decode run by run so each run loses it again.
  const specialIds = specialPieceIds(model, opts.specialTokens ?? []);
  const specialById = new Map([...specialIds].map((id) => [id, model.pieces[id].piece]));
  const idBySpecial = new Map([...specialById].map(([id, piece]) => [piece, id]));
  const escaped = [...idBySpecial.keys()].sort((a, b) => b.length - a.length).map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const splitter = new RegExp(`(${escaped.join('|')})`);
  let normalize: (text: string) => string;
  try {
    normalize = normalizeForSentencePiece(model);
  } catch (err) {
    throw new SftError(`${file}: normalizer_spec.precompiled_charsmap is unreadable (${(err as Error).message}); convert the tokenizer to tokenizer.json with transformers.`);
  }
  const encode = (text: string): number[] => {
    const ids: number[] = [];
    for (const part of escaped.length > 0 ? text.split(splitter) : [text]) {
      const special = idBySpecial.get(part);
      if (special !== undefined) ids.push(special);
      else if (part.length > 0) {
        const normalized = normalize(part);
        if (normalized.length > 0) for (const id of engine.encode(normalized, { add_special_tokens: false }).ids) ids.push(id);
      }
    }
    return ids;
  };
  let longest = 1;
  for (const p of model.pieces) longest = Math.max(longest, p.piece.length);
  return {
    engine,
    encode,
    decode: (ids, skip) => {
      let out = '';
      let run: number[] = [];
      const flush = () => {
        if (run.length > 0) out += engine.decode(run, decodeOpts(false));
        run = [];
      };
      for (const id of ids) {
        const special = specialById.get(id);
        if (special === undefined) run.push(id);
        else {
          flush();
          if (!skip) out += special;
        }
      }
      flush();
      return out;
    },
    parts: sentencePieceParts(model, json, engine, engineConfig, specialIds, encode),
    // Byte fallback: no character becomes a fused <unk>, so every character is in some piece.
    minTokens: model.trainer.byteFallback ? lengthBound(longest, normalize) : undefined,
  };
}

/** The sentencepiece flavour's run encoder: a stretch is normalized as sentencepiece would (a new
 *  stretch after a special piece, a continuation after a user-defined marker), with the protected
 *  user-defined markers normalized as text, then tokenized by the engine without them. */
function sentencePieceParts(
  model: SpModel,
  json: Record<string, unknown>,
  engine: Tokenizer,
  engineConfig: Record<string, unknown>,
  specialIds: Set<number>,
  encodeSpecial: (text: string) => number[],
): PartsEngine {
  const inner = jsonPartsEngine(json, engine, engineConfig);
  const normalizers = new Map<string, ReturnType<typeof normalizeForSentencePiece>>();
  const normalizerFor = (protect: Protected) => {
    let n = normalizers.get(protect.key);
    if (!n) normalizers.set(protect.key, (n = normalizeForSentencePiece(model, new Set(protect.contents))));
    return n;
  };
  const stretchEdge = (id: number | undefined) => id === undefined || specialIds.has(id);
  return {
    addedTokens: inner.addedTokens,
    encodeSpecial,
    encodeRun: (text, at, protect) => {
      const normalized = normalizerFor(protect)(text, { start: stretchEdge(at.before), end: stretchEdge(at.after) });
      return normalized.length === 0 ? [] : inner.encodeRun(normalized, at, protect);
    },
  };
}
