/**
 * Rotary embedding on x [B, T, H, D]: pairs (i, i + D/2) of token t rotated by angle
 * pos(t) * base^(-2i/D) with pos(t) = start + stride * t; `inverse` rotates by the negative angle.
 */
export function rotaryKernel(
  x: Float64Array,
  shape: readonly number[],
  start: number,
  stride: number,
  base: number,
  inverse: boolean,
): Float64Array {
  const [B, T, H, D] = shape;
  const half = D / 2;
  const y = new Float64Array(x.length);
  const cos = new Float64Array(half);
  const sin = new Float64Array(half);
  const sign = inverse ? -1 : 1;
  for (let t = 0; t < T; t++) {
    const pos = start + stride * t;
    for (let i = 0; i < half; i++) {
      const angle = pos * Math.pow(base, (-2 * i) / D);
      cos[i] = Math.cos(angle);
      sin[i] = sign * Math.sin(angle);
    }
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        const o = ((b * T + t) * H + h) * D;
        for (let i = 0; i < half; i++) {
          const x1 = x[o + i];
          const x2 = x[o + i + half];
          y[o + i] = x1 * cos[i] - x2 * sin[i];
          y[o + i + half] = x1 * sin[i] + x2 * cos[i];
        }
      }
    }
  }
  return y;
}
