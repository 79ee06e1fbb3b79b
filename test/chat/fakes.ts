// Test doubles for the chat tests: a byte-level tokenizer and a model whose logits follow a script.
import type { TextPart, Tok } from '../../src/tokenizer/types.js';
import type { NativeModel } from '../../src/native/types.js';
import { encodeParts, type PartsEngine } from '../../src/tokenizer/parts.js';

/** Ids 0..255 are single bytes; 256.. are special tokens; further ids are multi-byte pieces.
 *  decode() is a plain UTF-8 decode of the bytes, so a split character comes out as U+FFFD.
 *  As text (encodeText, the messages in encodeParts) a special token's string is its bytes. */
export class ByteTok implements Tok {
  readonly specials = ['<|im_start|>', '<|im_end|>', '<|endoftext|>'];
  readonly pieces = new Map<number, Uint8Array>();
  readonly vocabSize: number;
  readonly eosId = 258;
  readonly eosToken = '<|endoftext|>';

  /** foldSpaceBeforeSpecial: a space right before a special token vanishes unless it starts the text, as
   *  Llama-2's tokenizer turns "ok </s>" into [ok, </s>] but " </s>" into [▁, </s>]. */
  constructor(
    pieces: Record<number, number[]> = {},
    private readonly foldSpaceBeforeSpecial = false,
  ) {
    for (const [id, bytes] of Object.entries(pieces)) this.pieces.set(Number(id), Uint8Array.from(bytes));
    this.vocabSize = Math.max(256 + this.specials.length, ...[...this.pieces.keys()].map((k) => k + 1));
  }

  private readonly engine: PartsEngine = {
    addedTokens: new Map(this.specials.map((s, i) => [s, { id: 256 + i, special: true, lstrip: false, rstrip: false }])),
    encodeSpecial: (text) => this.encode(text),
    encodeRun: (text) => [...new TextEncoder().encode(text)],
  };

  encodeText(text: string): number[] {
    return encodeParts(this.engine, [{ text }]);
  }

  encodeParts(parts: readonly TextPart[], markers?: readonly string[]): number[] {
    return encodeParts(this.engine, parts, markers);
  }

  encode(text: string): number[] {
    const ids: number[] = [];
    let rest = text;
    while (rest.length > 0) {
      const special = this.specials.findIndex((s) => rest.startsWith(s));
      if (special >= 0) {
        ids.push(256 + special);
        rest = rest.slice(this.specials[special].length);
        continue;
      }
      if (this.foldSpaceBeforeSpecial && ids.length > 0 && rest[0] === ' ' && this.specials.some((s) => rest.startsWith(s, 1))) {
        rest = rest.slice(1);
        continue;
      }
      const cp = String.fromCodePoint(rest.codePointAt(0)!);
      for (const b of new TextEncoder().encode(cp)) ids.push(b);
      rest = rest.slice(cp.length);
    }
    return ids;
  }

  decode(ids: number[]): string {
    let out = '';
    let bytes: number[] = [];
    const flush = (): void => {
      out += new TextDecoder('utf-8', { ignoreBOM: true }).decode(Uint8Array.from(bytes));
      bytes = [];
    };
    for (const id of ids) {
      if (id < 256) bytes.push(id);
      else if (id < 256 + this.specials.length) {
        flush();
        out += this.specials[id - 256];
      } else bytes.push(...this.pieces.get(id)!);
    }
    flush();
    return out;
  }

  tokenToId(token: string): number | undefined {
    const i = this.specials.indexOf(token);
    return i >= 0 ? 256 + i : undefined;
  }
}

/** A model whose k-th feed() returns logits peaked at script[k] (5 there, 0 elsewhere), or script[k] itself
 *  when it is an array; it records every feed and reset. */
export class ScriptedModel implements Pick<NativeModel, 'feed' | 'resetCache' | 'cacheLength' | 'logits'> {
  readonly feeds: number[][] = [];
  resets = 0;
  private cache = 0;
  private step = 0;

  constructor(
    private readonly vocab: number,
    private readonly script: (number | Float32Array)[],
    private readonly rows: Float32Array[] = [],
  ) {}

  async feed(ids: Int32Array): Promise<Float32Array> {
    this.feeds.push(Array.from(ids));
    this.cache += ids.length;
    const target = this.script[this.step++];
    if (target === undefined) throw new Error('ScriptedModel: script exhausted');
    if (target instanceof Float32Array) return target;
    const logits = new Float32Array(this.vocab);
    logits[target] = 5;
    return logits;
  }

  resetCache(): void {
    this.resets++;
    this.cache = 0;
  }

  cacheLength(): number {
    return this.cache;
  }

  /** Returns the given rows (one per position), as the score tests need. */
  async logits(ids: Int32Array, batch: number, seqLen: number): Promise<Float32Array> {
    this.feeds.push([batch, seqLen, ...ids]);
    const out = new Float32Array(batch * seqLen * this.vocab);
    this.rows.forEach((r, i) => out.set(r, i * this.vocab));
    return out;
  }
}

/** The scripted model typed as the engine's model, for code that takes a NativeModel. */
export function asNative(m: ScriptedModel): NativeModel {
  return m as unknown as NativeModel;
}

export const bytes = (s: string): number[] => [...new TextEncoder().encode(s)];
