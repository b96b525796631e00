// Which queries read which keys: a "segment" is a run of queries of one sequence together with
// where that sequence's raw and compressed keys start. Full batches, varlen packing and decode
// steps are all lists of segments, so one engine serves them all.
import type { VarlenLayout } from '@nsa/core';

export interface Segment {
  /** Batch row (for error messages). */
  readonly batch: number;
  /** Index along the queries' dim 1 of the first query (for error messages). */
  readonly tensorT0: number;
  /** Flattened query row ([B*TQ]) of the first query. */
  readonly qRow: number;
  /** Position of the first query inside its sequence. */
  readonly firstPos: number;
  /** Number of queries. */
  readonly count: number;
  /** Flattened raw K/V row of the sequence's position 0. */
  readonly kvRow: number;
  /** Flattened compressed K/V row of the sequence's compressed block 0. */
  readonly cmpRow: number;
}

/** Segments of a full forward: one per batch row, or one per packed sequence (B = 1). */
export function fullSegments(B: number, T: number, C: number, varlen?: VarlenLayout): Segment[] {
  if (varlen) {
    const out: Segment[] = [];
    const { tokenOffsets, compressedOffsets } = varlen;
    for (let s = 0; s + 1 < tokenOffsets.length; s++) {
      const start = tokenOffsets[s];
      out.push({
        batch: 0,
        tensorT0: start,
        qRow: start,
        firstPos: 0,
        count: tokenOffsets[s + 1] - start,
        kvRow: start,
        cmpRow: compressedOffsets[s],
      });
    }
    return out;
  }
  return Array.from({ length: B }, (_, b) => ({
    batch: b,
    tensorT0: 0,
    qRow: b * T,
    firstPos: 0,
    count: T,
    kvRow: b * T,
    cmpRow: b * C,
  }));
}

/** Segments of a decode step: TQ queries per batch row at positions Tk - TQ .. Tk - 1 of a cache. */
export function decodeSegments(B: number, TQ: number, Tk: number, capacity: number, compressedCapacity: number): Segment[] {
  return Array.from({ length: B }, (_, b) => ({
    batch: b,
    tensorT0: 0,
    qRow: b * TQ,
    firstPos: Tk - TQ,
    count: TQ,
    kvRow: b * capacity,
    cmpRow: b * compressedCapacity,
  }));
}

/** Longest run of key positions any query of these segments can see. */
export function maxKeys(segments: readonly Segment[]): number {
  let max = 1;
  for (const s of segments) max = Math.max(max, s.firstPos + s.count);
  return max;
}
