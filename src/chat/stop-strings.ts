// Cuts streamed text at the first stop string. Text that could still turn into a stop string (a suffix
// that is a prefix of one) is held back until the next piece decides it, so a stop string split across
// tokens is never half printed.

export class StopStringFilter {
  private readonly stops: string[];
  private text = '';
  /** Characters of `text` already released. */
  private released = 0;

  constructor(stops: string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  /** Adds a piece of text; returns what may be printed now and whether a stop string was completed. */
  push(piece: string): { text: string; stopped: boolean } {
    this.text += piece;
    // Nothing before `released` can start a stop string: such a start would have been held back.
    let stopAt = -1;
    for (const s of this.stops) {
      const i = this.text.indexOf(s, this.released);
      if (i >= 0 && (stopAt < 0 || i < stopAt)) stopAt = i;
    }
    if (stopAt >= 0) return { text: this.releaseTo(stopAt), stopped: true };
    return { text: this.releaseTo(this.text.length - this.heldLength()), stopped: false };
  }

  /** At the end of generation the held-back text is ordinary text. */
  flush(): string {
    return this.releaseTo(this.text.length);
  }

  /** Length of the longest unreleased suffix that is a proper prefix of some stop string. */
  private heldLength(): number {
    const longest = Math.max(0, ...this.stops.map((s) => s.length));
    for (let k = Math.min(this.text.length - this.released, longest - 1); k > 0; k--) {
      const tail = this.text.slice(this.text.length - k);
      if (this.stops.some((s) => s.length > k && s.startsWith(tail))) return k;
    }
    return 0;
  }

  private releaseTo(end: number): string {
    const out = this.text.slice(this.released, end);
    this.released = end;
    return out;
  }
}
