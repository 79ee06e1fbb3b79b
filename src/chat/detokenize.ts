// Streaming detokenization: turns generated ids into text piece by piece without ever printing half a
// character. Byte-level BPE and sentencepiece byte-fallback pieces can split one UTF-8 character over several
// tokens; decoding such a prefix yields U+FFFD, so the characters after the last complete one wait until
// the next ids complete them.
// Each new piece is found by decoding a window that starts at the previously released chunk, with and without
// the unreleased ids, and taking the difference: a lone token decoded on its own would lose context-dependent
// rules, e.g. sentencepiece drops the leading space of the first piece of a decode only.
import type { Tok } from '../tokenizer/types.js';

const REPLACEMENT = '\uFFFD';
/** A UTF-8 character has at most 4 bytes: a replacement char still pending after this many tokens is a
 *  real invalid sequence, not an unfinished one, so it is released as is. */
const MAX_PENDING_TOKENS = 4;

export class StreamDecoder {
  private readonly ids: number[] = [];
  /** Start of the decode window: the first id of the last released chunk, kept for context. */
  private prefixOffset = 0;
  /** ids before this index have been released as text. */
  private readOffset = 0;
  /** Characters of the unreleased ids' text already printed: the complete characters before a split one. */
  private printedAhead = 0;

  constructor(private readonly tok: Tok) {}

  /** Adds one id; returns the text that became complete (often '', sometimes several characters). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.pendingText();
    if (!text.endsWith(REPLACEMENT) || this.ids.length - this.readOffset >= MAX_PENDING_TOKENS) return this.release(text);
    // Print what precedes the unfinished character now; the ids stay pending until it completes.
    let end = text.length;
    while (end > 0 && text[end - 1] === REPLACEMENT) end--;
    if (end <= this.printedAhead) return '';
    const out = text.slice(this.printedAhead, end);
    this.printedAhead = end;
    return out;
  }

  /** Text still held back at the end of generation (an unfinished character comes out as U+FFFD). */
  flush(): string {
    return this.readOffset === this.ids.length ? '' : this.release(this.pendingText());
  }

  /** Text of the ids after readOffset, decoded in the context of the last released chunk. */
  private pendingText(): string {
    const prefixText = this.decodeWindow(this.readOffset);
    return this.decodeWindow(this.ids.length).slice(prefixText.length);
  }

  private release(text: string): string {
    const out = text.slice(this.printedAhead);
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    this.printedAhead = 0;
    return out;
  }

  private decodeWindow(end: number): string {
    return end > this.prefixOffset ? this.tok.decode(this.ids.slice(this.prefixOffset, end)) : '';
  }
}
