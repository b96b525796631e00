import type { ModelBackend, Tensor } from '@nsa/core';
import type { Gradients } from './context.js';

/** y [M, out] = x [M, in] · Wᵀ, with W stored [out, in] (no bias anywhere in this model). */
export function linear(ops: ModelBackend, x: Tensor, w: Tensor): Promise<Tensor> {
  return ops.matmul(x, w, { transposeB: true });
}

/** Adds dW = dyᵀ x to `grads` and returns dx = dy · W. */
export async function linearBackward(
  ops: ModelBackend,
  x: Tensor,
  w: Tensor,
  dy: Tensor,
  grads: Gradients,
  name: string,
): Promise<Tensor> {
  await grads.add(ops, name, await ops.matmul(dy, x, { transposeA: true }));
  return ops.matmul(dy, w);
}
