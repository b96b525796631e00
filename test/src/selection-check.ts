import { overlapWeight, selectionBlockOf, visibleCompressed, type NSAConfig } from '@nsa/core';

/**
 * Checks a backend's block choice without demanding identical indices: near-tied scores may
 * legitimately pick different blocks in lower precision (NSA-SPEC.md, tolerances). For each
 * (row, KV head), the group score S summed over the chosen blocks must match the sum over the
 * blocks the reference chose (the caller bounds `worst`). S is recomputed here in float64,
 * independently of the reference's code.
 */
export function selectionMismatch(
  config: NSAConfig,
  q: Float64Array,
  kCmp: Float64Array,
  B: number,
  T: number,
  C: number,
  chosen: ArrayLike<number>,
  reference: ArrayLike<number>,
  cuSeqlens?: readonly number[],
): { rowsDiffering: number; rows: number; worst: number } {
  const { heads: HQ, kvHeads: H, headDimK: Dk, selectCount: n, scale } = config;
  const G = HQ / H;
  const starts = cuSeqlens ?? [0, T];
  let rowsDiffering = 0;
  let worst = 0;
  let cmpBase = 0;
  const scores = new Float64Array(Math.ceil(T / config.selectBlock) + 1);
  const logits = new Float64Array(C + 1);
  for (let b = 0; b < B; b++) {
    for (let s = 1; s < starts.length; s++) {
      const seqStart = starts[s - 1];
      for (let pos = seqStart; pos < starts[s]; pos++) {
        const t = pos - seqStart;
        for (let h = 0; h < H; h++) {
          const off = ((b * T + pos) * H + h) * n;
          let same = true;
          for (let k = 0; k < n; k++) same &&= chosen[off + k] === reference[off + k];
          if (same) continue;
          scores.fill(0);
          const c = visibleCompressed(t, config);
          for (let g = 0; g < G; g++) {
            const qOff = ((b * T + pos) * HQ + h * G + g) * Dk;
            let max = -Infinity;
            for (let i = 0; i < c; i++) {
              const kOff = ((b * C + cmpBase + i) * H + h) * Dk;
              let dot = 0;
              for (let e = 0; e < Dk; e++) dot += q[qOff + e] * kCmp[kOff + e];
              logits[i] = dot * scale;
              max = Math.max(max, logits[i]);
            }
            let sum = 0;
            for (let i = 0; i < c; i++) sum += (logits[i] = Math.exp(logits[i] - max));
            for (let i = 0; i < c; i++) {
              for (let j = 0; j <= selectionBlockOf(t, config); j++) scores[j] += (logits[i] / sum) * overlapWeight(i, j, config);
            }
          }
          let got = 0;
          let want = 0;
          for (let k = 0; k < n; k++) {
            if (chosen[off + k] >= 0) got += scores[chosen[off + k]];
            if (reference[off + k] >= 0) want += scores[reference[off + k]];
          }
          const rel = Math.abs(got - want) / Math.max(want, 1e-12);
          worst = Math.max(worst, rel);
          rowsDiffering++;
        }
      }
      if (cuSeqlens) cmpBase += visibleCompressed(starts[s] - seqStart - 1, config);
    }
  }
  return { rowsDiffering, rows: B * T * H, worst };
}
