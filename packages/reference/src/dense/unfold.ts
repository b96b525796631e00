/**
 * x [B, T, H, D] -> [B, C, H, l*D]: block i holds tokens i*stride .. i*stride + l - 1, each plus
 * its row of pos [l, D] (the compressor's intra-block position embedding).
 */
export function blockUnfoldKernel(
  x: Float64Array,
  shape: readonly number[],
  pos: Float64Array,
  l: number,
  stride: number,
): { y: Float64Array; C: number } {
  const [B, T, H, D] = shape;
  const C = T >= l ? Math.floor((T - l) / stride) + 1 : 0;
  const y = new Float64Array(B * C * H * l * D);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let h = 0; h < H; h++) {
        const o = ((b * C + c) * H + h) * l * D;
        for (let j = 0; j < l; j++) {
          const src = ((b * T + c * stride + j) * H + h) * D;
          for (let e = 0; e < D; e++) y[o + j * D + e] = x[src + e] + pos[j * D + e];
        }
      }
    }
  }
  return { y, C };
}

/** Gradients of `blockUnfoldKernel` for x and pos. */
export function blockUnfoldBackwardKernel(
  shape: readonly number[],
  l: number,
  stride: number,
  dy: Float64Array,
): { dx: Float64Array; dPos: Float64Array } {
  const [B, T, H, D] = shape;
  const C = T >= l ? Math.floor((T - l) / stride) + 1 : 0;
  const dx = new Float64Array(B * T * H * D);
  const dPos = new Float64Array(l * D);
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      for (let h = 0; h < H; h++) {
        const o = ((b * C + c) * H + h) * l * D;
        for (let j = 0; j < l; j++) {
          const dst = ((b * T + c * stride + j) * H + h) * D;
          for (let e = 0; e < D; e++) {
            const g = dy[o + j * D + e];
            dx[dst + e] += g;
            dPos[j * D + e] += g;
          }
        }
      }
    }
  }
  return { dx, dPos };
}
