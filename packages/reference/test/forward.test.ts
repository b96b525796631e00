import { describe, expect, it } from 'vitest';
import { nsaForwardHost, selectionScoresHost } from '../src/index.js';
import { allFinite, maxRelError, randomInputs, smallConfig } from './fixtures.js';
import { naiveNSA } from './naive-nsa.js';

describe('nsaForwardHost against a literal implementation of the spec', () => {
  const cases = [
    { name: 'G=2, Dk != Dv', over: {}, B: 1, T: 53 },
    { name: 'G=1, B=2', over: { heads: 2, kvHeads: 2 }, B: 2, T: 40 },
    { name: 'MQA G=4', over: { heads: 4, kvHeads: 1 }, B: 1, T: 70 },
    { name: 'G=4, H=2', over: { heads: 8, kvHeads: 2, headDimK: 4, headDimV: 3 }, B: 1, T: 45 },
    { name: 'G=16, H=2', over: { heads: 32, kvHeads: 2, headDimK: 3, headDimV: 2 }, B: 1, T: 40 },
    { name: 'MQA G=16 (H=1)', over: { heads: 16, kvHeads: 1, headDimK: 3, headDimV: 4 }, B: 1, T: 40 },
    { name: 'MQA G=3 (H=1)', over: { heads: 3, kvHeads: 1 }, B: 1, T: 41 },
    { name: 'l = l\' = d', over: { compressBlock: 4, compressStride: 4, selectBlock: 4, selectCount: 4 }, B: 1, T: 37 },
    { name: 'no forced blocks, n=2', over: { initialBlocks: 0, localBlocks: 0, selectCount: 2 }, B: 1, T: 66 },
    { name: 'l\' = 2l, localBlocks 2, window 7', over: { selectBlock: 16, compressBlock: 8, localBlocks: 2, window: 7 }, B: 1, T: 61 },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const config = smallConfig(c.over);
      const x = randomInputs(config, c.B, c.T, 11);
      const got = nsaForwardHost(x, config, { B: c.B, T: c.T });
      const want = naiveNSA(x, config, c.B, c.T);
      expect(got.blockIndices).toEqual(want.blockIndices);
      expect(maxRelError(got.output, want.output)).toBeLessThan(1e-13);
      expect(allFinite(got.output)).toBe(true);
    });
  }

  it('varlen', () => {
    const config = smallConfig();
    const cu = [0, 5, 5, 30, 77];
    const x = randomInputs(config, 1, 77, 5, cu);
    const got = nsaForwardHost(x, config, { B: 1, T: 77, cuSeqlens: cu });
    const want = naiveNSA(x, config, 1, 77, cu);
    expect(got.blockIndices).toEqual(want.blockIndices);
    expect(maxRelError(got.output, want.output)).toBeLessThan(1e-13);
    const sel = selectionScoresHost(x, config, { B: 1, T: 77, cuSeqlens: cu });
    expect(sel.blocks).toBe(want.blocks);
    expect(sel.blockIndices).toEqual(want.blockIndices);
    expect(maxRelError(sel.scores, want.scores)).toBeLessThan(1e-14);
  });

  it('selectionScoresHost gives the group scores S that chose the blocks', () => {
    const config = smallConfig({ heads: 8, kvHeads: 2 });
    const x = randomInputs(config, 2, 50, 6);
    const sel = selectionScoresHost(x, config, { B: 2, T: 50 });
    const want = naiveNSA(x, config, 2, 50);
    expect(sel.blocks).toBe(4);
    expect(sel.blockIndices).toEqual(want.blockIndices);
    expect(maxRelError(sel.scores, want.scores)).toBeLessThan(1e-14);
    // Each head's probabilities sum to 1 and every sub-block is counted l/d times: S sums to G*l/d.
    const H = 2;
    const t = 49;
    let total = 0;
    for (let j = 0; j < 4; j++) total += sel.scores[((50 + t) * H + 1) * 4 + j];
    expect(total).toBeCloseTo(4 * 2, 12);
  });
});
