// What the dense checks share (dense-forward-check.mjs, dense-backward-check.mjs): the shapes beyond
// test/'s grid, their random inputs, tensors that are disposed after use, and a bit-equality test.
import { SeededRandom, roundToDType } from '@nsa/core';

export const denseShapes = [
  { name: 'G=16 D=128 T=700', B: 1, TQ: 700, Tk: 700, heads: 16, kvHeads: 1, D: 128 },
  { name: 'G=16 D=64 T=300', B: 1, TQ: 300, Tk: 300, heads: 16, kvHeads: 1, D: 64 },
  { name: 'G=1 D=128 B=2 T=333', B: 2, TQ: 333, Tk: 333, heads: 2, kvHeads: 2, D: 128 },
  { name: 'G=4 D=64 T=1000', B: 1, TQ: 1000, Tk: 1000, heads: 8, kvHeads: 2, D: 64 },
  { name: 'G=8 D=128 T=257', B: 1, TQ: 257, Tk: 257, heads: 16, kvHeads: 2, D: 128 },
  { name: 'G=4 D=128 T=1664 (13 key tiles)', B: 1, TQ: 1664, Tk: 1664, heads: 4, kvHeads: 1, D: 128 },
  { name: 'varlen G=16 D=128', B: 1, TQ: 600, Tk: 600, heads: 16, kvHeads: 1, D: 128, cuSeqlens: [0, 129, 130, 600] },
  { name: 'varlen G=2 D=64', B: 1, TQ: 500, Tk: 500, heads: 4, kvHeads: 2, D: 64, cuSeqlens: [0, 1, 65, 200, 500] },
  { name: 'after cache G=4 D=128 TQ=200 Tk=650', B: 2, TQ: 200, Tk: 650, heads: 8, kvHeads: 2, D: 128 },
  { name: 'after cache G=1 D=64 TQ=130 Tk=333', B: 1, TQ: 130, Tk: 333, heads: 4, kvHeads: 4, D: 64 },
];

/** Random normal q, k, v (and dO for a backward) of shape c, rounded to dtype. */
export function drawDense(c, dtype, seed, withOutputGradient = false) {
  const rng = new SeededRandom(seed);
  const { B, TQ, Tk, heads: HQ, kvHeads: H, D } = c;
  const n = (count) => rng.normals(count).map((x) => roundToDType(x, dtype));
  const values = { q: n(B * TQ * HQ * D), k: n(B * Tk * H * D), v: n(B * Tk * H * D) };
  return withOutputGradient ? { ...values, dO: n(B * TQ * HQ * D) } : values;
}

/**
 * Calls fn(inputs, keep) with c's q, k, v as tensors of target (and its cuSeqlens); `keep(x)` marks
 * what fn makes for disposal too. Everything is disposed when fn returns or throws.
 */
export async function withDenseInputs(target, c, values, dtype, fn) {
  const { B, TQ, Tk, heads: HQ, kvHeads: H, D, cuSeqlens } = c;
  const made = [];
  const keep = (x) => {
    made.push(x);
    return x;
  };
  const t = (v, shape) => keep(target.tensor(v, shape, dtype));
  try {
    const inputs = { q: t(values.q, [B, TQ, HQ, D]), k: t(values.k, [B, Tk, H, D]), v: t(values.v, [B, Tk, H, D]), cuSeqlens };
    return await fn(inputs, keep, t);
  } finally {
    for (const x of made) x.dispose();
  }
}

/** Whether every typed array in `arrays` has the bytes of the first. */
export function bitEqual(arrays) {
  const a = new Uint8Array(arrays[0].buffer);
  return arrays.slice(1).every((x) => {
    const b = new Uint8Array(x.buffer);
    return a.length === b.length && a.every((v, i) => v === b[i]);
  });
}
