import { hasDenseOps, missingDenseOps, NSAShapeError, type Tensor } from '@nsa/core';
import { describe, expect, it } from 'vitest';
import { backend, host, numericGradient, randomTensor, relErr } from './helpers.js';

const ops = backend;
const t = (values: Float64Array, shape: readonly number[]): Tensor => backend.tensor(values, shape, 'float64');

/** Loss = Σ y ⊙ w for a fixed random w, so dL/dy = w. */
async function dot(y: Tensor, w: Float64Array): Promise<number> {
  const v = await host(y);
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * w[i];
  return s;
}

/** Checks an analytic gradient of input `x` (shape) against finite differences of Σ f(x) ⊙ w. */
async function check(
  xShape: number[],
  seed: number,
  f: (x: Tensor) => Promise<Tensor>,
  analytic: (x: Tensor, dy: Tensor) => Promise<Tensor>,
): Promise<void> {
  const x = randomTensor(xShape, seed);
  const y = await f(x);
  const w = await host(randomTensor([...y.shape], seed + 1));
  const grad = await host(await analytic(x, t(w, y.shape)));
  const xv = await host(x);
  const indices = Array.from({ length: xv.length }, (_, i) => i);
  const numeric = await numericGradient(xv, async (vals) => dot(await f(t(vals, xShape)), w), indices);
  expect(relErr(grad, numeric)).toBeLessThan(1e-7);
}

describe('reference dense ops', () => {
  it('make the reference backend a ModelBackend', () => {
    expect(hasDenseOps(backend)).toBe(true);
    expect(missingDenseOps(backend)).toEqual([]);
  });

  it('matmul matches a direct sum in all four transpose modes, and its backward is matmul', async () => {
    const a = randomTensor([3, 4], 1);
    const b = randomTensor([4, 5], 2);
    const av = await host(a);
    const bv = await host(b);
    const want = new Float64Array(15);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 5; j++) for (let k = 0; k < 4; k++) want[i * 5 + j] += av[i * 4 + k] * bv[k * 5 + j];
    const aT = t(Float64Array.from({ length: 12 }, (_, i) => av[(i % 3) * 4 + Math.floor(i / 3)]), [4, 3]);
    const bT = t(Float64Array.from({ length: 20 }, (_, i) => bv[(i % 4) * 5 + Math.floor(i / 4)]), [5, 4]);
    expect(relErr(await host(await ops.matmul(a, b)), want)).toBeLessThan(1e-14);
    expect(relErr(await host(await ops.matmul(aT, b, { transposeA: true })), want)).toBeLessThan(1e-14);
    expect(relErr(await host(await ops.matmul(a, bT, { transposeB: true })), want)).toBeLessThan(1e-14);
    expect(relErr(await host(await ops.matmul(aT, bT, { transposeA: true, transposeB: true })), want)).toBeLessThan(1e-14);
    await check([3, 4], 3, (x) => ops.matmul(x, b), (_x, dy) => ops.matmul(dy, b, { transposeB: true }));
    // Sizes that leave remainders after the kernels' four-way unrolling.
    for (const [M, K, N] of [[7, 9, 6], [5, 13, 11], [1, 3, 2]]) {
      const x = randomTensor([M, K], M);
      const y = randomTensor([K, N], N);
      const xv = await host(x);
      const yv = await host(y);
      const ref = new Float64Array(M * N);
      for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) for (let k = 0; k < K; k++) ref[i * N + j] += xv[i * K + k] * yv[k * N + j];
      const xT = t(Float64Array.from({ length: M * K }, (_, i) => xv[(i % M) * K + Math.floor(i / M)]), [K, M]);
      const yT = t(Float64Array.from({ length: K * N }, (_, i) => yv[(i % K) * N + Math.floor(i / K)]), [N, K]);
      expect(relErr(await host(await ops.matmul(x, y)), ref)).toBeLessThan(1e-14);
      expect(relErr(await host(await ops.matmul(xT, y, { transposeA: true })), ref)).toBeLessThan(1e-14);
      expect(relErr(await host(await ops.matmul(x, yT, { transposeB: true })), ref)).toBeLessThan(1e-14);
      expect(relErr(await host(await ops.matmul(xT, yT, { transposeA: true, transposeB: true })), ref)).toBeLessThan(1e-14);
    }
    await expect(ops.matmul(a, a)).rejects.toThrow(/inner dims differ/);
  });

  it('rmsNorm backward (x and weight) matches finite differences', async () => {
    const w = randomTensor([6], 4);
    await check([2, 3, 6], 5, (x) => ops.rmsNorm(x, w, 1e-5), async (x, dy) => (await ops.rmsNormBackward(x, w, 1e-5, dy)).dx);
    const x = randomTensor([4, 6], 6);
    await check([6], 7, (ww) => ops.rmsNorm(x, ww, 1e-5), async (ww, dy) => (await ops.rmsNormBackward(x, ww, 1e-5, dy)).dWeight);
  });

  it('rotary preserves norms, its inverse undoes it, and real-valued strided positions work', async () => {
    const x = randomTensor([2, 5, 3, 8], 8);
    const opts = { start: 3.5, stride: 4, base: 100 };
    const y = await ops.rotary(x, opts);
    expect(Math.abs((await ops.sumOfSquares(y)) - (await ops.sumOfSquares(x)))).toBeLessThan(1e-10);
    expect(relErr(await host(await ops.rotary(y, { ...opts, inverse: true })), await host(x))).toBeLessThan(1e-14);
    await check([1, 3, 2, 4], 9, (v) => ops.rotary(v, opts), (_v, dy) => ops.rotary(dy, { ...opts, inverse: true }));
    // Relative position: <R(p)a, R(p+k)b> depends on k only.
    const a = randomTensor([1, 1, 1, 8], 10);
    const b = randomTensor([1, 1, 1, 8], 11);
    const score = async (p: number) => {
      const ra = await host(await ops.rotary(a, { start: p }));
      const rb = await host(await ops.rotary(b, { start: p + 3 }));
      return ra.reduce((s, v, i) => s + v * rb[i], 0);
    };
    expect(Math.abs((await score(0)) - (await score(17.25)))).toBeLessThan(1e-10);
  });

  it('swiglu and activations backward match finite differences', async () => {
    const up = randomTensor([3, 4], 12);
    const gate = randomTensor([3, 4], 13);
    await check([3, 4], 14, (g) => ops.swiglu(g, up), async (g, dy) => (await ops.swigluBackward(g, up, dy)).dGate);
    await check([3, 4], 15, (u) => ops.swiglu(gate, u), async (u, dy) => (await ops.swigluBackward(gate, u, dy)).dUp);
    for (const kind of ['silu', 'sigmoid', 'gelu'] as const) {
      await check([2, 5], 16, (x) => ops.activation(x, kind), (x, dy) => ops.activationBackward(x, kind, dy));
    }
  });

  it('softmax cross-entropy: value by hand, gradient by finite differences, -1 ignored', async () => {
    const logits = t(Float64Array.from([1, 2, 3, 0, 0, 0]), [2, 3]);
    const targets = backend.tensor([2, -1], [2], 'int32');
    const r = await ops.softmaxCrossEntropy(logits, targets, true);
    expect(r.count).toBe(1);
    expect(r.loss).toBeCloseTo(Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)) - 3, 12);
    const tg = backend.tensor([1, 0, 3], [3], 'int32');
    const x = randomTensor([3, 4], 17);
    const grad = await host((await ops.softmaxCrossEntropy(x, tg, true)).dLogits!);
    const xv = await host(x);
    const numeric = await numericGradient(xv, async (v) => (await ops.softmaxCrossEntropy(t(v, [3, 4]), tg, false)).loss, [...xv.keys()]);
    expect(relErr(grad, numeric)).toBeLessThan(1e-7);
    await expect(ops.softmaxCrossEntropy(x, backend.tensor([1, 0, 4], [3], 'int32'), false)).rejects.toThrow(/outside \[-1, 4\)/);
  });

  it('embedding gathers rows and its backward scatter-adds repeated ids', async () => {
    const table = randomTensor([5, 3], 18);
    const ids = backend.tensor([4, 1, 4], [3], 'int32');
    const y = await host(await ops.embedding(table, ids));
    const tv = await host(table);
    expect([...y.slice(0, 3)]).toEqual([...tv.slice(12, 15)]);
    await check([5, 3], 19, (tb) => ops.embedding(tb, ids), (_tb, dy) => ops.embeddingBackward(ids, dy, 5));
    await expect(ops.embedding(table, backend.tensor([5], [1], 'int32'))).rejects.toThrow(NSAShapeError);
  });

  it('blockUnfold cuts overlapping blocks, adds positions, and its backward matches finite differences', async () => {
    const pos = randomTensor([4, 2], 20);
    const x = randomTensor([1, 10, 2, 2], 21);
    const y = await ops.blockUnfold(x, pos, 2);
    expect(y.shape).toEqual([1, 4, 2, 8]);
    const xv = await host(x);
    const pv = await host(pos);
    const yv = await host(y);
    // block 2, head 1, token 3 of the block (raw token 7), element 1
    expect(yv[((0 * 4 + 2) * 2 + 1) * 8 + 3 * 2 + 1]).toBeCloseTo(xv[(7 * 2 + 1) * 2 + 1] + pv[3 * 2 + 1], 14);
    await check([1, 10, 2, 2], 22, (v) => ops.blockUnfold(v, pos, 2), async (_v, dy) => (await ops.blockUnfoldBackward([1, 10, 2, 2], pos, 2, dy)).dx);
    await check([4, 2], 23, (p) => ops.blockUnfold(x, p, 2), async (p, dy) => (await ops.blockUnfoldBackward([1, 10, 2, 2], p, 2, dy)).dPos);
    expect((await ops.blockUnfold(randomTensor([1, 3, 2, 2], 24), pos, 2)).shape).toEqual([1, 0, 2, 8]);
  });

  it('rows: slice, concat, reshape and sum of squares', async () => {
    const a = t(Float64Array.from([1, 2, 3, 4, 5, 6]), [3, 2]);
    expect([...(await host(await ops.sliceRows(a, 1, 2)))]).toEqual([3, 4, 5, 6]);
    expect([...(await host(await ops.concatRows([a, await ops.sliceRows(a, 0, 1)])))]).toEqual([1, 2, 3, 4, 5, 6, 1, 2]);
    expect((await ops.reshape(a, [2, 3])).shape).toEqual([2, 3]);
    expect(await ops.sumOfSquares(a)).toBe(91);
    expect([...(await host(await ops.scale(a, 2)))]).toEqual([2, 4, 6, 8, 10, 12]);
    await expect(ops.sliceRows(a, 2, 2)).rejects.toThrow(/outside the 3 rows/);
    await expect(ops.reshape(a, [4])).rejects.toThrow(/cannot reshape/);
  });
});
