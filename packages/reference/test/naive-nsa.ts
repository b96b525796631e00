// A deliberately literal NSA forward, written straight from NSA-SPEC.md with plain arrays, as an
// independent check of the optimised engine (it shares no code with src/ beyond @nsa/core).
import type { NSAConfig } from '@nsa/core';
import type { NSAHostInputs } from '../src/index.js';

interface Seq {
  start: number;
  length: number;
  cmpStart: number;
}

export function naiveNSA(
  x: NSAHostInputs,
  cfg: NSAConfig,
  B: number,
  T: number,
  cuSeqlens?: number[],
  givenBlocks?: Int32Array,
): { output: Float64Array; blockIndices: Int32Array; scores: Float64Array; blocks: number } {
  const { compressBlock: l, compressStride: d, selectBlock: ls, selectCount: n, window: w } = cfg;
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv, scale } = cfg;
  const G = HQ / H;
  const C = (len: number) => (len >= l ? Math.floor((len - l) / d) + 1 : 0);
  const seqs: Seq[] = [];
  if (cuSeqlens) {
    let cmp = 0;
    for (let s = 0; s + 1 < cuSeqlens.length; s++) {
      const len = cuSeqlens[s + 1] - cuSeqlens[s];
      seqs.push({ start: cuSeqlens[s], length: len, cmpStart: cmp });
      cmp += C(len);
    }
  } else {
    for (let b = 0; b < B; b++) seqs.push({ start: b * T, length: T, cmpStart: b * C(T) });
  }
  const output = new Float64Array(B * T * HQ * Dv);
  const blockIndices = new Int32Array(B * T * H * n);
  const blocks = Math.ceil(Math.max(1, ...seqs.map((q) => q.length)) / ls);
  const scores = new Float64Array(B * T * H * blocks);
  const qv = (row: number, h: number) => Array.from(x.q.subarray((row * HQ + h) * Dk, (row * HQ + h + 1) * Dk));
  const vec = (a: Float64Array, row: number, g: number, D: number) => Array.from(a.subarray((row * H + g) * D, (row * H + g + 1) * D));
  const attend = (qq: number[], ks: number[][], vs: number[][]): { o: number[]; p: number[] } => {
    if (ks.length === 0) return { o: new Array(Dv).fill(0), p: [] };
    const s = ks.map((k) => scale * k.reduce((acc, kk, i) => acc + kk * qq[i], 0));
    const m = Math.max(...s);
    const e = s.map((v) => Math.exp(v - m));
    const z = e.reduce((a, b) => a + b, 0);
    const p = e.map((v) => v / z);
    const o = new Array(Dv).fill(0);
    vs.forEach((v, j) => v.forEach((vv, i) => (o[i] += p[j] * vv)));
    return { o, p };
  };
  for (const seq of seqs) {
    for (let t = 0; t < seq.length; t++) {
      const row = seq.start + t;
      const c = t + 1 >= l ? Math.floor((t + 1 - l) / d) + 1 : 0;
      for (let g = 0; g < H; g++) {
        const kc = Array.from({ length: c }, (_, i) => vec(x.kCmp, seq.cmpStart + i, g, Dk));
        const vc = Array.from({ length: c }, (_, i) => vec(x.vCmp, seq.cmpStart + i, g, Dv));
        const current = Math.floor(t / ls);
        const S = new Array(current + 1).fill(0);
        const cmpOut: number[][] = [];
        for (let h = g * G; h < (g + 1) * G; h++) {
          const { o, p } = attend(qv(row, h), kc, vc);
          cmpOut.push(o);
          // The spec's formula: s[j] = sum_m sum_r p[(l'/d) j + m - r], out-of-range p = 0.
          for (let j = 0; j <= current; j++) {
            for (let m = 0; m < ls / d; m++) {
              for (let r = 0; r < l / d; r++) {
                const i = (ls / d) * j + m - r;
                if (i >= 0 && i < c) S[j] += p[i];
              }
            }
          }
        }
        for (let j = 0; j <= current; j++) scores[(row * H + g) * blocks + j] = S[j];
        let chosen: number[];
        const off = (row * H + g) * n;
        if (givenBlocks) {
          chosen = Array.from(givenBlocks.subarray(off, off + n)).filter((j) => j >= 0);
        } else {
          const forced = new Set<number>();
          for (let j = 0; j < cfg.initialBlocks && j <= current; j++) forced.add(j);
          for (let j = Math.max(0, current - cfg.localBlocks + 1); j <= current; j++) forced.add(j);
          const others = [...Array(current + 1).keys()].filter((j) => !forced.has(j));
          others.sort((a, b) => S[b] - S[a] || a - b);
          chosen = [...forced, ...others.slice(0, Math.max(0, n - forced.size))].sort((a, b) => a - b);
        }
        for (let k = 0; k < n; k++) blockIndices[off + k] = k < chosen.length ? chosen[k] : -1;
        const slcRows: number[] = [];
        for (const j of chosen) for (let r = j * ls; r < Math.min((j + 1) * ls, t + 1); r++) slcRows.push(r);
        const winRows: number[] = [];
        for (let r = Math.max(0, t - w + 1); r <= t; r++) winRows.push(r);
        for (let h = g * G; h < (g + 1) * G; h++) {
          const qq = qv(row, h);
          const os = attend(qq, slcRows.map((r) => vec(x.kSlc, seq.start + r, g, Dk)), slcRows.map((r) => vec(x.vSlc, seq.start + r, g, Dv)));
          const ow = attend(qq, winRows.map((r) => vec(x.kWin, seq.start + r, g, Dk)), winRows.map((r) => vec(x.vWin, seq.start + r, g, Dv)));
          const gg = x.gates.subarray((row * HQ + h) * 3, (row * HQ + h) * 3 + 3);
          for (let i = 0; i < Dv; i++) {
            output[(row * HQ + h) * Dv + i] = gg[0] * cmpOut[h - g * G][i] + gg[1] * os.o[i] + gg[2] * ow.o[i];
          }
        }
      }
    }
  }
  return { output, blockIndices, scores, blocks };
}
