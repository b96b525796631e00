import { compressedCount, type Tensor } from '@nsa/core';
import { describe, expect, it } from 'vitest';
import {
  attentionBackwardHost,
  attentionForwardHost,
  createReferenceBackend,
  nsaBackwardHost,
  nsaForwardHost,
  roundArray,
  type NSAHostInputs,
} from '../src/index.js';
import { maxRelError, randomInputs, smallConfig } from './fixtures.js';
import { randomArray, seededRandom } from './random.js';

describe('ReferenceBackend runs the host functions on rounded inputs', () => {
  for (const dtype of ['float64', 'float32', 'bfloat16'] as const) {
    it(`nsaForward + nsaBackward in ${dtype}`, async () => {
      const config = smallConfig();
      const T = 37;
      const be = createReferenceBackend();
      const raw = randomInputs(config, 1, T, 90);
      const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv } = config;
      const C = compressedCount(T, config);
      const shapes: Record<keyof NSAHostInputs, number[]> = {
        q: [1, T, HQ, Dk], kCmp: [1, C, H, Dk], vCmp: [1, C, H, Dv], kSlc: [1, T, H, Dk],
        vSlc: [1, T, H, Dv], kWin: [1, T, H, Dk], vWin: [1, T, H, Dv], gates: [1, T, HQ, 3],
      };
      const names = Object.keys(shapes) as (keyof NSAHostInputs)[];
      const tensors = Object.fromEntries(names.map((k) => [k, be.tensor(raw[k], shapes[k], dtype)])) as unknown as Record<keyof NSAHostInputs, Tensor>;
      // What the host sees: the same values rounded to the dtype.
      const x = Object.fromEntries(names.map((k) => [k, roundArray(raw[k].slice(), dtype)])) as unknown as NSAHostInputs;
      const dOut = randomArray(seededRandom(1), T * HQ * Dv);
      const fwd = await be.nsaForward({ config, ...tensors });
      const want = nsaForwardHost(x, config, { B: 1, T });
      expect(await fwd.blockIndices.read()).toEqual(want.blockIndices);
      const out = await fwd.output.read();
      expect(out).toEqual(dtype === 'float64' ? want.output : Float32Array.from(roundArray(want.output.slice(), dtype)));
      const grads = await be.nsaBackward({
        config,
        ...tensors,
        forward: fwd,
        dOutput: be.tensor(dOut, [1, T, HQ, Dv], dtype),
      });
      const g = nsaBackwardHost(x, config, { B: 1, T, blockIndices: want.blockIndices, dOutput: roundArray(dOut.slice(), dtype) });
      expect(grads.dkCmp.shape).toEqual(shapes.kCmp);
      expect(grads.dGates.dtype).toBe(dtype);
      expect(maxRelError(await grads.dq.read(), g.dq)).toBeLessThan(dtype === 'float64' ? 1e-15 : 1e-2);
      expect(maxRelError(await grads.dvWin.read(), g.dvWin)).toBeLessThan(dtype === 'float64' ? 1e-15 : 1e-2);
      grads.dispose();
      fwd.dispose();
      expect(() => fwd.output.read()).toThrow();
    });
  }

  it('attentionForward/Backward: GQA, TQ < Tk, custom scale, and varlen equal to per-sequence runs', async () => {
    const be = createReferenceBackend();
    const rand = seededRandom(3);
    const [B, TQ, Tk, HQ, H, Dk, Dv] = [2, 5, 12, 4, 2, 3, 4];
    const q = randomArray(rand, B * TQ * HQ * Dk);
    const k = randomArray(rand, B * Tk * H * Dk);
    const v = randomArray(rand, B * Tk * H * Dv);
    const dO = randomArray(rand, B * TQ * HQ * Dv);
    const args = {
      q: be.tensor(q, [B, TQ, HQ, Dk], 'float64'),
      k: be.tensor(k, [B, Tk, H, Dk], 'float64'),
      v: be.tensor(v, [B, Tk, H, Dv], 'float64'),
      scale: 0.3,
    };
    const fwd = await be.attentionForward(args);
    const shape = { B, TQ, Tk, HQ, H, Dk, Dv, scale: 0.3 };
    expect(await fwd.output.read()).toEqual(attentionForwardHost(q, k, v, shape).output);
    const g = await be.attentionBackward({ ...args, forward: fwd, dOutput: be.tensor(dO, [B, TQ, HQ, Dv], 'float64') });
    expect(await g.dk.read()).toEqual(attentionBackwardHost(q, k, v, dO, shape).dk);

    // Varlen: each packed sequence attends only to itself.
    const cu = [0, 4, 4, 11];
    const T = 11;
    const qv = randomArray(rand, T * HQ * Dk);
    const kv = randomArray(rand, T * H * Dk);
    const vv = randomArray(rand, T * H * Dv);
    const packed = await be.attentionForward({
      q: be.tensor(qv, [1, T, HQ, Dk], 'float64'),
      k: be.tensor(kv, [1, T, H, Dk], 'float64'),
      v: be.tensor(vv, [1, T, H, Dv], 'float64'),
      cuSeqlens: cu,
    });
    const got = (await packed.output.read()) as Float64Array;
    for (let s = 0; s + 1 < cu.length; s++) {
      const [a, b] = [cu[s], cu[s + 1]];
      const one = attentionForwardHost(qv.slice(a * HQ * Dk, b * HQ * Dk), kv.slice(a * H * Dk, b * H * Dk), vv.slice(a * H * Dv, b * H * Dv), {
        B: 1, TQ: b - a, Tk: b - a, HQ, H, Dk, Dv,
      });
      expect(got.slice(a * HQ * Dv, b * HQ * Dv)).toEqual(one.output);
    }
    const k3 = be.tensor(randomArray(rand, B * Tk * 3 * Dk), [B, Tk, 3, Dk], 'float64');
    const v3 = be.tensor(randomArray(rand, B * Tk * 3 * Dv), [B, Tk, 3, Dv], 'float64');
    await expect(be.attentionForward({ ...args, k: k3, v: v3 })).rejects.toThrow('q has 4 heads, not a multiple of the 3 key/value heads');
  });
});
