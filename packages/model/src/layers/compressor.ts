import type { Tensor } from '@nsa/core';
import type { Gradients, LayerContext } from './context.js';
import { linear, linearBackward } from './linear.js';

/** What the compressor's backward needs from its forward. */
export interface CompressorSaved {
  readonly xShape: readonly number[];
  readonly unfolded: Tensor;
  readonly hidden: Tensor;
  readonly activated: Tensor;
}

/**
 * φ (NSA-SPEC.md, branch 1): each block of l raw tokens plus a learned [l, D] position table,
 * flattened to l*D, then Linear -> SiLU -> Linear to D. x [B, T, H, D] -> [B, C, H, D].
 * Parameters `${prefix}.pos`, `.w1`, `.w2`; shared by the heads of a layer.
 */
export async function compressorForward(
  ctx: LayerContext,
  prefix: string,
  x: Tensor,
): Promise<{ output: Tensor; saved: CompressorSaved }> {
  const { ops, config } = ctx;
  const [B, , H, D] = x.shape;
  const pos = ctx.param(`${prefix}.pos`);
  const blocks = await ops.blockUnfold(x, pos, config.nsa.compressStride);
  const C = blocks.shape[1];
  const unfolded = await ops.reshape(blocks, [B * C * H, config.nsa.compressBlock * D]);
  const hidden = await linear(ops, unfolded, ctx.param(`${prefix}.w1`));
  const activated = await ops.activation(hidden, 'silu');
  const out = await linear(ops, activated, ctx.param(`${prefix}.w2`));
  return { output: await ops.reshape(out, [B, C, H, D]), saved: { xShape: x.shape, unfolded, hidden, activated } };
}

/** Adds φ's parameter gradients and returns d(raw x). */
export async function compressorBackward(
  ctx: LayerContext,
  prefix: string,
  saved: CompressorSaved,
  dOutput: Tensor,
  grads: Gradients,
): Promise<Tensor> {
  const { ops, config } = ctx;
  const [B, C, H, D] = dOutput.shape;
  const dOut = await ops.reshape(dOutput, [B * C * H, D]);
  const dAct = await linearBackward(ops, saved.activated, ctx.param(`${prefix}.w2`), dOut, grads, `${prefix}.w2`);
  const dHidden = await ops.activationBackward(saved.hidden, 'silu', dAct);
  const dUnfolded = await linearBackward(ops, saved.unfolded, ctx.param(`${prefix}.w1`), dHidden, grads, `${prefix}.w1`);
  const dBlocks = await ops.reshape(dUnfolded, [B, C, H, config.nsa.compressBlock * D]);
  const pos = ctx.param(`${prefix}.pos`);
  const { dx, dPos } = await ops.blockUnfoldBackward(saved.xShape, pos, config.nsa.compressStride, dBlocks);
  await grads.add(ops, `${prefix}.pos`, dPos);
  return dx;
}
