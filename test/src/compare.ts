import type { FloatDType } from '@nsa/core';

/** The spec's parity tolerances on relative L2 error against the float64 reference. */
export function tolerance(dtype: FloatDType): number {
  switch (dtype) {
    case 'float64':
      return 1e-10;
    case 'float32':
      return 1e-4;
    case 'float16':
    case 'bfloat16':
      return 2e-2;
  }
}

/**
 * ‖x − ref‖ / ‖ref‖. NaN or Inf anywhere gives Infinity (never passes); an all-zero reference
 * compares the absolute norm of x instead.
 */
export function relativeError(x: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (x.length !== ref.length) throw new Error(`length mismatch: ${x.length} vs ${ref.length}`);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) return Infinity;
    const d = x[i] - ref[i];
    diff += d * d;
    norm += ref[i] * ref[i];
  }
  return norm === 0 ? Math.sqrt(diff) : Math.sqrt(diff / norm);
}
