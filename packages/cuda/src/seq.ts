// Builds the sequence table every kernel reads (native/tile.cuh, SeqTable):
// qStart[S+1], kBase[S], cBase[S], pos0[S], selBase[S+1].
import { compressedCount, type NSAConfig, type VarlenLayout } from '@nsa/core';

export interface SeqLayout {
  readonly host: Int32Array;
  readonly S: number;
  readonly rows: number;
  readonly maxKeys: number;
}

export interface SeqSpec {
  /** Query rows of each sequence. */
  readonly queries: readonly number[];
  /** First raw key row / compressed row of each sequence. */
  readonly keyBase: readonly number[];
  readonly cmpBase: readonly number[];
  /** Absolute position of each sequence's first query (keys before it are cached). */
  readonly pos0: readonly number[];
}

export function buildSeq(spec: SeqSpec, selectBlock: number): SeqLayout {
  const S = spec.queries.length;
  const host = new Int32Array(5 * S + 2);
  let rows = 0;
  let maxKeys = 0;
  let sel = 0;
  for (let s = 0; s < S; s++) {
    host[s] = rows;
    rows += spec.queries[s];
    host[S + 1 + s] = spec.keyBase[s];
    host[2 * S + 1 + s] = spec.cmpBase[s];
    host[3 * S + 1 + s] = spec.pos0[s];
    const keys = spec.pos0[s] + spec.queries[s];
    maxKeys = Math.max(maxKeys, keys);
    host[4 * S + 1 + s] = sel;
    sel += Math.ceil(keys / selectBlock);
  }
  host[S] = rows;
  host[5 * S + 1] = sel;
  return { host, S, rows, maxKeys };
}

/** B sequences of T tokens, or packed varlen sequences (training / prefill: pos0 = 0). */
export function trainingSeq(B: number, T: number, config: Pick<NSAConfig, 'compressBlock' | 'compressStride' | 'selectBlock'>, varlen?: VarlenLayout): SeqLayout {
  if (varlen) {
    const S = varlen.tokenOffsets.length - 1;
    const queries: number[] = [];
    const keyBase: number[] = [];
    const cmpBase: number[] = [];
    for (let s = 0; s < S; s++) {
      queries.push(varlen.tokenOffsets[s + 1] - varlen.tokenOffsets[s]);
      keyBase.push(varlen.tokenOffsets[s]);
      cmpBase.push(varlen.compressedOffsets[s]);
    }
    return buildSeq({ queries, keyBase, cmpBase, pos0: new Array(S).fill(0) }, config.selectBlock);
  }
  const C = compressedCount(T, config);
  const range = Array.from({ length: B }, (_, b) => b);
  return buildSeq(
    { queries: range.map(() => T), keyBase: range.map((b) => b * T), cmpBase: range.map((b) => b * C), pos0: range.map(() => 0) },
    config.selectBlock,
  );
}
