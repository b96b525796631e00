// The spec's counting and visibility rules, one definition for every backend and test.
// Positions are 0-based and relative to the start of their sequence.
import type { NSAConfig } from './config.js';
import { NSAShapeError } from './errors.js';

type Blocks = Pick<NSAConfig, 'compressBlock' | 'compressStride'>;
type Selection = Pick<NSAConfig, 'selectBlock' | 'selectCount' | 'initialBlocks' | 'localBlocks'>;

/** C: compressed blocks of a sequence of T tokens, `T >= l ? floor((T - l)/d) + 1 : 0`. */
export function compressedCount(T: number, config: Blocks): number {
  return T >= config.compressBlock ? Math.floor((T - config.compressBlock) / config.compressStride) + 1 : 0;
}

/** c(t): compressed blocks visible to the query at position t (complete by t, inclusive). */
export function visibleCompressed(t: number, config: Blocks): number {
  return compressedCount(t + 1, config);
}

/** Raw token range [start, end) summarised by compressed block i. */
export function compressedBlockRange(i: number, config: Blocks): [number, number] {
  const start = i * config.compressStride;
  return [start, start + config.compressBlock];
}

/** Selection block that holds position t: floor(t / l'). */
export function selectionBlockOf(t: number, config: Pick<NSAConfig, 'selectBlock'>): number {
  return Math.floor(t / config.selectBlock);
}

/** Selection blocks of a sequence of T tokens (the last one may be partial). */
export function selectionBlockCount(T: number, config: Pick<NSAConfig, 'selectBlock'>): number {
  return Math.ceil(T / config.selectBlock);
}

/**
 * Sub-blocks of d tokens shared by compressed block i and selection block j: the weight of
 * p[i] in s[j] (spec, selection step 2, the geometric overlap).
 */
export function overlapWeight(i: number, j: number, config: Blocks & Pick<NSAConfig, 'selectBlock'>): number {
  const perCmp = config.compressBlock / config.compressStride;
  const perSel = config.selectBlock / config.compressStride;
  const lo = Math.max(i, j * perSel);
  const hi = Math.min(i + perCmp, (j + 1) * perSel);
  return Math.max(0, hi - lo);
}

/** Compressed blocks [first, end) that overlap selection block j (before clipping to what exists). */
export function compressedRangeOfSelectionBlock(
  j: number,
  config: Blocks & Pick<NSAConfig, 'selectBlock'>,
): [number, number] {
  const perCmp = config.compressBlock / config.compressStride;
  const perSel = config.selectBlock / config.compressStride;
  return [Math.max(0, j * perSel - perCmp + 1), (j + 1) * perSel];
}

/** Forced selection blocks for the query at t, ascending, without duplicates. */
export function forcedBlocks(t: number, config: Selection): number[] {
  const current = selectionBlockOf(t, config);
  const forced = new Set<number>();
  for (let j = 0; j < config.initialBlocks && j <= current; j++) forced.add(j);
  for (let j = Math.max(0, current - config.localBlocks + 1); j <= current; j++) forced.add(j);
  return [...forced].sort((a, b) => a - b);
}

/** Candidate selection blocks for the query at t: 0 .. floor(t / l'). */
export function candidateCount(t: number, config: Pick<NSAConfig, 'selectBlock'>): number {
  return selectionBlockOf(t, config) + 1;
}

/** Window keys [start, t] for the query at t: `max(0, t - w + 1) .. t`. */
export function windowStart(t: number, config: Pick<NSAConfig, 'window'>): number {
  return Math.max(0, t - config.window + 1);
}

/** Keys one query at position t reads: c(t) compressed + selected tokens <= t + window tokens. */
export function keysReadPerQuery(t: number, config: NSAConfig): { compressed: number; selected: number; window: number } {
  const blocks = Math.min(config.selectCount, candidateCount(t, config));
  // Upper bound: every selected block full except the current one, which holds t % l' + 1 tokens.
  const selected = Math.min((blocks - 1) * config.selectBlock + (t % config.selectBlock) + 1, t + 1);
  return { compressed: visibleCompressed(t, config), selected, window: t - windowStart(t, config) + 1 };
}

/** Packed sequences: validated sequence offsets and the matching compressed-block offsets. */
export interface VarlenLayout {
  /** Sequence start offsets, length S + 1, first 0, last = total tokens. */
  readonly tokenOffsets: Int32Array;
  /** Compressed-block start offsets, length S + 1 (compressedCount of each sequence, summed). */
  readonly compressedOffsets: Int32Array;
  /** Longest sequence. */
  readonly maxLength: number;
}

/** Validates `cuSeqlens` for `totalTokens` packed tokens and derives the compressed offsets. */
export function varlenLayout(cuSeqlens: ArrayLike<number>, totalTokens: number, config: Blocks): VarlenLayout {
  if (cuSeqlens.length < 2) {
    throw new NSAShapeError(`cuSeqlens must have at least 2 entries (got ${cuSeqlens.length})`);
  }
  if (cuSeqlens[0] !== 0) throw new NSAShapeError(`cuSeqlens[0] must be 0 (got ${cuSeqlens[0]})`);
  const last = cuSeqlens[cuSeqlens.length - 1];
  if (last !== totalTokens) {
    throw new NSAShapeError(`cuSeqlens must end at the packed length ${totalTokens} (got ${last})`);
  }
  const tokenOffsets = new Int32Array(cuSeqlens.length);
  const compressedOffsets = new Int32Array(cuSeqlens.length);
  let maxLength = 0;
  for (let s = 1; s < cuSeqlens.length; s++) {
    const a = cuSeqlens[s - 1];
    const b = cuSeqlens[s];
    if (!Number.isInteger(b) || b < a) {
      throw new NSAShapeError(`cuSeqlens must be non-decreasing integers (entry ${s} is ${b} after ${a})`);
    }
    tokenOffsets[s] = b;
    compressedOffsets[s] = compressedOffsets[s - 1] + compressedCount(b - a, config);
    maxLength = Math.max(maxLength, b - a);
  }
  return { tokenOffsets, compressedOffsets, maxLength };
}
