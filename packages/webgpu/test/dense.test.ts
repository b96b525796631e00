// Dense causal attention (the baseline): forward, backward, decode and varlen against the reference.
import { SeededRandom } from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WebGPUBackend } from '../src/backend.js';
import { gpuBackend, probe, read, relativeError } from './gpu.js';

const reference = createReferenceBackend();

describe.skipIf(!probe.available)(`webgpu dense attention${probe.available ? '' : ` (skipped: ${probe.reason})`}`, () => {
  let gpu: WebGPUBackend;
  beforeAll(async () => {
    gpu = await gpuBackend();
  });
  afterAll(() => gpu?.dispose());

  const cases = [
    { name: 'B = 2, G = 2, Dk != Dv', B: 2, TQ: 40, Tk: 40, HQ: 4, H: 2, Dk: 16, Dv: 12 },
    { name: 'decode TQ = 1 (split keys)', B: 3, TQ: 1, Tk: 150, HQ: 4, H: 2, Dk: 16, Dv: 12 },
    { name: 'decode TQ = 5', B: 2, TQ: 5, Tk: 77, HQ: 4, H: 2, Dk: 16, Dv: 12 },
    { name: 'varlen', B: 1, TQ: 50, Tk: 50, HQ: 4, H: 2, Dk: 16, Dv: 12, cuSeqlens: [0, 20, 21, 50] },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const rng = new SeededRandom(c.Tk);
      const { B, TQ, Tk, HQ, H, Dk, Dv, cuSeqlens } = c;
      const values = { q: rng.normals(B * TQ * HQ * Dk), k: rng.normals(B * Tk * H * Dk), v: rng.normals(B * Tk * H * Dv), dO: rng.normals(B * TQ * HQ * Dv) };
      const make = (be: WebGPUBackend | typeof reference, dt: 'float32' | 'float64') => ({
        q: be.tensor(values.q, [B, TQ, HQ, Dk], dt),
        k: be.tensor(values.k, [B, Tk, H, Dk], dt),
        v: be.tensor(values.v, [B, Tk, H, Dv], dt),
        cuSeqlens,
      });
      const mine = make(gpu, 'float32');
      const ref = make(reference, 'float64');
      const fwd = await gpu.attentionForward(mine);
      const rFwd = await reference.attentionForward(ref);
      expect(relativeError(await read(fwd.output), await read(rFwd.output))).toBeLessThan(1e-4);
      if (TQ === Tk) {
        const grads = await gpu.attentionBackward({ ...mine, forward: fwd, dOutput: gpu.tensor(values.dO, [B, TQ, HQ, Dv], 'float32') });
        const rGrads = await reference.attentionBackward({ ...ref, forward: rFwd, dOutput: reference.tensor(values.dO, [B, TQ, HQ, Dv], 'float64') });
        for (const name of ['dq', 'dk', 'dv'] as const) expect(relativeError(await read(grads[name]), await read(rGrads[name])), name).toBeLessThan(1e-4);
      }
    });
  }
});
