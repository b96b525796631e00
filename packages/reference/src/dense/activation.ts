import type { ActivationKind } from '@nsa/core';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** Elementwise activation (gelu is the tanh approximation). */
export function activationKernel(x: Float64Array, kind: ActivationKind): Float64Array {
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (kind === 'sigmoid') y[i] = sigmoid(v);
    else if (kind === 'silu') y[i] = v * sigmoid(v);
    else y[i] = 0.5 * v * (1 + Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)));
  }
  return y;
}

/** d(activation)/dx · dy. */
export function activationBackwardKernel(x: Float64Array, kind: ActivationKind, dy: Float64Array): Float64Array {
  const dx = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    let d: number;
    if (kind === 'sigmoid') {
      const s = sigmoid(v);
      d = s * (1 - s);
    } else if (kind === 'silu') {
      const s = sigmoid(v);
      d = s * (1 + v * (1 - s));
    } else {
      const u = SQRT_2_OVER_PI * (v + 0.044715 * v * v * v);
      const th = Math.tanh(u);
      d = 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * v * v);
    }
    dx[i] = d * dy[i];
  }
  return dx;
}

/** silu(gate) * up. */
export function swigluKernel(gate: Float64Array, up: Float64Array): Float64Array {
  const y = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    y[i] = (g / (1 + Math.exp(-g))) * up[i];
  }
  return y;
}

export function swigluBackwardKernel(
  gate: Float64Array,
  up: Float64Array,
  dy: Float64Array,
): { dGate: Float64Array; dUp: Float64Array } {
  const dGate = new Float64Array(gate.length);
  const dUp = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    const s = sigmoid(g);
    dUp[i] = g * s * dy[i];
    dGate[i] = s * (1 + g * (1 - s)) * up[i] * dy[i];
  }
  return { dGate, dUp };
}
