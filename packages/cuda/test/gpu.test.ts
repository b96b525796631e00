// GPU checks that need no other package: dense attention against a float64 loop written here, and
// bit-equal backward results across runs (no floating-point atomics). The cross-backend NSA
// parity grid lives in test/ (the lead's suite) and in scripts run on the GPU host.
import { SeededRandom, createNSAConfig, compressedCount } from '@nsa/core';
import { describe, expect, it } from 'vitest';
import { cudaProvider, createCudaBackend } from '../src/provider.js';

const probe = await cudaProvider.probe();

function denseReference(q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, T: number, HQ: number, H: number, Dk: number, Dv: number): number[] {
  const out = new Array<number>(T * HQ * Dv).fill(0);
  const G = HQ / H, scale = 1 / Math.sqrt(Dk);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < HQ; h++) {
      const g = Math.floor(h / G);
      const s: number[] = [];
      for (let j = 0; j <= t; j++) {
        let dot = 0;
        for (let d = 0; d < Dk; d++) dot += q[(t * HQ + h) * Dk + d] * k[(j * H + g) * Dk + d];
        s.push(dot * scale);
      }
      const m = Math.max(...s);
      const p = s.map((x) => Math.exp(x - m));
      const l = p.reduce((a, b) => a + b, 0);
      for (let j = 0; j <= t; j++) for (let d = 0; d < Dv; d++) out[(t * HQ + h) * Dv + d] += (p[j] / l) * v[(j * H + g) * Dv + d];
    }
  }
  return out;
}

function relError(x: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (x[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / den);
}

describe.skipIf(!probe.available)(`cuda GPU checks${probe.available ? '' : ` (skipped: ${probe.reason})`}`, () => {
  it('dense attention matches a float64 loop (float32 and bfloat16)', async () => {
    const backend = await createCudaBackend();
    const T = 70, HQ = 4, H = 2, Dk = 32, Dv = 16;
    const rng = new SeededRandom(3);
    const q = rng.normals(T * HQ * Dk), k = rng.normals(T * H * Dk), v = rng.normals(T * H * Dv);
    const ref = denseReference(q, k, v, T, HQ, H, Dk, Dv);
    for (const [dtype, tol] of [['float32', 1e-4], ['bfloat16', 2e-2]] as const) {
      const res = await backend.attentionForward({
        q: backend.tensor(q, [1, T, HQ, Dk], dtype), k: backend.tensor(k, [1, T, H, Dk], dtype), v: backend.tensor(v, [1, T, H, Dv], dtype),
      });
      expect(relError(await res.output.read(), ref)).toBeLessThan(tol);
      res.dispose();
    }
  });

  it('NSA backward is bit-equal across runs', async () => {
    const backend = await createCudaBackend();
    const config = createNSAConfig({ compressBlock: 16, compressStride: 8, selectBlock: 32, selectCount: 4, window: 64, heads: 8, kvHeads: 2, headDimK: 32, headDimV: 32 });
    const T = 300, C = compressedCount(T, config), rng = new SeededRandom(5);
    const t = (shape: number[]) => backend.tensor(rng.normals(shape.reduce((a, b) => a * b, 1)), shape, 'bfloat16');
    const inputs = {
      q: t([1, T, 8, 32]), kCmp: t([1, C, 2, 32]), vCmp: t([1, C, 2, 32]), kSlc: t([1, T, 2, 32]), vSlc: t([1, T, 2, 32]),
      kWin: t([1, T, 2, 32]), vWin: t([1, T, 2, 32]), gates: backend.tensor(rng.uniforms(T * 24), [1, T, 8, 3], 'bfloat16'),
    };
    const dOutput = t([1, T, 8, 32]);
    const runs = [];
    for (let i = 0; i < 2; i++) {
      const forward = await backend.nsaForward({ config, ...inputs });
      const grads = await backend.nsaBackward({ config, ...inputs, forward, dOutput });
      runs.push(await Promise.all([grads.dq, grads.dkSlc, grads.dvSlc, grads.dkCmp, grads.dGates].map((g) => g.read())));
    }
    for (let i = 0; i < runs[0].length; i++) expect(Array.from(runs[1][i])).toEqual(Array.from(runs[0][i]));
  });
});
