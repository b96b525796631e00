import { createNSAConfig } from '@nsa/core';
import { describe, expect, it } from 'vitest';
import {
  createMLPCompressorWeights,
  meanCompress,
  meanCompressBackward,
  mlpCompress,
  mlpCompressBackward,
  nsaBackwardHost,
  nsaForwardHost,
  type MLPCompressorWeights,
} from '../src/index.js';
import { randomInputs, smallConfig } from './fixtures.js';
import { dotLoss, gradError } from './gradcheck.js';
import { randomArray, seededRandom } from './random.js';

const config = createNSAConfig({ compressBlock: 8, compressStride: 4, selectBlock: 16 });
const H = 2;
const D = 3;

function weights(seed: number, F = 5): MLPCompressorWeights {
  const rand = seededRandom(seed);
  const w = createMLPCompressorWeights(8, D, F, rand);
  // Non-zero biases so their gradients are exercised.
  return { ...w, b1: randomArray(rand, F, -0.5, 0.5), b2: randomArray(rand, D, -0.5, 0.5) };
}

describe('mean compressor', () => {
  it('averages the l tokens of each block', () => {
    const T = 21;
    const x = randomArray(seededRandom(1), T * H * D);
    const y = meanCompress(x, config, { B: 1, T, H, D });
    expect(y.length).toBe(4 * H * D);
    for (let i = 0; i < 4; i++) {
      for (let k = 0; k < H * D; k++) {
        let s = 0;
        for (let r = 0; r < 8; r++) s += x[(i * 4 + r) * H * D + k];
        expect(y[i * H * D + k]).toBeCloseTo(s / 8, 14);
      }
    }
  });

  it('backward matches finite differences (B = 2)', () => {
    const shape = { B: 2, T: 19, H, D };
    const x = randomArray(seededRandom(2), 2 * 19 * H * D);
    const dy = randomArray(seededRandom(3), meanCompress(x, config, shape).length);
    const dx = meanCompressBackward(dy, config, shape);
    expect(gradError(x, dx, () => dotLoss(meanCompress(x, config, shape), dy), 60)).toBeLessThan(1e-6);
  });
});

describe('MLP compressor (position table, Linear, SiLU, Linear)', () => {
  it('computes y = silu((x + pos) w1 + b1) w2 + b2 per block and head', () => {
    const T = 12;
    const w = weights(4);
    const x = randomArray(seededRandom(5), T * H * D);
    const y = mlpCompress(x, w, config, { B: 1, T, H, D });
    expect(y.length).toBe(2 * H * D);
    const F = w.b1.length;
    for (let i = 0; i < 2; i++) {
      for (let h = 0; h < H; h++) {
        const flat: number[] = [];
        for (let r = 0; r < 8; r++) for (let e = 0; e < D; e++) flat.push(x[((i * 4 + r) * H + h) * D + e] + w.pos[r * D + e]);
        const a = Array.from({ length: F }, (_, j) => {
          const z = w.b1[j] + flat.reduce((s, v, k) => s + v * w.w1[k * F + j], 0);
          return z / (1 + Math.exp(-z));
        });
        for (let e = 0; e < D; e++) {
          const want = w.b2[e] + a.reduce((s, v, j) => s + v * w.w2[j * D + e], 0);
          expect(y[(i * H + h) * D + e]).toBeCloseTo(want, 13);
        }
      }
    }
  });

  for (const [name, shape] of [
    ['B = 2', { B: 2, T: 17, H, D }],
    ['varlen [0, 9, 9, 30]', { B: 1, T: 30, H, D, cuSeqlens: [0, 9, 9, 30] }],
  ] as const) {
    it(`backward matches finite differences for x and every weight (${name})`, () => {
      const w = weights(6);
      const x = randomArray(seededRandom(7), shape.B * shape.T * H * D);
      const dy = randomArray(seededRandom(8), mlpCompress(x, w, config, shape).length);
      const g = mlpCompressBackward(x, w, dy, config, shape);
      const loss = () => dotLoss(mlpCompress(x, w, config, shape), dy);
      expect(gradError(x, g.dx, loss), 'x').toBeLessThan(1e-6);
      expect(gradError(w.pos, g.dPos, loss), 'pos').toBeLessThan(1e-6);
      expect(gradError(w.w1, g.dW1, loss), 'w1').toBeLessThan(1e-6);
      expect(gradError(w.b1, g.dB1, loss), 'b1').toBeLessThan(1e-6);
      expect(gradError(w.w2, g.dW2, loss), 'w2').toBeLessThan(1e-6);
      expect(gradError(w.b2, g.dB2, loss), 'b2').toBeLessThan(1e-6);
    });
  }

  it('varlen blocks never cross a sequence: equal to compressing each sequence alone', () => {
    const cu = [0, 11, 11, 27, 30];
    const w = weights(9);
    const x = randomArray(seededRandom(10), 30 * H * D);
    const packed = mlpCompress(x, w, config, { B: 1, T: 30, H, D, cuSeqlens: cu });
    const meanPacked = meanCompress(x, config, { B: 1, T: 30, H, D, cuSeqlens: cu });
    const parts: number[] = [];
    const meanParts: number[] = [];
    for (let s = 0; s + 1 < cu.length; s++) {
      const one = x.slice(cu[s] * H * D, cu[s + 1] * H * D);
      const shape = { B: 1, T: cu[s + 1] - cu[s], H, D };
      parts.push(...mlpCompress(one, w, config, shape));
      meanParts.push(...meanCompress(one, config, shape));
    }
    expect([...packed]).toEqual(parts);
    expect([...meanPacked]).toEqual(meanParts);
    expect(packed.length).toBe((1 + 0 + 3 + 0) * H * D);
  });

  it('rejects weights of the wrong size', () => {
    const w = weights(11);
    expect(() => mlpCompress(new Float64Array(8 * H * D), { ...w, w2: new Float64Array(3) }, config, { B: 1, T: 8, H, D })).toThrow(
      'w2 has 3 elements, expected [5, 3] = 15',
    );
  });
});

describe('compressor -> NSA, end to end', () => {
  it('the chain rule through mlpCompress and nsaBackward matches finite differences of the raw keys', () => {
    const cfg = smallConfig({ headDimK: 3, headDimV: 3 });
    const T = 30;
    const x = randomInputs(cfg, 1, T, 12);
    const wk = createMLPCompressorWeights(8, 3, 4, seededRandom(13));
    const shape = { B: 1, T, H: cfg.kvHeads, D: 3 };
    const raw = x.kSlc; // compress the selection keys into kCmp, as a model sharing keys would
    const dOut = randomArray(seededRandom(14), T * cfg.heads * 3);
    const fwd = nsaForwardHost({ ...x, kCmp: mlpCompress(raw, wk, cfg, shape) }, cfg, { B: 1, T });
    const run = () => nsaForwardHost({ ...x, kCmp: mlpCompress(raw, wk, cfg, shape) }, cfg, { B: 1, T, blockIndices: fwd.blockIndices });
    const g = nsaBackwardHost({ ...x, kCmp: mlpCompress(raw, wk, cfg, shape) }, cfg, {
      B: 1, T, blockIndices: fwd.blockIndices, dOutput: dOut,
    });
    const gc = mlpCompressBackward(raw, wk, g.dkCmp, cfg, shape);
    const dRaw = g.dkSlc.map((v, i) => v + gc.dx[i]);
    expect(gradError(raw, dRaw, () => dotLoss(run().output, dOut))).toBeLessThan(1e-6);
    expect(gradError(wk.w1, gc.dW1, () => dotLoss(run().output, dOut))).toBeLessThan(1e-6);
  });
});
