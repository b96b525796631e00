// Dense causal attention, the baseline (and the oracle for "NSA with w >= T is attention").
// q [B,TQ,HQ,Dk], k [B,Tk,H,Dk], v [B,Tk,H,Dv]; query i sits at position Tk - TQ + i. Varlen
// (cuSeqlens, B = 1, TQ = Tk): each packed sequence attends only to itself.
import { NSAShapeError, varlenLayout } from '@nsa/core';
import {
  attendBackward,
  attendForward,
  type HeadGroup,
  type KVView,
  type QueryBackward,
  type QueryForward,
} from './branches/attend.js';
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
  const qs: QueryForward = { q, gates: new Float64Array(G).fill(1), out: output, lse };
  const heads: HeadGroup = { G, qOff: 0, oOff: 0, gateOff: 0, gateStride: 1, lseOff: 0 };
  const kv: KVView = { k, v, kBase: 0, vBase: 0, kStride: H * Dk, vStride: H * Dv, Dk, Dv };
  const probs = new Float64Array(G * maxKeys(segments));
  const keys = new KeyRanges(1);
  for (const seg of segments) {
    for (let i = 0; i < seg.count; i++) {
      const row = seg.qRow + i;
      keys.clear().push(0, seg.firstPos + i + 1);
      for (let g = 0; g < H; g++) {
        kv.kBase = seg.kvRow * kv.kStride + g * Dk;
        kv.vBase = seg.kvRow * kv.vStride + g * Dv;
        setHeads(heads, row * HQ + g * G, Dk, Dv);
        attendForward(qs, heads, kv, keys, scale, probs);
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
  const G = HQ / H;
  const grads = { dq: new Float64Array(q.length), dk: new Float64Array(k.length), dv: new Float64Array(v.length) };
  const qs: QueryBackward = {
    q,
    gates: new Float64Array(G).fill(1),
    lse: lse ?? attentionForwardHost(q, k, v, shape).lse,
    dO: dOutput,
    dq: grads.dq,
    // dL/dgate is not an output of dense attention: one scratch slot per head.
    dGates: new Float64Array(G),
  };
  const heads: HeadGroup = { G, qOff: 0, oOff: 0, gateOff: 0, gateStride: 1, lseOff: 0 };
  const kv: KVView = { k, v, kBase: 0, vBase: 0, kStride: H * Dk, vStride: H * Dv, Dk, Dv };
  const probs = new Float64Array(G * maxKeys(segments));
  const dots = new Float64Array(probs.length);
  const keys = new KeyRanges(1);
  for (const seg of segments) {
    for (let i = 0; i < seg.count; i++) {
      const row = seg.qRow + i;
      keys.clear().push(0, seg.firstPos + i + 1);
      for (let g = 0; g < H; g++) {
        kv.kBase = seg.kvRow * kv.kStride + g * Dk;
        kv.vBase = seg.kvRow * kv.vStride + g * Dv;
        setHeads(heads, row * HQ + g * G, Dk, Dv);
        attendBackward(qs, heads, kv, grads, keys, scale, probs, dots);
      }
    }
  }
  return grads;
}

/** Points `heads` at the group whose first query head is flattened head `head0`; gates stay at 0. */
function setHeads(heads: HeadGroup, head0: number, Dk: number, Dv: number): void {
  heads.qOff = head0 * Dk;
  heads.oOff = head0 * Dv;
  heads.lseOff = head0;
}
