// Dense causal attention, the baseline (and the oracle for "NSA with w >= T is attention").
// q [B,TQ,HQ,Dk], k [B,Tk,H,Dk], v [B,Tk,H,Dv]; query i sits at position Tk - TQ + i. Varlen
// (cuSeqlens, B = 1, TQ = Tk): each packed sequence attends only to itself.
import { NSAShapeError, varlenLayout } from '@nsa/core';
import { attendBackward, attendForward, type KVView } from './branches/attend.js';
import { KeyRanges } from './branches/key-ranges.js';
import { checkLength } from './host-inputs.js';
import { decodeSegments, fullSegments, maxKeys, type Segment } from './segments.js';

export interface AttentionHostShape {
  readonly B: number;
  readonly TQ: number;
  readonly Tk: number;
  readonly HQ: number;
  readonly H: number;
  readonly Dk: number;
  readonly Dv: number;
  /** Defaults to 1/sqrt(Dk). */
  readonly scale?: number;
  readonly cuSeqlens?: ArrayLike<number>;
}

export interface AttentionHostForward {
  /** [B, TQ, HQ, Dv]. */
  readonly output: Float64Array;
  /** [B*TQ, HQ] log-sum-exp of the scaled scores. */
  readonly lse: Float64Array;
}

export interface AttentionHostGradients {
  readonly dq: Float64Array;
  readonly dk: Float64Array;
  readonly dv: Float64Array;
}

function plan(q: Float64Array, k: Float64Array, v: Float64Array, shape: AttentionHostShape): { segments: Segment[]; scale: number } {
  const { B, TQ, Tk, HQ, H, Dk, Dv } = shape;
  if (H < 1 || HQ % H !== 0) throw new NSAShapeError(`HQ = ${HQ} must be a multiple of H = ${H}`);
  if (TQ > Tk) throw new NSAShapeError(`TQ = ${TQ} queries need TQ <= Tk = ${Tk}`);
  checkLength('q', q, [B, TQ, HQ, Dk]);
  checkLength('k', k, [B, Tk, H, Dk]);
  checkLength('v', v, [B, Tk, H, Dv]);
  const scale = shape.scale ?? 1 / Math.sqrt(Dk);
  if (shape.cuSeqlens === undefined) return { segments: decodeSegments(B, TQ, Tk, Tk, 0), scale };
  if (B !== 1 || TQ !== Tk) throw new NSAShapeError(`varlen needs B = 1 and TQ = Tk (got B = ${B}, TQ = ${TQ}, Tk = ${Tk})`);
  const layout = varlenLayout(shape.cuSeqlens, Tk, { compressBlock: 1, compressStride: 1 });
  return { segments: fullSegments(1, Tk, 0, layout), scale };
}

export function attentionForwardHost(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  shape: AttentionHostShape,
): AttentionHostForward {
  const { segments, scale } = plan(q, k, v, shape);
  const { B, TQ, HQ, H, Dk, Dv } = shape;
  const G = HQ / H;
  const output = new Float64Array(B * TQ * HQ * Dv);
  const lse = new Float64Array(B * TQ * HQ);
  const kv: KVView = { k, v, kBase: 0, vBase: 0, kStride: H * Dk, vStride: H * Dv, Dk, Dv };
  const probs = new Float64Array(maxKeys(segments));
  const keys = new KeyRanges(1);
  for (const seg of segments) {
    for (let i = 0; i < seg.count; i++) {
      const row = seg.qRow + i;
      keys.clear().push(0, seg.firstPos + i + 1);
      for (let h = 0; h < HQ; h++) {
        const g = Math.floor(h / G);
        kv.kBase = seg.kvRow * kv.kStride + g * Dk;
        kv.vBase = seg.kvRow * kv.vStride + g * Dv;
        lse[row * HQ + h] = attendForward(q, (row * HQ + h) * Dk, kv, keys, scale, 1, output, (row * HQ + h) * Dv, probs);
      }
    }
  }
  return { output, lse };
}

/** Backward of dense attention; `lse` from the forward, recomputed when absent. */
export function attentionBackwardHost(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  dOutput: Float64Array,
  shape: AttentionHostShape,
  lse?: Float64Array,
): AttentionHostGradients {
  const { segments, scale } = plan(q, k, v, shape);
  const { B, TQ, HQ, H, Dk, Dv } = shape;
  checkLength('dOutput', dOutput, [B, TQ, HQ, Dv]);
  if (lse) checkLength('lse', lse, [B * TQ, HQ]);
  const stats = lse ?? attentionForwardHost(q, k, v, shape).lse;
  const G = HQ / H;
  const grads = { dq: new Float64Array(q.length), dk: new Float64Array(k.length), dv: new Float64Array(v.length) };
  const kv: KVView = { k, v, kBase: 0, vBase: 0, kStride: H * Dk, vStride: H * Dv, Dk, Dv };
  const probs = new Float64Array(maxKeys(segments));
  const dots = new Float64Array(probs.length);
  const keys = new KeyRanges(1);
  for (const seg of segments) {
    for (let i = 0; i < seg.count; i++) {
      const row = seg.qRow + i;
      keys.clear().push(0, seg.firstPos + i + 1);
      for (let h = 0; h < HQ; h++) {
        const g = Math.floor(h / G);
        kv.kBase = seg.kvRow * kv.kStride + g * Dk;
        kv.vBase = seg.kvRow * kv.vStride + g * Dv;
        const qOff = (row * HQ + h) * Dk;
        attendBackward(q, qOff, grads.dq, qOff, kv, grads, keys, scale, stats[row * HQ + h], 1, dOutput,
          (row * HQ + h) * Dv, probs, dots);
      }
    }
  }
  return grads;
}
