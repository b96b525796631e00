// One softmax attention of one query vector over a list of key rows, and its backward. Every
// branch of NSA and dense attention is built from these two functions.
import type { KeyRanges } from './key-ranges.js';

/**
 * a[aOff..+n) · b[bOff..+n) with four independent partial sums: a single running sum is bound
 * by the latency of one add after another, four let the CPU overlap them (about 3x faster).
 */
export function dot(a: Float64Array, aOff: number, b: Float64Array, bOff: number, n: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let d = 0;
  for (; d + 3 < n; d += 4) {
    s0 += a[aOff + d] * b[bOff + d];
    s1 += a[aOff + d + 1] * b[bOff + d + 1];
    s2 += a[aOff + d + 2] * b[bOff + d + 2];
    s3 += a[aOff + d + 3] * b[bOff + d + 3];
  }
  for (; d < n; d++) s0 += a[aOff + d] * b[bOff + d];
  return s0 + s1 + (s2 + s3);
}

/** Where a query head's keys and values live: row r of head g starts at base + r * stride. */
export interface KVView {
  readonly k: Float64Array;
  readonly v: Float64Array;
  kBase: number;
  vBase: number;
  readonly kStride: number;
  readonly vStride: number;
  readonly Dk: number;
  readonly Dv: number;
}

/**
 * Leaves p = softmax(scale * q·K) over `keys` in `probs[0..size)` (key order) and returns the
 * log-sum-exp of the scaled scores. An empty key list writes nothing and returns 0 (callers
 * know the list is empty from its size: no -inf arithmetic anywhere).
 */
export function attendProbabilities(
  q: Float64Array,
  qOff: number,
  kv: Pick<KVView, 'k' | 'kBase' | 'kStride' | 'Dk'>,
  keys: KeyRanges,
  scale: number,
  probs: Float64Array,
): number {
  const { k, kBase, kStride, Dk } = kv;
  let n = 0;
  let max = 0;
  for (let r = 0; r < keys.count; r++) {
    const end = keys.ends[r];
    for (let row = keys.starts[r]; row < end; row++) {
      const s = dot(q, qOff, k, kBase + row * kStride, Dk) * scale;
      if (n === 0 || s > max) max = s;
      probs[n++] = s;
    }
  }
  if (n === 0) return 0;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(probs[i] - max);
    probs[i] = e;
    sum += e;
  }
  const inv = 1 / sum;
  for (let i = 0; i < n; i++) probs[i] *= inv;
  return max + Math.log(sum);
}

/**
 * out[outOff..+Dv] += gate * softmax(scale * q·K) V over `keys`. Leaves the probabilities in
 * `probs` and returns the log-sum-exp (see attendProbabilities); an empty list adds nothing.
 */
export function attendForward(
  q: Float64Array,
  qOff: number,
  kv: KVView,
  keys: KeyRanges,
  scale: number,
  gate: number,
  out: Float64Array,
  outOff: number,
  probs: Float64Array,
): number {
  const lse = attendProbabilities(q, qOff, kv, keys, scale, probs);
  const { v, vBase, vStride, Dv } = kv;
  let i = 0;
  for (let r = 0; r < keys.count; r++) {
    const end = keys.ends[r];
    for (let row = keys.starts[r]; row < end; row++) {
      const c = gate * probs[i++];
      const vOff = vBase + row * vStride;
      for (let d = 0; d < Dv; d++) out[outOff + d] += c * v[vOff + d];
    }
  }
  return lse;
}

/** Gradient buffers shaped like the K/V arrays of a `KVView` (same bases and strides). */
export interface KVGrads {
  readonly dk: Float64Array;
  readonly dv: Float64Array;
}

/**
 * Backward of `attendForward` for o += gate * A with A = softmax(scale q·K) V, given dO = dL/do
 * and the forward's log-sum-exp. Adds into dq[dqOff..], grads.dk, grads.dv and returns dL/dgate
 * (= dO · A). `probs` and `dots` are scratch of at least the key count. Empty list: returns 0.
 */
export function attendBackward(
  q: Float64Array,
  qOff: number,
  dq: Float64Array,
  dqOff: number,
  kv: KVView,
  grads: KVGrads,
  keys: KeyRanges,
  scale: number,
  lse: number,
  gate: number,
  dO: Float64Array,
  dOOff: number,
  probs: Float64Array,
  dots: Float64Array,
): number {
  const { k, v, kBase, vBase, kStride, vStride, Dk, Dv } = kv;
  const { dk, dv } = grads;
  // Pass 1: p_j and u_j = dO · v_j; dgate = dO · A = sum_j p_j u_j.
  let n = 0;
  let dGate = 0;
  for (let r = 0; r < keys.count; r++) {
    const end = keys.ends[r];
    for (let row = keys.starts[r]; row < end; row++) {
      const kOff = kBase + row * kStride;
      const vOff = vBase + row * vStride;
      const u = dot(dO, dOOff, v, vOff, Dv);
      const p = Math.exp(dot(q, qOff, k, kOff, Dk) * scale - lse);
      probs[n] = p;
      dots[n++] = u;
      dGate += p * u;
    }
  }
  if (n === 0) return 0;
  // Pass 2: dS_j = gate p_j (u_j - dgate) is the gradient of the scaled score.
  let i = 0;
  for (let r = 0; r < keys.count; r++) {
    const end = keys.ends[r];
    for (let row = keys.starts[r]; row < end; row++) {
      const p = probs[i];
      const dS = gate * p * (dots[i++] - dGate) * scale;
      const kOff = kBase + row * kStride;
      const vOff = vBase + row * vStride;
      for (let d = 0; d < Dk; d++) {
        dq[dqOff + d] += dS * k[kOff + d];
        dk[kOff + d] += dS * q[qOff + d];
      }
      const c = gate * p;
      for (let d = 0; d < Dv; d++) dv[vOff + d] += c * dO[dOOff + d];
    }
  }
  return dGate;
}
