/**
 * The keys one query reads, as half-open row ranges [starts[r], ends[r]) of a K/V array. Every
 * NSA branch reads a few contiguous runs (the window, the visible compressed blocks, the selected
 * blocks), so ranges keep the inner loops on contiguous memory. Reused between queries.
 */
export class KeyRanges {
  readonly starts: Int32Array;
  readonly ends: Int32Array;
  count = 0;

  constructor(maxRanges: number) {
    this.starts = new Int32Array(Math.max(1, maxRanges));
    this.ends = new Int32Array(Math.max(1, maxRanges));
  }

  clear(): this {
    this.count = 0;
    return this;
  }

  /** Adds rows [start, end); empty ranges are skipped, a range touching the last one extends it. */
  push(start: number, end: number): this {
    if (end <= start) return this;
    const c = this.count;
    if (c > 0 && this.ends[c - 1] === start) {
      this.ends[c - 1] = end;
      return this;
    }
    this.starts[c] = start;
    this.ends[c] = end;
    this.count = c + 1;
    return this;
  }

  /** Total rows. */
  size(): number {
    let total = 0;
    for (let r = 0; r < this.count; r++) total += this.ends[r] - this.starts[r];
    return total;
  }
}
