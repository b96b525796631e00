// The parameter-free compressor φ: each compressed block is the average of its l raw tokens.
import { checkLength } from '../host-inputs.js';
import { compressPlan, type CompressConfig, type CompressShape } from './blocks.js';

/** x [B, T, H, D] -> [B, C, H, D] (packed per sequence with cuSeqlens). */
export function meanCompress(x: Float64Array, config: CompressConfig, shape: CompressShape): Float64Array {
  const { B, T, H, D } = shape;
  checkLength('x', x, [B, T, H, D]);
  const { C, firstToken } = compressPlan(config, shape);
  const l = config.compressBlock;
  const width = H * D;
  const out = new Float64Array(B * C * width);
  for (let row = 0; row < firstToken.length; row++) {
    const dst = row * width;
    for (let r = 0; r < l; r++) {
      const src = (firstToken[row] + r) * width;
      for (let e = 0; e < width; e++) out[dst + e] += x[src + e];
    }
    for (let e = 0; e < width; e++) out[dst + e] /= l;
  }
  return out;
}

/** Backward of meanCompress: dy [B, C, H, D] -> dx [B, T, H, D]. */
export function meanCompressBackward(dy: Float64Array, config: CompressConfig, shape: CompressShape): Float64Array {
  const { B, T, H, D } = shape;
  const { C, firstToken } = compressPlan(config, shape);
  checkLength('dy', dy, [B, C, H, D]);
  const l = config.compressBlock;
  const width = H * D;
  const dx = new Float64Array(B * T * width);
  for (let row = 0; row < firstToken.length; row++) {
    const src = row * width;
    for (let r = 0; r < l; r++) {
      const dst = (firstToken[row] + r) * width;
      for (let e = 0; e < width; e++) dx[dst + e] += dy[src + e] / l;
    }
  }
  return dx;
}
