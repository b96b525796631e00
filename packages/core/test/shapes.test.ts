import { describe, expect, it } from 'vitest';
import {
  candidateCount,
  compressedCount,
  compressedRangeOfSelectionBlock,
  createNSAConfig,
  forcedBlocks,
  keysReadPerQuery,
  NSAShapeError,
  overlapWeight,
  selectionBlockCount,
  varlenLayout,
  visibleCompressed,
  windowStart,
} from '../src/index.js';

const paper = createNSAConfig();

describe('compressed blocks', () => {
  it('counts C = floor((T - l)/d) + 1 for T >= l, else 0', () => {
    expect(compressedCount(0, paper)).toBe(0);
    expect(compressedCount(31, paper)).toBe(0);
    expect(compressedCount(32, paper)).toBe(1);
    expect(compressedCount(47, paper)).toBe(1);
    expect(compressedCount(48, paper)).toBe(2);
    expect(compressedCount(65536, paper)).toBe(4095);
  });

  it('makes a block visible at the query that ends it', () => {
    expect(visibleCompressed(0, paper)).toBe(0);
    expect(visibleCompressed(30, paper)).toBe(0);
    expect(visibleCompressed(31, paper)).toBe(1); // t = l - 1 sees block 0 = tokens 0..31
    expect(visibleCompressed(32, paper)).toBe(1);
    expect(visibleCompressed(46, paper)).toBe(1);
    expect(visibleCompressed(47, paper)).toBe(2); // block 1 = tokens 16..47
  });
});

describe('overlap mapping', () => {
  it('weights compressed block i by the sub-blocks it shares with selection block j', () => {
    // l/d = 2 sub-blocks per compressed block, l'/d = 4 per selection block.
    expect(overlapWeight(0, 0, paper)).toBe(2);
    expect(overlapWeight(2, 0, paper)).toBe(2);
    expect(overlapWeight(3, 0, paper)).toBe(1); // sub-blocks 3 (in j=0) and 4 (in j=1)
    expect(overlapWeight(3, 1, paper)).toBe(1);
    expect(overlapWeight(4, 0, paper)).toBe(0);
    expect(overlapWeight(4, 1, paper)).toBe(2);
    expect(compressedRangeOfSelectionBlock(1, paper)).toEqual([3, 8]);
    expect(compressedRangeOfSelectionBlock(0, paper)).toEqual([0, 4]);
  });

  it('is the identity when l = l\' = d', () => {
    const c = createNSAConfig({ compressBlock: 16, compressStride: 16, selectBlock: 16 });
    for (let i = 0; i < 5; i++) for (let j = 0; j < 5; j++) expect(overlapWeight(i, j, c)).toBe(i === j ? 1 : 0);
  });

  it('gives every compressed block l/d sub-blocks in total', () => {
    for (let i = 0; i < 20; i++) {
      let sum = 0;
      for (let j = 0; j < 20; j++) sum += overlapWeight(i, j, paper);
      expect(sum).toBe(2);
    }
  });
});

describe('selection and window', () => {
  it('forces the initial and local blocks that exist', () => {
    expect(forcedBlocks(0, paper)).toEqual([0]);
    expect(forcedBlocks(63, paper)).toEqual([0]);
    expect(forcedBlocks(64, paper)).toEqual([0, 1]);
    expect(forcedBlocks(200, paper)).toEqual([0, 2, 3]);
    const none = createNSAConfig({ initialBlocks: 0, localBlocks: 0, selectCount: 4 });
    expect(forcedBlocks(500, none)).toEqual([]);
    const wide = createNSAConfig({ initialBlocks: 2, localBlocks: 3, selectCount: 6 });
    expect(forcedBlocks(130, wide)).toEqual([0, 1, 2]);
  });

  it('counts candidates and selection blocks', () => {
    expect(candidateCount(0, paper)).toBe(1);
    expect(candidateCount(64, paper)).toBe(2);
    expect(selectionBlockCount(65, paper)).toBe(2);
    expect(selectionBlockCount(64, paper)).toBe(1);
  });

  it('starts the window w - 1 tokens before the query', () => {
    expect(windowStart(0, paper)).toBe(0);
    expect(windowStart(511, paper)).toBe(0);
    expect(windowStart(512, paper)).toBe(1);
  });

  it('reads 5632 keys at 64k with the defaults, as the spec says', () => {
    const r = keysReadPerQuery(65535, paper);
    expect(r.selected).toBe(16 * 64);
    expect(r.window).toBe(512);
    expect(r.compressed).toBe(4095);
  });
});

describe('varlenLayout', () => {
  it('derives compressed offsets per sequence', () => {
    const layout = varlenLayout([0, 40, 40, 100], 100, paper);
    expect([...layout.tokenOffsets]).toEqual([0, 40, 40, 100]);
    expect([...layout.compressedOffsets]).toEqual([0, 1, 1, 3]);
    expect(layout.maxLength).toBe(60);
  });

  it.each([
    [[0], 10, /at least 2 entries/],
    [[1, 10], 10, /cuSeqlens\[0\] must be 0/],
    [[0, 5], 10, /must end at the packed length 10/],
    [[0, 6, 4, 10], 10, /non-decreasing/],
  ])('rejects %j for %i tokens', (cu, total, message) => {
    expect(() => varlenLayout(cu, total, paper)).toThrow(NSAShapeError);
    expect(() => varlenLayout(cu, total, paper)).toThrow(message);
  });
});
