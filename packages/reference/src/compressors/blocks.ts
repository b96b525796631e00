// Where the compressed blocks of a [B, T, H, D] tensor come from: block i of a sequence reads its
// raw tokens [i*d, i*d + l) and is written to its packed row. Blocks never cross a sequence.
import { compressedCount, NSAShapeError, varlenLayout, type NSAConfig } from '@nsa/core';
import { fullSegments } from '../segments.js';

export type CompressConfig = Pick<NSAConfig, 'compressBlock' | 'compressStride'>;

/** x is [B, T, H, D]; with cuSeqlens, B = 1 and the T tokens are packed sequences. */
export interface CompressShape {
  readonly B: number;
  readonly T: number;
  readonly H: number;
  readonly D: number;
  readonly cuSeqlens?: ArrayLike<number>;
}

export interface CompressPlan {
  /** Compressed rows per batch row (summed over packed sequences). */
  readonly C: number;
  /** For each output row (flattened [B*C]), the flattened input row of its first token. */
  readonly firstToken: Int32Array;
}

export function compressPlan(config: CompressConfig, shape: CompressShape): CompressPlan {
  const { B, T, H, D } = shape;
  for (const [name, v] of [['B', B], ['T', T], ['H', H], ['D', D]] as const) {
    if (!Number.isInteger(v) || v < (name === 'T' ? 0 : 1)) throw new NSAShapeError(`${name} = ${v} must be a ${name === 'T' ? 'non-negative' : 'positive'} integer`);
  }
  let C: number;
  let segments;
  if (shape.cuSeqlens !== undefined) {
    if (B !== 1) throw new NSAShapeError(`varlen (cuSeqlens) needs B = 1, got ${B}`);
    const layout = varlenLayout(shape.cuSeqlens, T, config);
    C = layout.compressedOffsets[layout.compressedOffsets.length - 1];
    segments = fullSegments(1, T, C, layout);
  } else {
    C = compressedCount(T, config);
    segments = fullSegments(B, T, C);
  }
  const firstToken = new Int32Array(B * C);
  for (const seg of segments) {
    const blocks = compressedCount(seg.count, config);
    for (let i = 0; i < blocks; i++) firstToken[seg.cmpRow + i] = seg.kvRow + i * config.compressStride;
  }
  return { C, firstToken };
}
