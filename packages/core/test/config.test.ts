import { describe, expect, it } from 'vitest';
import { createNSAConfig, groupSize, NSAConfigError, PAPER_DEFAULTS } from '../src/index.js';

describe('createNSAConfig', () => {
  it('fills the paper defaults and the default scale', () => {
    const config = createNSAConfig();
    expect(config).toMatchObject(PAPER_DEFAULTS);
    expect(config.scale).toBeCloseTo(1 / Math.sqrt(192), 15);
    expect(Object.isFrozen(config)).toBe(true);
    expect(groupSize(config)).toBe(16);
  });

  it('keeps explicit values', () => {
    const config = createNSAConfig({ heads: 8, kvHeads: 8, headDimK: 16, headDimV: 8, scale: 0.5 });
    expect(config.heads).toBe(8);
    expect(config.scale).toBe(0.5);
    expect(groupSize(config)).toBe(1);
  });

  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ['non-integer', { window: 2.5 }, 'window', /window = 2.5 is invalid: must be a positive integer/],
    ['zero', { selectCount: 0 }, 'selectCount', /positive integer/],
    ['negative forced count', { initialBlocks: -1 }, 'initialBlocks', /integer >= 0/],
    ['d does not divide l', { compressBlock: 32, compressStride: 12, selectBlock: 48 }, 'compressStride', /must divide compressBlock \(32\)/],
    ["d does not divide l'", { compressBlock: 32, compressStride: 16, selectBlock: 72 }, 'compressStride', /must divide selectBlock \(72\)/],
    ["l > l'", { compressBlock: 128, compressStride: 16, selectBlock: 64 }, 'compressBlock', /<= selectBlock/],
    ['n below forced', { selectCount: 2, initialBlocks: 1, localBlocks: 2 }, 'selectCount', /initialBlocks \+ localBlocks \(1 \+ 2 = 3\)/],
    ['heads not a multiple', { heads: 6, kvHeads: 4 }, 'heads', /multiple of kvHeads \(4\)/],
    ['bad scale', { scale: -1 }, 'scale', /finite number > 0/],
    ['NaN scale', { scale: Number.NaN }, 'scale', /finite number > 0/],
    ['unknown field', { windowSize: 3 }, 'windowSize', /unknown field/],
  ];
  it.each(cases)('rejects %s, naming the field', (_name, input, field, message) => {
    let error: unknown;
    try {
      createNSAConfig(input as never);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(NSAConfigError);
    expect((error as NSAConfigError).field).toBe(field);
    expect((error as Error).message).toMatch(message);
  });

  it('allows zero forced blocks', () => {
    expect(createNSAConfig({ initialBlocks: 0, localBlocks: 0, selectCount: 1 }).selectCount).toBe(1);
  });
});
