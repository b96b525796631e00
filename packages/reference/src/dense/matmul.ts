/**
 * C [M, N] = op(A) · op(B) on row-major float64 arrays. A is [M, K] ([K, M] when transposeA), B is
 * [K, N] ([N, K] when transposeB). Loop orders keep the innermost loop on contiguous memory.
 */
export function matmulKernel(
  a: Float64Array,
  b: Float64Array,
  M: number,
  K: number,
  N: number,
  transposeA: boolean,
  transposeB: boolean,
): Float64Array {
  const c = new Float64Array(M * N);
  if (transposeB && transposeA) {
    // Rare: make B plain and fall through to the transposeA case.
    return matmulKernel(a, transpose(b, N, K), M, K, N, true, false);
  }
  if (transposeB) {
    for (let i = 0; i < M; i++) {
      const ai = i * K;
      for (let j = 0; j < N; j++) {
        const bj = j * K;
        let sum = 0;
        for (let k = 0; k < K; k++) sum += a[ai + k] * b[bj + k];
        c[i * N + j] = sum;
      }
    }
    return c;
  }
  for (let k = 0; k < K; k++) {
    const bk = k * N;
    for (let i = 0; i < M; i++) {
      const aik = transposeA ? a[k * M + i] : a[i * K + k];
      if (aik === 0) continue;
      const ci = i * N;
      for (let j = 0; j < N; j++) c[ci + j] += aik * b[bk + j];
    }
  }
  return c;
}

/** [R, C] -> [C, R]. */
export function transpose(x: Float64Array, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) y[c * rows + r] = x[r * cols + c];
  return y;
}
