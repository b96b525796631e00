// Branch 2's block choice (NSA-SPEC.md, "Branch 2 — selection", steps 2-5).
import { forcedBlocks, NSAShapeError, overlapWeight, selectionBlockOf, type NSAConfig } from '@nsa/core';

type BlockConfig = Pick<NSAConfig, 'compressBlock' | 'compressStride' | 'selectBlock'>;

/**
 * Step 2: adds s[j] = sum_i p[i] * overlapWeight(i, j) into `scores` for the `c` visible
 * compressed blocks' probabilities p[i] = probs[off + i]. Every block a visible compressed block
 * touches is causal (j <= floor(t / l')), so `scores` needs floor(t / l') + 1 entries.
 */
export function addSelectionScores(probs: Float64Array, off: number, c: number, config: BlockConfig, scores: Float64Array): void {
  const perCmp = config.compressBlock / config.compressStride;
  const perSel = config.selectBlock / config.compressStride;
  for (let i = 0; i < c; i++) {
    const first = Math.floor(i / perSel);
    const last = Math.floor((i + perCmp - 1) / perSel);
    for (let j = first; j <= last; j++) scores[j] += probs[off + i] * overlapWeight(i, j, config);
  }
}

/**
 * Steps 4-5: the forced blocks plus the highest-scoring other candidates (ties -> lower index),
 * n in all or every candidate if fewer, written ascending and -1 padded to out[off..off+n).
 * `taken` is scratch of at least floor(t / l') + 1 entries.
 */
export function chooseBlocks(
  t: number,
  scores: Float64Array,
  config: Pick<NSAConfig, 'selectBlock' | 'selectCount' | 'initialBlocks' | 'localBlocks'>,
  taken: Uint8Array,
  forced: readonly number[],
  out: Int32Array,
  off: number,
): void {
  const candidates = selectionBlockOf(t, config) + 1;
  const n = config.selectCount;
  taken.fill(0, 0, candidates);
  let chosen = 0;
  for (const j of forced) {
    taken[j] = 1;
    chosen++;
  }
  const want = Math.min(n, candidates);
  while (chosen < want) {
    let best = -1;
    for (let j = 0; j < candidates; j++) {
      // Strictly greater: the first (lowest) index wins ties.
      if (taken[j] === 0 && (best < 0 || scores[j] > scores[best])) best = j;
    }
    taken[best] = 1;
    chosen++;
  }
  let k = 0;
  for (let j = 0; j < candidates; j++) if (taken[j] === 1) out[off + k++] = j;
  for (; k < n; k++) out[off + k] = -1;
}

/** Forced blocks of query position t (core's rule); a small cache keyed by the current block. */
export class ForcedBlocks {
  #block = -1;
  #list: number[] = [];
  constructor(private readonly config: Pick<NSAConfig, 'selectBlock' | 'selectCount' | 'initialBlocks' | 'localBlocks'>) {}

  at(t: number): readonly number[] {
    const block = selectionBlockOf(t, this.config);
    if (block !== this.#block) {
      this.#block = block;
      this.#list = forcedBlocks(t, this.config);
    }
    return this.#list;
  }
}

/**
 * Checks caller-supplied blocks for the query at position t: each entry is -1 or a causal block
 * 0..floor(t / l'), without repeats. `where` names the entry for the error message.
 */
export function checkBlockIndices(
  indices: Int32Array,
  off: number,
  n: number,
  t: number,
  config: Pick<NSAConfig, 'selectBlock'>,
  taken: Uint8Array,
  where: () => string,
): void {
  const last = selectionBlockOf(t, config);
  taken.fill(0, 0, last + 1);
  for (let k = 0; k < n; k++) {
    const j = indices[off + k];
    if (j === -1) continue;
    if (!Number.isInteger(j) || j < 0 || j > last) {
      throw new NSAShapeError(
        `blockIndices[${where()}] slot ${k} is ${j}: the query at position ${t} may use only -1 or causal blocks 0..${last}`,
      );
    }
    if (taken[j] === 1) throw new NSAShapeError(`blockIndices[${where()}] lists block ${j} twice`);
    taken[j] = 1;
  }
}
