// Softmax attention of the G query heads that share one KV head over one list of key rows, and
// its backward. Every NSA branch and dense attention is built from these functions. Working a
// whole group per key row reads each key and value once for G heads instead of G times; heads go
// four at a time through the vector-ops kernels, the remainder one at a time.
import type { KeyRanges } from './key-ranges.js';
import { axpy, axpy4, dot, dot4, sum4 } from './vector-ops.js';

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
      let h = 0;
      for (; h + 3 < G; h += 4) dot4(q, qOff + h * Dk, k, kOff, Dk, probs, h * N + i, N);
      for (; h < G; h++) probs[h * N + i] = dot(q, qOff + h * Dk, k, kOff, Dk);
    }
  }
  for (let h = 0; h < G; h++) {
    const base = h * N;
    for (let j = 0; j < N; j++) probs[base + j] *= scale;
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
      let h = 0;
      for (; h + 3 < G; h += 4) {
        const g0 = gateOff + h * gateStride;
        const p0 = h * N + i;
        axpy4(
          out,
          oOff + h * Dv,
          gates[g0] * probs[p0],
          gates[g0 + gateStride] * probs[p0 + N],
          gates[g0 + 2 * gateStride] * probs[p0 + 2 * N],
          gates[g0 + 3 * gateStride] * probs[p0 + 3 * N],
          v,
          vOff,
          Dv,
        );
      }
      for (; h < G; h++) axpy(out, oOff + h * Dv, gates[gateOff + h * gateStride] * probs[h * N + i], v, vOff, Dv);
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
  // Pass 1: p_j = exp(scale q·k_j - lse) and u_j = dO · v_j per head; dgate = dO · A = sum_j p_j u_j.
  let i = 0;
  for (let r = 0; r < keys.count; r++) {
    const end = keys.ends[r];
    for (let row = keys.starts[r]; row < end; row++, i++) {
      const kOff = kBase + row * kStride;
      const vOff = vBase + row * vStride;
      let h = 0;
      for (; h + 3 < G; h += 4) {
        dot4(q, qOff + h * Dk, k, kOff, Dk, probs, h * N + i, N);
        dot4(dO, oOff + h * Dv, v, vOff, Dv, dots, h * N + i, N);
      }
      for (; h < G; h++) {
        probs[h * N + i] = dot(q, qOff + h * Dk, k, kOff, Dk);
        dots[h * N + i] = dot(dO, oOff + h * Dv, v, vOff, Dv);
      }
    }
  }
  for (let h = 0; h < G; h++) {
    const base = h * N;
    const m = lse[lseOff + h];
    let dGate = 0;
    for (let j = 0; j < N; j++) {
      const p = Math.exp(probs[base + j] * scale - m);
      probs[base + j] = p;
      dGate += p * dots[base + j];
    }
    dGates[gateOff + h * gateStride] = dGate;
    // From here on dots holds dS_j = gate p_j (u_j - dgate) * scale, the gradient of q·k_j,
    // and probs holds gate p_j, the weight of dO in dv_j.
    const gate = gates[gateOff + h * gateStride];
    for (let j = 0; j < N; j++) {
      const gp = gate * probs[base + j];
      dots[base + j] = gp * (dots[base + j] - dGate) * scale;
      probs[base + j] = gp;
    }
  }
  // Pass 2: dq_h += dS k_j, dk_j += sum_h dS_h q_h, dv_j += sum_h gate_h p_h dO_h.
  i = 0;
  for (let r = 0; r < keys.count; r++) {
    const end = keys.ends[r];
    for (let row = keys.starts[r]; row < end; row++, i++) {
      const kOff = kBase + row * kStride;
      const vOff = vBase + row * vStride;
      let h = 0;
      for (; h + 3 < G; h += 4) {
        const j0 = h * N + i;
        const s0 = dots[j0];
        const s1 = dots[j0 + N];
        const s2 = dots[j0 + 2 * N];
        const s3 = dots[j0 + 3 * N];
        axpy4(dq, qOff + h * Dk, s0, s1, s2, s3, k, kOff, Dk);
        sum4(dk, kOff, s0, s1, s2, s3, q, qOff + h * Dk, Dk);
        sum4(dv, vOff, probs[j0], probs[j0 + N], probs[j0 + 2 * N], probs[j0 + 3 * N], dO, oOff + h * Dv, Dv);
      }
      for (; h < G; h++) {
        const j = h * N + i;
        axpy(dq, qOff + h * Dk, dots[j], k, kOff, Dk);
        axpy(dk, kOff, dots[j], q, qOff + h * Dk, Dk);
        axpy(dv, vOff, probs[j], dO, oOff + h * Dv, Dv);
      }
    }
  }
}
