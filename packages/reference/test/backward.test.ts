import { describe, expect, it } from 'vitest';
import { attentionBackwardHost, attentionForwardHost, nsaBackwardHost, nsaForwardHost, type NSAHostInputs } from '../src/index.js';
import { allFinite, randomInputs, smallConfig } from './fixtures.js';
import { dotLoss, gradError } from './gradcheck.js';
import { randomArray, seededRandom } from './random.js';

const NAMES = ['q', 'kCmp', 'vCmp', 'kSlc', 'vSlc', 'kWin', 'vWin', 'gates'] as const;
const GRAD = { q: 'dq', kCmp: 'dkCmp', vCmp: 'dvCmp', kSlc: 'dkSlc', vSlc: 'dvSlc', kWin: 'dkWin', vWin: 'dvWin', gates: 'dGates' } as const;

describe('nsaBackwardHost matches central finite differences (float64, rel < 1e-6)', () => {
  const cases = [
    { name: 'G=2, Dk=6, Dv=5, T=53', over: {}, T: 53, cu: undefined },
    { name: 'G=1, T=40', over: { heads: 2, kvHeads: 2 }, T: 40, cu: undefined },
    { name: 'G=4 MQA, window 9, T=70', over: { heads: 4, kvHeads: 1, window: 9, headDimK: 3, headDimV: 4 }, T: 70, cu: undefined },
    { name: 'G=16 MQA, T=40', over: { heads: 16, kvHeads: 1, headDimK: 3, headDimV: 2 }, T: 40, cu: undefined },
    { name: 'G=4, H=2, T=45', over: { heads: 8, kvHeads: 2, headDimK: 4, headDimV: 3 }, T: 45, cu: undefined },
    { name: 'varlen [0, 21, 21, 66]', over: {}, T: 66, cu: [0, 21, 21, 66] },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const config = smallConfig(c.over);
      const x = randomInputs(config, 1, c.T, 101, c.cu);
      const shape = { B: 1, T: c.T, cuSeqlens: c.cu };
      const fwd = nsaForwardHost(x, config, shape);
      const dOut = randomArray(seededRandom(7), fwd.output.length);
      const grads = nsaBackwardHost(x, config, { ...shape, blockIndices: fwd.blockIndices, lse: fwd.lse, dOutput: dOut });
      // The block choice is a constant of the backward: hold it fixed while perturbing.
      const loss = () => dotLoss(nsaForwardHost(x, config, { ...shape, blockIndices: fwd.blockIndices }).output, dOut);
      for (const name of NAMES) {
        const g = grads[GRAD[name]];
        expect(allFinite(g)).toBe(true);
        expect(gradError(x[name as keyof NSAHostInputs], g, loss), name).toBeLessThan(1e-6);
      }
    });
  }

  it('recomputes the statistics when lse is not given', () => {
    const config = smallConfig();
    const x = randomInputs(config, 2, 30, 3);
    const fwd = nsaForwardHost(x, config, { B: 2, T: 30 });
    const dOut = randomArray(seededRandom(8), fwd.output.length);
    const a = nsaBackwardHost(x, config, { B: 2, T: 30, blockIndices: fwd.blockIndices, lse: fwd.lse, dOutput: dOut });
    const b = nsaBackwardHost(x, config, { B: 2, T: 30, blockIndices: fwd.blockIndices, dOutput: dOut });
    for (const name of NAMES) expect(b[GRAD[name]]).toEqual(a[GRAD[name]]);
  });
});

describe('dense attention backward matches finite differences', () => {
  for (const [HQ, H, TQ, Tk] of [
    [4, 2, 9, 9],
    [3, 1, 4, 11],
    [2, 2, 1, 7],
  ]) {
    it(`HQ=${HQ} H=${H} TQ=${TQ} Tk=${Tk}`, () => {
      const rand = seededRandom(HQ * 100 + TQ);
      const shape = { B: 2, TQ, Tk, HQ, H, Dk: 5, Dv: 3 };
      const q = randomArray(rand, 2 * TQ * HQ * 5, -2, 2);
      const k = randomArray(rand, 2 * Tk * H * 5);
      const v = randomArray(rand, 2 * Tk * H * 3);
      const dOut = randomArray(rand, 2 * TQ * HQ * 3);
      const fwd = attentionForwardHost(q, k, v, shape);
      const g = attentionBackwardHost(q, k, v, dOut, shape, fwd.lse);
      const loss = () => dotLoss(attentionForwardHost(q, k, v, shape).output, dOut);
      expect(gradError(q, g.dq, loss)).toBeLessThan(1e-6);
      expect(gradError(k, g.dk, loss)).toBeLessThan(1e-6);
      expect(gradError(v, g.dv, loss)).toBeLessThan(1e-6);
    });
  }
});
