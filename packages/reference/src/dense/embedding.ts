/** Rows of table [V, D] at ids -> [M, D]. */
export function embeddingKernel(table: Float64Array, ids: Int32Array, D: number): Float64Array {
  const y = new Float64Array(ids.length * D);
  for (let r = 0; r < ids.length; r++) y.set(table.subarray(ids[r] * D, ids[r] * D + D), r * D);
  return y;
}

/** dy [M, D] scatter-added into [vocab, D] at ids. */
export function embeddingBackwardKernel(ids: Int32Array, dy: Float64Array, vocab: number, D: number): Float64Array {
  const dTable = new Float64Array(vocab * D);
  for (let r = 0; r < ids.length; r++) {
    const o = ids[r] * D;
    for (let i = 0; i < D; i++) dTable[o + i] += dy[r * D + i];
  }
  return dTable;
}
