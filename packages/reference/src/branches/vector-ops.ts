// The inner loops of attention on float64 rows. V8 does not vectorise, so speed comes from
// independent partial sums (to hide add latency) and from loading a shared row once for four
// query heads instead of four times (the heads of a GQA group all read the same key row).

/** a[aOff..+n) · b[bOff..+n) with four independent partial sums. */
export function dot(a: Float64Array, aOff: number, b: Float64Array, bOff: number, n: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let d = 0;
  for (; d + 3 < n; d += 4) {
    s0 += a[aOff + d] * b[bOff + d];
    s1 += a[aOff + d + 1] * b[bOff + d + 1];
    s2 += a[aOff + d + 2] * b[bOff + d + 2];
    s3 += a[aOff + d + 3] * b[bOff + d + 3];
  }
  for (; d < n; d++) s0 += a[aOff + d] * b[bOff + d];
  return s0 + s1 + (s2 + s3);
}

/**
 * Four dot products against one shared row: out[o + m*oStride] = a_m · b for the rows
 * a_m = a[aOff + m*n ..+n), m = 0..3 (four consecutive heads).
 */
export function dot4(a: Float64Array, aOff: number, b: Float64Array, bOff: number, n: number, out: Float64Array, o: number, oStride: number): void {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  const a1 = aOff + n;
  const a2 = aOff + 2 * n;
  const a3 = aOff + 3 * n;
  for (let d = 0; d < n; d++) {
    const x = b[bOff + d];
    s0 += a[aOff + d] * x;
    s1 += a[a1 + d] * x;
    s2 += a[a2 + d] * x;
    s3 += a[a3 + d] * x;
  }
  out[o] = s0;
  out[o + oStride] = s1;
  out[o + 2 * oStride] = s2;
  out[o + 3 * oStride] = s3;
}

/** y[yOff..+n) += c * x[xOff..+n), unrolled by four. */
export function axpy(y: Float64Array, yOff: number, c: number, x: Float64Array, xOff: number, n: number): void {
  let d = 0;
  for (; d + 3 < n; d += 4) {
    y[yOff + d] += c * x[xOff + d];
    y[yOff + d + 1] += c * x[xOff + d + 1];
    y[yOff + d + 2] += c * x[xOff + d + 2];
    y[yOff + d + 3] += c * x[xOff + d + 3];
  }
  for (; d < n; d++) y[yOff + d] += c * x[xOff + d];
}

/** Four rows y_m = y[yOff + m*n ..+n) each get y_m += c_m * x (one shared x row). */
export function axpy4(
  y: Float64Array,
  yOff: number,
  c0: number,
  c1: number,
  c2: number,
  c3: number,
  x: Float64Array,
  xOff: number,
  n: number,
): void {
  const y1 = yOff + n;
  const y2 = yOff + 2 * n;
  const y3 = yOff + 3 * n;
  for (let d = 0; d < n; d++) {
    const v = x[xOff + d];
    y[yOff + d] += c0 * v;
    y[y1 + d] += c1 * v;
    y[y2 + d] += c2 * v;
    y[y3 + d] += c3 * v;
  }
}

/** One row y += sum_m c_m * x_m over four rows x_m = x[xOff + m*n ..+n) (y loaded once). */
export function sum4(
  y: Float64Array,
  yOff: number,
  c0: number,
  c1: number,
  c2: number,
  c3: number,
  x: Float64Array,
  xOff: number,
  n: number,
): void {
  const x1 = xOff + n;
  const x2 = xOff + 2 * n;
  const x3 = xOff + 3 * n;
  for (let d = 0; d < n; d++) {
    y[yOff + d] += c0 * x[xOff + d] + c1 * x[x1 + d] + (c2 * x[x2 + d] + c3 * x[x3 + d]);
  }
}
