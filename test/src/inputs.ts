import {
  compressedCount,
  forcedBlocks,
  roundToDType,
  selectionBlockOf,
  SeededRandom,
  varlenLayout,
  type FloatDType,
  type NSAConfig,
} from '@nsa/core';

/** Host values of one NSA call, already rounded to the case's dtype so both sides see the same numbers. */
export interface NSAHostValues {
  q: Float64Array;
  kCmp: Float64Array;
  vCmp: Float64Array;
  kSlc: Float64Array;
  vSlc: Float64Array;
  kWin: Float64Array;
  vWin: Float64Array;
  gates: Float64Array;
  dOutput: Float64Array;
  C: number;
}

function rounded(values: Float64Array, dtype: FloatDType): Float64Array {
  for (let i = 0; i < values.length; i++) values[i] = roundToDType(values[i], dtype);
  return values;
}

/** Fresh random inputs (never zeros): normal q/k/v, gates in (0.05, 1), a normal dOutput. */
export function nsaValues(config: NSAConfig, B: number, T: number, dtype: FloatDType, seed: number, cuSeqlens?: readonly number[]): NSAHostValues {
  const rng = new SeededRandom(seed);
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv } = config;
  const C = cuSeqlens ? varlenLayout(cuSeqlens, T, config).compressedOffsets.at(-1)! : compressedCount(T, config);
  const draw = (count: number, std = 1) => rounded(rng.normals(count, std), dtype);
  return {
    q: draw(B * T * HQ * Dk),
    kCmp: draw(B * C * H * Dk),
    vCmp: draw(B * C * H * Dv),
    kSlc: draw(B * T * H * Dk),
    vSlc: draw(B * T * H * Dv),
    kWin: draw(B * T * H * Dk),
    vWin: draw(B * T * H * Dv),
    gates: rounded(rng.uniforms(B * T * HQ * 3, 0.05, 1), dtype),
    dOutput: draw(B * T * HQ * Dv),
    C,
  };
}

/** Random valid blockIndices [B, T, H, n]: the forced blocks plus random other causal blocks, ascending, -1 padded. */
export function randomBlockIndices(config: NSAConfig, B: number, T: number, seed: number, cuSeqlens?: readonly number[]): Int32Array {
  const rng = new SeededRandom(seed);
  const { kvHeads: H, selectCount: n } = config;
  const out = new Int32Array(B * T * H * n);
  const starts = cuSeqlens ?? [0, T];
  for (let b = 0; b < B; b++) {
    for (let s = 1; s < starts.length; s++) {
      for (let pos = starts[s - 1]; pos < starts[s]; pos++) {
        const t = pos - starts[s - 1];
        const candidates = selectionBlockOf(t, config) + 1;
        for (let h = 0; h < H; h++) {
          const chosen = new Set(forcedBlocks(t, config));
          const want = Math.min(n, candidates);
          while (chosen.size < want) chosen.add(rng.int(candidates));
          const row = [...chosen].sort((a, c) => a - c);
          const off = ((b * T + pos) * H + h) * n;
          for (let k = 0; k < n; k++) out[off + k] = k < row.length ? row[k] : -1;
        }
      }
    }
  }
  return out;
}
