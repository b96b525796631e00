import type { AdamWStep } from '@nsa/core';

/** One AdamW step in place (Loshchilov & Hutter: decay applied to the weights, not the gradient). */
export function adamwKernel(
  param: Float64Array,
  grad: Float64Array,
  m: Float64Array,
  v: Float64Array,
  options: AdamWStep,
): void {
  const { lr, beta1, beta2, eps, weightDecay, step } = options;
  const gradScale = options.gradScale ?? 1;
  const c1 = 1 - Math.pow(beta1, step);
  const c2 = 1 - Math.pow(beta2, step);
  const decay = 1 - lr * weightDecay;
  for (let i = 0; i < param.length; i++) {
    const g = grad[i] * gradScale;
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    param[i] = param[i] * decay - (lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + eps);
  }
}
