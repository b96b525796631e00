/** RMSNorm over rows of D: y = x / sqrt(mean(x²) + eps) * w. */
export function rmsNormKernel(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  const D = w.length;
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length; r += D) {
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[r + i] * x[r + i];
    const inv = 1 / Math.sqrt(ss / D + eps);
    for (let i = 0; i < D; i++) y[r + i] = x[r + i] * inv * w[i];
  }
  return y;
}

/** Gradients of `rmsNormKernel` for x and w. */
export function rmsNormBackwardKernel(
  x: Float64Array,
  w: Float64Array,
  eps: number,
  dy: Float64Array,
): { dx: Float64Array; dw: Float64Array } {
  const D = w.length;
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(D);
  for (let r = 0; r < x.length; r += D) {
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[r + i] * x[r + i];
    const inv = 1 / Math.sqrt(ss / D + eps);
    // dx = inv * (g - x * inv² * mean(g·x)) with g = dy * w.
    let gx = 0;
    for (let i = 0; i < D; i++) {
      const g = dy[r + i] * w[i];
      gx += g * x[r + i];
      dw[i] += dy[r + i] * x[r + i] * inv;
    }
    const k = (inv * inv * gx) / D;
    for (let i = 0; i < D; i++) dx[r + i] = inv * (dy[r + i] * w[i] - x[r + i] * k);
  }
  return { dx, dw };
}
