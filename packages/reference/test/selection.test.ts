import { forcedBlocks, visibleCompressed } from '@nsa/core';
import { describe, expect, it } from 'vitest';
import { chooseBlocks, nsaForwardHost, selectBlocksHost } from '../src/index.js';
import { randomInputs, smallConfig } from './fixtures.js';

// l = 8, d = 4, l' = 16, n = 3, one initial and one local block.
const config = smallConfig({ heads: 2, kvHeads: 1 });
const { headDimV: Dv, heads: HQ } = config;

function choose(t: number, scores: number[], over = {}): number[] {
  const cfg = { ...config, ...over };
  const out = new Int32Array(cfg.selectCount);
  chooseBlocks(t, Float64Array.from(scores), cfg, new Uint8Array(64), forcedBlocks(t, cfg), out, 0);
  return [...out];
}

describe('visibility and forced blocks, worked by hand', () => {
  it('compressed blocks become visible when complete (t = l - 1 sees block 0)', () => {
    expect([0, 6, 7, 8, 10, 11, 15].map((t) => visibleCompressed(t, config))).toEqual([0, 0, 1, 1, 1, 2, 3]);
  });

  it('t < l - 1 has an empty compression branch: zero output, no NaN; t = l - 1 reads exactly vCmp[0]', () => {
    const x = randomInputs(config, 1, 9, 3);
    const gates = new Float64Array(x.gates.length);
    for (let i = 0; i < gates.length; i += 3) gates[i] = 1;
    const out = nsaForwardHost({ ...x, gates }, config, { B: 1, T: 9 }).output;
    for (let t = 0; t < 7; t++) expect([...out.subarray(t * HQ * Dv, (t + 1) * HQ * Dv)].every((v) => v === 0)).toBe(true);
    for (let h = 0; h < HQ; h++) {
      const row = out.subarray((7 * HQ + h) * Dv, (7 * HQ + h + 1) * Dv);
      for (let i = 0; i < Dv; i++) expect(row[i]).toBeCloseTo(x.vCmp[i], 14);
    }
  });

  it('t = 0: only block 0', () => expect(choose(0, [0])).toEqual([0, -1, -1]));
  it('t = l\' - 1: still only block 0', () => expect(choose(15, [0])).toEqual([0, -1, -1]));
  it('t = l\': blocks 0 (initial) and 1 (local); fewer candidates than n', () => expect(choose(16, [0, 0])).toEqual([0, 1, -1]));
  it('t = 2l\': three candidates, n = 3: all', () => expect(choose(32, [0, 0, 0])).toEqual([0, 1, 2]));
  it('t = 3l\': forced 0 and 3, the best of 1 and 2 fills the last place', () => {
    expect(choose(48, [0, 0.1, 0.7, 0])).toEqual([0, 2, 3]);
    expect(choose(48, [0, 0.7, 0.1, 0])).toEqual([0, 1, 3]);
  });
  it('forced blocks win even when they score lowest', () => {
    expect(choose(63, [0, 5, 9, 0])).toEqual([0, 2, 3]);
  });
  it('ties go to the lower block index', () => {
    expect(choose(80, [0, 0.2, 0.5, 0.5, 0.5, 0], { selectCount: 4 })).toEqual([0, 2, 3, 5]);
    expect(choose(80, [0, 0.5, 0.5, 0.5, 0.5, 0], { selectCount: 4 })).toEqual([0, 1, 2, 5]);
  });
  it('localBlocks 2 forces the current block and the one before it', () => {
    expect(choose(50, [0, 0.9, 0.1, 0], { localBlocks: 2 })).toEqual([0, 2, 3]);
  });
  it('no forced blocks: pure top-n', () => {
    expect(choose(70, [0.1, 0.4, 0.3, 0.2, 0.05], { initialBlocks: 0, localBlocks: 0, selectCount: 2 })).toEqual([1, 2]);
  });

  it('a dominant compressed block makes its selection block win (end to end)', () => {
    // Compressed block 5 covers tokens 20..27, inside selection block 1 (tokens 16..31).
    const T = 61;
    const x = randomInputs(config, 1, T, 8);
    const { headDimK: Dk } = config;
    const kCmp = x.kCmp.map((v) => v * 0.01);
    for (let d = 0; d < Dk; d++) kCmp[5 * Dk + d] = 3;
    const q = x.q.map((v) => Math.abs(v) + 1);
    const blocks = selectBlocksHost({ q, kCmp }, config, { B: 1, T });
    expect([...blocks.subarray(60 * 3, 61 * 3)]).toEqual([0, 1, 3]);
    // The same as the full forward chooses.
    expect(nsaForwardHost({ ...x, q, kCmp }, config, { B: 1, T }).blockIndices).toEqual(blocks);
  });
});
