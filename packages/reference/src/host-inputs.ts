// The operator's inputs as plain float64 arrays (token-major, row-major, like the tensors).
import { compressedCount, NSAShapeError, varlenLayout, type NSAConfig, type VarlenLayout } from '@nsa/core';
import { fullSegments, type Segment } from './segments.js';

/** q [B,T,HQ,Dk]; kCmp [B,C,H,Dk]; vCmp [B,C,H,Dv]; kSlc/kWin [B,T,H,Dk]; vSlc/vWin [B,T,H,Dv]; gates [B,T,HQ,3]. */
export interface NSAHostInputs {
  readonly q: Float64Array;
  readonly kCmp: Float64Array;
  readonly vCmp: Float64Array;
  readonly kSlc: Float64Array;
  readonly vSlc: Float64Array;
  readonly kWin: Float64Array;
  readonly vWin: Float64Array;
  readonly gates: Float64Array;
}

/** Batch and length of a host call; with cuSeqlens, B = 1 and T is the packed length. */
export interface NSAHostShape {
  readonly B: number;
  readonly T: number;
  readonly cuSeqlens?: ArrayLike<number>;
}

/** Sizes of a host call and the segments to run. */
export interface NSAHostLayout {
  readonly B: number;
  readonly T: number;
  /** Compressed rows per batch row (all sequences' blocks, packed, for varlen). */
  readonly C: number;
  readonly varlen?: VarlenLayout;
  readonly segments: Segment[];
}

export function hostLayout(config: NSAConfig, shape: NSAHostShape): NSAHostLayout {
  const { B, T } = shape;
  if (!Number.isInteger(B) || B < 1 || !Number.isInteger(T) || T < 0) {
    throw new NSAShapeError(`B = ${B} and T = ${T} must be integers, B >= 1, T >= 0`);
  }
  let varlen: VarlenLayout | undefined;
  let C: number;
  if (shape.cuSeqlens !== undefined) {
    if (B !== 1) throw new NSAShapeError(`varlen (cuSeqlens) needs B = 1, got ${B}`);
    varlen = varlenLayout(shape.cuSeqlens, T, config);
    C = varlen.compressedOffsets[varlen.compressedOffsets.length - 1];
  } else {
    C = compressedCount(T, config);
  }
  return { B, T, C, varlen, segments: fullSegments(B, T, C, varlen) };
}

/** Expected dims of each input. */
export function inputDims(config: NSAConfig, layout: Pick<NSAHostLayout, 'B' | 'T' | 'C'>): Record<keyof NSAHostInputs, number[]> {
  const { B, T, C } = layout;
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv } = config;
  return {
    q: [B, T, HQ, Dk],
    kCmp: [B, C, H, Dk],
    vCmp: [B, C, H, Dv],
    kSlc: [B, T, H, Dk],
    vSlc: [B, T, H, Dv],
    kWin: [B, T, H, Dk],
    vWin: [B, T, H, Dv],
    gates: [B, T, HQ, 3],
  };
}

/** Checks every input array's length and returns the layout. */
export function checkHostInputs(inputs: NSAHostInputs, config: NSAConfig, shape: NSAHostShape): NSAHostLayout {
  const layout = hostLayout(config, shape);
  const dims = inputDims(config, layout);
  for (const name of Object.keys(dims) as (keyof NSAHostInputs)[]) checkLength(name, inputs[name], dims[name]);
  return layout;
}

/** Throws unless `data` holds exactly the elements of `dims`. */
export function checkLength(name: string, data: ArrayLike<number> | undefined, dims: readonly number[]): void {
  const size = dims.reduce((a, b) => a * b, 1);
  if (!data || data.length !== size) {
    throw new NSAShapeError(`${name} has ${data?.length ?? 'no'} elements, expected [${dims.join(', ')}] = ${size}`);
  }
}
