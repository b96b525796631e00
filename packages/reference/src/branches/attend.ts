// Softmax attention of the G query heads that share one KV head over one list of key rows, and
// its backward. Every NSA branch and dense attention is built from these functions. Working a
// whole group per key row reads each key and value once for G heads instead of G times.
import type { KeyRanges } from './key-ranges.js';

/**
 * a[aOff..+n) · b[bOff..+n) with four independent partial sums: a single running sum is bound
 * by the latency of one add after another, four let the CPU overlap them.
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

/** y[yOff..+n) += c * x[xOff..+n), unrolled by four (about twice as fast as the plain loop in V8). */
export function axpy(y: Float64Array, yOff: number, c: number, x: Float64Array, xOff: number, n: number): void {
  let d = 0;
  for (; d + 3 < n; d += 4) {
    y[yOff + d] += c * x[xOff + d];
    y[yOff + d + 1] += c * x[xOff + d + 1];
    y[yOff + d + 2] += c * x[xOff + d + 2];
    y[yOff + d + 3] += c * x[xOff + d + 3];
  }
  for (; d < n; d++) y[yOff + d] += c * x[xOff + d];
}

/** Where one KV head's keys and values live: row r starts at kBase + r * kStride (v likewise). */
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

/** Gradient buffers laid out like a KVView's k and v (same bases and strides). */
export interface KVGrads {
  readonly dk: Float64Array;
  readonly dv: Float64Array;
}

/**
 * The G query heads of one query token that share a KV head. Head h (0..G-1) has its query at
 * qOff + h*Dk, its output (and dO) at oOff + h*Dv, its gate at gateOff + h*gateStride and its
 * log-sum-exp at lseOff + h. Mutable so one object serves every call.
 */
export interface HeadGroup {
  G: number;
  qOff: number;
  oOff: number;
  gateOff: number;
  gateStride: number;
  lseOff: number;
}

/** Query-side arrays of a forward: out += gate * A and lse = log-sum-exp of the scaled scores. */
export interface QueryForward {
  readonly q: Float64Array;
  readonly gates: Float64Array;
  readonly out: Float64Array;
  readonly lse: Float64Array;
}

/** Query-side arrays of a backward (dq and dGates are written, dq accumulated). */
export interface QueryBackward {
  readonly q: Float64Array;
  readonly gates: Float64Array;
  readonly lse: Float64Array;
  readonly dO: Float64Array;
  readonly dq: Float64Array;
  readonly dGates: Float64Array;
}

/**
 * Leaves p = softmax(scale * q·K) for head h at probs[h*N .. h*N + N) (key order, N keys),
 * writes each head's log-sum-exp to lse[lseOff + h] and returns N. With no keys it writes lse 0
 * and returns 0: callers know the list is empty from N, so no -inf arithmetic is needed.
 */
export function attendProbabilities(
  q: Float64Array,
  lse: Float64Array,
  heads: HeadGroup,
  kv: KVView,
  keys: KeyRanges,
  scale: number,
  probs: Float64Array,
): number {
  const { k, kBase, kStride, Dk } = kv;
  const { G, qOff, lseOff } = heads;
  const N = keys.size();
  if (N === 0) {
    for (let h = 0; h < G; h++) lse[lseOff + h] = 0;
    return 0;
  }
  let i = 0;
  for (let r = 0; r < keys.count; r++) {
    const end = keys.ends[r];
    for (let row = keys.starts[r]; row < end; row++, i++) {
      const kOff = kBase + row * kStride;
      for (let h = 0; h < G; h++) probs[h * N + i] = dot(q, qOff + h * Dk, k, kOff, Dk) * scale;
    }
  }
  for (let h = 0; h < G; h++) {
    const base = h * N;
    let max = probs[base];
    for (let j = 1; j < N; j++) if (probs[base + j] > max) max = probs[base + j];
    let sum = 0;
    for (let j = 0; j < N; j++) {
      const e = Math.exp(probs[base + j] - max);
      probs[base + j] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let j = 0; j < N; j++) probs[base + j] *= inv;
    lse[lseOff + h] = max + Math.log(sum);
  }
  return N;
}

/**
 * out[oOff + h*Dv ..] += gate_h * softmax(scale * q_h·K) V for every head of the group. Leaves
 * the probabilities in `probs` (see attendProbabilities) and returns the key count N.
 */
export function attendForward(
  qs: QueryForward,
  heads: HeadGroup,
  kv: KVView,
  keys: KeyRanges,
  scale: number,
  probs: Float64Array,
): number {
  const N = attendProbabilities(qs.q, qs.lse, heads, kv, keys, scale, probs);
  const { v, vBase, vStride, Dv } = kv;
  const { G, oOff, gateOff, gateStride } = heads;
  const { out, gates } = qs;
  let i = 0;
  for (let r = 0; r < keys.count; r++) {
    const end = keys.ends[r];
    for (let row = keys.starts[r]; row < end; row++, i++) {
      const vOff = vBase + row * vStride;
      for (let h = 0; h < G; h++) axpy(out, oOff + h * Dv, gates[gateOff + h * gateStride] * probs[h * N + i], v, vOff, Dv);
    }
  }
  return N;
}

/**
 * Backward of attendForward for o_h += gate_h * A_h, A_h = softmax(scale q_h·K) V, given dO and
 * the forward's log-sum-exp. Adds into dq, grads.dk, grads.dv and writes dL/dgate_h = dO_h · A_h
 * to dGates[gateOff + h*gateStride]. `probs` and `dots` are scratch of G * N. No keys: dgate 0.
 */
export function attendBackward(
  qs: QueryBackward,
  heads: HeadGroup,
  kv: KVView,
  grads: KVGrads,
  keys: KeyRanges,
  scale: number,
  probs: Float64Array,
  dots: Float64Array,
): void {
  const { k, v, kBase, vBase, kStride, vStride, Dk, Dv } = kv;
  const { dk, dv } = grads;
  const { q, dq, dO, gates, dGates, lse } = qs;
  const { G, qOff, oOff, gateOff, gateStride, lseOff } = heads;
  const N = keys.size();
  for (let h = 0; h < G; h++) dGates[gateOff + h * gateStride] = 0;
  if (N === 0) return;
  // Pass 1: p_j and u_j = dO · v_j per head; dgate = dO · A = sum_j p_j u_j.
  let i = 0;
  for (let r = 0; r < keys.count; r++) {
    const end = keys.ends[r];
    for (let row = keys.starts[r]; row < end; row++, i++) {
      const kOff = kBase + row * kStride;
      const vOff = vBase + row * vStride;
      for (let h = 0; h < G; h++) {
        const p = Math.exp(dot(q, qOff + h * Dk, k, kOff, Dk) * scale - lse[lseOff + h]);
        const u = dot(dO, oOff + h * Dv, v, vOff, Dv);
        probs[h * N + i] = p;
        dots[h * N + i] = u;
        dGates[gateOff + h * gateStride] += p * u;
      }
    }
  }
  // Pass 2: dS_j = gate p_j (u_j - dgate) is the gradient of the scaled score q·k_j * scale.
  i = 0;
  for (let r = 0; r < keys.count; r++) {
    const end = keys.ends[r];
    for (let row = keys.starts[r]; row < end; row++, i++) {
      const kOff = kBase + row * kStride;
      const vOff = vBase + row * vStride;
      for (let h = 0; h < G; h++) {
        const gate = gates[gateOff + h * gateStride];
        const p = probs[h * N + i];
        const dS = gate * p * (dots[h * N + i] - dGates[gateOff + h * gateStride]) * scale;
        axpy(dq, qOff + h * Dk, dS, k, kOff, Dk);
        axpy(dk, kOff, dS, q, qOff + h * Dk, Dk);
        axpy(dv, vOff, gate * p, dO, oOff + h * Dv, Dv);
      }
    }
  }
}
