// The learnable compressor φ (NSA-SPEC.md, "Branch 1"): add a learned intra-block position
// embedding to the block's l tokens, flatten to l*D, Linear -> SiLU -> Linear to D. One set of
// weights serves every KV head (keys and values each get their own set).
import { NSAShapeError } from '@nsa/core';
import { checkLength } from '../host-inputs.js';
import { compressPlan, type CompressConfig, type CompressShape } from './blocks.js';

/**
 * Weights, row-major float64 (l = compressBlock, D = head dim, F = hidden width):
 * - pos [l, D]: added to token r of the block (pos[r*D + e]);
 * - w1 [l*D, F], b1 [F]: the flattened block x[r*D + e] is input row r*D + e, so z = x·w1 + b1;
 * - w2 [F, D], b2 [D]: y = silu(z)·w2 + b2.
 */
export interface MLPCompressorWeights {
  readonly pos: Float64Array;
  readonly w1: Float64Array;
  readonly b1: Float64Array;
  readonly w2: Float64Array;
  readonly b2: Float64Array;
}

export interface MLPCompressorGradients {
  readonly dx: Float64Array;
  readonly dPos: Float64Array;
  readonly dW1: Float64Array;
  readonly dB1: Float64Array;
  readonly dW2: Float64Array;
  readonly dB2: Float64Array;
}

/** Fresh weights: uniform ±1/sqrt(fan-in) for w1, w2 and pos (scaled by 0.1), zero biases. */
export function createMLPCompressorWeights(blockSize: number, dim: number, hidden: number, random: () => number): MLPCompressorWeights {
  const uniform = (size: number, bound: number) => {
    const out = new Float64Array(size);
    for (let i = 0; i < size; i++) out[i] = (2 * random() - 1) * bound;
    return out;
  };
  return {
    pos: uniform(blockSize * dim, 0.1),
    w1: uniform(blockSize * dim * hidden, 1 / Math.sqrt(blockSize * dim)),
    b1: new Float64Array(hidden),
    w2: uniform(hidden * dim, 1 / Math.sqrt(hidden)),
    b2: new Float64Array(dim),
  };
}

function sigmoid(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

/** Hidden width F, after checking every weight's length for (l, D). */
function hiddenWidth(w: MLPCompressorWeights, l: number, D: number): number {
  const F = w.b1?.length ?? 0;
  if (F < 1) throw new NSAShapeError('MLP compressor b1 must hold the hidden width F >= 1');
  checkLength('pos', w.pos, [l, D]);
  checkLength('w1', w.w1, [l * D, F]);
  checkLength('w2', w.w2, [F, D]);
  checkLength('b2', w.b2, [D]);
  return F;
}

/** Fills xin [l*D] with head h of the l tokens from row `first` on, plus the position table. */
function gatherBlock(x: Float64Array, first: number, h: number, H: number, D: number, l: number, pos: Float64Array, xin: Float64Array): void {
  for (let r = 0; r < l; r++) {
    const src = ((first + r) * H + h) * D;
    for (let e = 0; e < D; e++) xin[r * D + e] = x[src + e] + pos[r * D + e];
  }
}

/** z = xin·w1 + b1 into z [F]. */
function firstLayer(xin: Float64Array, w: MLPCompressorWeights, F: number, z: Float64Array): void {
  z.set(w.b1);
  for (let k = 0; k < xin.length; k++) {
    const xk = xin[k];
    const base = k * F;
    for (let j = 0; j < F; j++) z[j] += xk * w.w1[base + j];
  }
}

/** x [B, T, H, D] -> [B, C, H, D] (packed per sequence with cuSeqlens). */
export function mlpCompress(x: Float64Array, weights: MLPCompressorWeights, config: CompressConfig, shape: CompressShape): Float64Array {
  const { B, T, H, D } = shape;
  checkLength('x', x, [B, T, H, D]);
  const l = config.compressBlock;
  const F = hiddenWidth(weights, l, D);
  const { C, firstToken } = compressPlan(config, shape);
  const out = new Float64Array(B * C * H * D);
  const xin = new Float64Array(l * D);
  const z = new Float64Array(F);
  for (let row = 0; row < firstToken.length; row++) {
    for (let h = 0; h < H; h++) {
      gatherBlock(x, firstToken[row], h, H, D, l, weights.pos, xin);
      firstLayer(xin, weights, F, z);
      const dst = (row * H + h) * D;
      for (let e = 0; e < D; e++) out[dst + e] = weights.b2[e];
      for (let j = 0; j < F; j++) {
        const a = z[j] * sigmoid(z[j]);
        for (let e = 0; e < D; e++) out[dst + e] += a * weights.w2[j * D + e];
      }
    }
  }
  return out;
}

/** Backward of mlpCompress: dy [B, C, H, D] -> gradients of x and every weight. */
export function mlpCompressBackward(
  x: Float64Array,
  weights: MLPCompressorWeights,
  dy: Float64Array,
  config: CompressConfig,
  shape: CompressShape,
): MLPCompressorGradients {
  const { B, T, H, D } = shape;
  checkLength('x', x, [B, T, H, D]);
  const l = config.compressBlock;
  const F = hiddenWidth(weights, l, D);
  const { C, firstToken } = compressPlan(config, shape);
  checkLength('dy', dy, [B, C, H, D]);
  const { w1, w2 } = weights;
  const grads: MLPCompressorGradients = {
    dx: new Float64Array(x.length),
    dPos: new Float64Array(l * D),
    dW1: new Float64Array(w1.length),
    dB1: new Float64Array(F),
    dW2: new Float64Array(w2.length),
    dB2: new Float64Array(D),
  };
  const { dx, dPos, dW1, dB1, dW2, dB2 } = grads;
  const xin = new Float64Array(l * D);
  const z = new Float64Array(F);
  const dz = new Float64Array(F);
  for (let row = 0; row < firstToken.length; row++) {
    for (let h = 0; h < H; h++) {
      gatherBlock(x, firstToken[row], h, H, D, l, weights.pos, xin);
      firstLayer(xin, weights, F, z);
      const src = (row * H + h) * D;
      for (let e = 0; e < D; e++) dB2[e] += dy[src + e];
      for (let j = 0; j < F; j++) {
        const s = sigmoid(z[j]);
        const a = z[j] * s;
        let da = 0;
        for (let e = 0; e < D; e++) {
          dW2[j * D + e] += a * dy[src + e];
          da += w2[j * D + e] * dy[src + e];
        }
        // d silu(z)/dz = s (1 + z (1 - s)).
        dz[j] = da * s * (1 + z[j] * (1 - s));
        dB1[j] += dz[j];
      }
      for (let r = 0; r < l; r++) {
        const dst = ((firstToken[row] + r) * H + h) * D;
        for (let e = 0; e < D; e++) {
          const k = r * D + e;
          const base = k * F;
          let g = 0;
          for (let j = 0; j < F; j++) {
            dW1[base + j] += xin[k] * dz[j];
            g += w1[base + j] * dz[j];
          }
          dPos[k] += g;
          dx[dst + e] += g;
        }
      }
    }
  }
  return grads;
}
