import type { ModelBackend, Tensor } from '@nsa/core';
import type { ModelConfig } from '../config.js';

/** Rotary embedding of tokens [B, T, H, D] at positions start .. start + T - 1. */
export function tokenRotary(ops: ModelBackend, x: Tensor, config: ModelConfig, start: number, inverse: boolean): Promise<Tensor> {
  return ops.rotary(x, { start, stride: 1, base: config.ropeBase, inverse });
}

/**
 * Rotary embedding of compressed keys [B, C, H, D] whose first row is block `firstBlock`: block i
 * covers tokens i*d .. i*d + l - 1 and is rotated at its centre, i*d + (l - 1)/2 (see README).
 */
export function compressedRotary(
  ops: ModelBackend,
  x: Tensor,
  config: ModelConfig,
  firstBlock: number,
  inverse: boolean,
): Promise<Tensor> {
  const { compressBlock: l, compressStride: d } = config.nsa;
  return ops.rotary(x, { start: firstBlock * d + (l - 1) / 2, stride: d, base: config.ropeBase, inverse });
}
