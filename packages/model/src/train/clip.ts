import type { ModelBackend } from '@nsa/core';
import type { Gradients } from '../layers/context.js';

/** Global L2 norm of all gradients. */
export async function gradientNorm(ops: ModelBackend, grads: Gradients): Promise<number> {
  let sum = 0;
  for (const [, g] of grads.entries()) sum += await ops.sumOfSquares(g);
  return Math.sqrt(sum);
}

/** The factor that brings the global norm down to maxNorm (1 when it is already within; maxNorm 0 = no clipping). */
export function clipFactor(norm: number, maxNorm: number): number {
  return maxNorm > 0 && norm > maxNorm ? maxNorm / norm : 1;
}
