/**
 * C [M, N] = op(A) · op(B) on row-major float64 arrays. A is [M, K] ([K, M] when transposeA), B is
 * [K, N] ([N, K] when transposeB). The innermost loops run over contiguous memory and are
 * unrolled by four, so each load of C (or of A's row) serves four multiply-adds.
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
  if (transposeB && transposeA) return matmulKernel(a, transpose(b, N, K), M, K, N, true, false);
  return transposeB ? matmulNT(a, b, M, K, N) : matmulNN(a, b, M, K, N, transposeA);
}

/** C = A · Bᵀ: four dot products at a time share each load of A's row. */
function matmulNT(a: Float64Array, b: Float64Array, M: number, K: number, N: number): Float64Array {
  const c = new Float64Array(M * N);
  const N4 = N - (N % 4);
  for (let i = 0; i < M; i++) {
    const ai = i * K;
    const ci = i * N;
    for (let j = 0; j < N4; j += 4) {
      const b0 = j * K;
      const b1 = b0 + K;
      const b2 = b1 + K;
      const b3 = b2 + K;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let k = 0; k < K; k++) {
        const x = a[ai + k];
        s0 += x * b[b0 + k];
        s1 += x * b[b1 + k];
        s2 += x * b[b2 + k];
        s3 += x * b[b3 + k];
      }
      c[ci + j] = s0;
      c[ci + j + 1] = s1;
      c[ci + j + 2] = s2;
      c[ci + j + 3] = s3;
    }
    for (let j = N4; j < N; j++) {
      const bj = j * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += a[ai + k] * b[bj + k];
      c[ci + j] = s;
    }
  }
  return c;
}

/** C = op(A) · B, row by row of C (kept in cache), four rows of B per pass. */
function matmulNN(a: Float64Array, b: Float64Array, M: number, K: number, N: number, transposeA: boolean): Float64Array {
  const c = new Float64Array(M * N);
  const K4 = K - (K % 4);
  // Element (i, k) of op(A).
  const rowStride = transposeA ? 1 : K;
  const colStride = transposeA ? M : 1;
  for (let i = 0; i < M; i++) {
    const ci = i * N;
    const ai = i * rowStride;
    for (let k = 0; k < K4; k += 4) {
      const x0 = a[ai + k * colStride];
      const x1 = a[ai + (k + 1) * colStride];
      const x2 = a[ai + (k + 2) * colStride];
      const x3 = a[ai + (k + 3) * colStride];
      const b0 = k * N;
      const b1 = b0 + N;
      const b2 = b1 + N;
      const b3 = b2 + N;
      for (let j = 0; j < N; j++) c[ci + j] += x0 * b[b0 + j] + x1 * b[b1 + j] + x2 * b[b2 + j] + x3 * b[b3 + j];
    }
    for (let k = K4; k < K; k++) {
      const x = a[ai + k * colStride];
      const bk = k * N;
      for (let j = 0; j < N; j++) c[ci + j] += x * b[bk + j];
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
