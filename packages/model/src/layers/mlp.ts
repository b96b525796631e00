import type { Tensor } from '@nsa/core';
import type { Gradients, LayerContext } from './context.js';
import { sum } from './context.js';
import { linear, linearBackward } from './linear.js';

export interface MLPSaved {
  readonly x: Tensor;
  readonly gate: Tensor;
  readonly up: Tensor;
  readonly act: Tensor;
}

/** SwiGLU: Wdown (silu(Wgate x) * Wup x). x [M, D] -> [M, D]. */
export async function mlpForward(ctx: LayerContext, prefix: string, x: Tensor): Promise<{ output: Tensor; saved: MLPSaved }> {
  const { ops } = ctx;
  const gate = await linear(ops, x, ctx.param(`${prefix}.wGate`));
  const up = await linear(ops, x, ctx.param(`${prefix}.wUp`));
  const act = await ops.swiglu(gate, up);
  const output = await linear(ops, act, ctx.param(`${prefix}.wDown`));
  return { output, saved: { x, gate, up, act } };
}

export async function mlpBackward(
  ctx: LayerContext,
  prefix: string,
  saved: MLPSaved,
  dy: Tensor,
  grads: Gradients,
): Promise<Tensor> {
  const { ops } = ctx;
  const dAct = await linearBackward(ops, saved.act, ctx.param(`${prefix}.wDown`), dy, grads, `${prefix}.wDown`);
  const { dGate, dUp } = await ops.swigluBackward(saved.gate, saved.up, dAct);
  const dx1 = await linearBackward(ops, saved.x, ctx.param(`${prefix}.wGate`), dGate, grads, `${prefix}.wGate`);
  const dx2 = await linearBackward(ops, saved.x, ctx.param(`${prefix}.wUp`), dUp, grads, `${prefix}.wUp`);
  return sum(ops, [dx1, dx2]);
}
