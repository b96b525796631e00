import { describe, expect, it } from 'vitest';
import {
  checkAttention,
  checkNSADecode,
  checkNSAForward,
  checkNSACacheOptions,
  checkCacheAppend,
  checkCacheAppendCompressed,
  createNSAConfig,
  NSAShapeError,
  UnsupportedError,
  type NSACache,
  type NSAForwardArgs,
} from '../src/index.js';
import { FakeTensor } from './fake-tensor.js';

const config = createNSAConfig({ heads: 4, kvHeads: 2, headDimK: 8, headDimV: 6, compressBlock: 8, compressStride: 4, selectBlock: 16, selectCount: 3, window: 16 });

function inputs(B = 2, T = 40, dtype: 'float32' | 'float16' = 'float32'): NSAForwardArgs {
  const C = Math.floor((T - 8) / 4) + 1;
  return {
    config,
    q: new FakeTensor([B, T, 4, 8], dtype),
    kCmp: new FakeTensor([B, C, 2, 8], dtype),
    vCmp: new FakeTensor([B, C, 2, 6], dtype),
    kSlc: new FakeTensor([B, T, 2, 8], dtype),
    vSlc: new FakeTensor([B, T, 2, 6], dtype),
    kWin: new FakeTensor([B, T, 2, 8], dtype),
    vWin: new FakeTensor([B, T, 2, 6], dtype),
    gates: new FakeTensor([B, T, 4, 3], dtype),
  };
}

describe('checkNSAForward', () => {
  it('reads the sizes off valid inputs', () => {
    expect(checkNSAForward(inputs(), 'fake', ['float32'])).toMatchObject({ B: 2, T: 40, C: 9, HQ: 4, H: 2, G: 2, Dk: 8, Dv: 6, n: 3 });
  });

  it('names the wrong tensor and both shapes', () => {
    const args = { ...inputs(), vWin: new FakeTensor([2, 40, 2, 8]) };
    expect(() => checkNSAForward(args, 'fake', ['float32'])).toThrow('vWin has shape [2, 40, 2, 8], expected [2, 40, 2, 6]');
  });

  it('checks heads against the config', () => {
    const args = { ...inputs(), q: new FakeTensor([2, 40, 3, 8]) };
    expect(() => checkNSAForward(args, 'fake', ['float32'])).toThrow('q has 3 heads (dim 2) but config.heads = 4');
  });

  it('rejects mixed dtypes, foreign and disposed tensors, unsupported dtypes', () => {
    expect(() => checkNSAForward({ ...inputs(), gates: new FakeTensor([2, 40, 4, 3], 'float16') }, 'fake', ['float32'])).toThrow(
      'gates has dtype float16, expected float32 (like q)',
    );
    expect(() => checkNSAForward({ ...inputs(), kSlc: new FakeTensor([2, 40, 2, 8], 'float32', 'other') }, 'fake', ['float32'])).toThrow(
      "kSlc belongs to backend 'other', not 'fake'",
    );
    const disposed = new FakeTensor([2, 40, 2, 8]);
    disposed.dispose();
    expect(() => checkNSAForward({ ...inputs(), kWin: disposed }, 'fake', ['float32'])).toThrow('kWin was disposed before use');
    expect(() => checkNSAForward(inputs(2, 40, 'float16'), 'fake', ['float32'])).toThrow(UnsupportedError);
    expect(() => checkNSAForward({ ...inputs(), kCmp: undefined as never }, 'fake', ['float32'])).toThrow(/kCmp is missing/);
  });

  it('checks blockIndices shape and dtype', () => {
    expect(() => checkNSAForward({ ...inputs(), blockIndices: new FakeTensor([2, 40, 2, 3], 'float32') }, 'fake', ['float32'])).toThrow(
      'blockIndices has dtype float32, expected int32',
    );
    expect(() => checkNSAForward({ ...inputs(), blockIndices: new FakeTensor([2, 40, 2, 4], 'int32') }, 'fake', ['float32'])).toThrow(
      'blockIndices has shape [2, 40, 2, 4], expected [2, 40, 2, 3]',
    );
  });

  it('sizes varlen compressed tensors per sequence', () => {
    const base = inputs(1, 40);
    // sequences of 20 and 20 tokens: 4 + 4 compressed blocks (not 9).
    const args = { ...base, cuSeqlens: [0, 20, 40], kCmp: new FakeTensor([1, 8, 2, 8]), vCmp: new FakeTensor([1, 8, 2, 6]) };
    expect(checkNSAForward(args, 'fake', ['float32']).C).toBe(8);
    expect(() => checkNSAForward({ ...inputs(2, 40), cuSeqlens: [0, 40] }, 'fake', ['float32'])).toThrow(/needs batch 1/);
  });
});

describe('checkNSADecode', () => {
  const cache = (length: number, compressedLength: number) =>
    ({ backend: 'fake', config, batch: 1, dtype: 'float32', capacity: 64, length, compressedLength }) as unknown as NSACache;

  it('places the queries at the end of the cache', () => {
    const dims = checkNSADecode({ cache: cache(20, 4), q: new FakeTensor([1, 2, 4, 8]), gates: new FakeTensor([1, 2, 4, 3]) }, 'fake');
    expect(dims).toMatchObject({ TQ: 2, Tk: 20, C: 4 });
  });

  it('asks for the missing compressed blocks', () => {
    expect(() => checkNSADecode({ cache: cache(20, 3), q: new FakeTensor([1, 1, 4, 8]), gates: new FakeTensor([1, 1, 4, 3]) }, 'fake')).toThrow(
      'cache holds 3 compressed blocks but 20 tokens need 4: appendCompressed the missing blocks first',
    );
    expect(() => checkNSADecode({ cache: cache(2, 0), q: new FakeTensor([1, 3, 4, 8]), gates: new FakeTensor([1, 3, 4, 3]) }, 'fake')).toThrow(
      /3 queries but the cache holds 2 tokens/,
    );
  });
});

describe('checkAttention', () => {
  it('accepts GQA with fewer queries than keys', () => {
    const dims = checkAttention({ q: new FakeTensor([1, 1, 8, 16]), k: new FakeTensor([1, 9, 2, 16]), v: new FakeTensor([1, 9, 2, 4]) }, 'fake', ['float32']);
    expect(dims).toMatchObject({ TQ: 1, Tk: 9, G: 4, Dv: 4, scale: 0.25 });
  });

  it('rejects bad head counts and too many queries', () => {
    expect(() => checkAttention({ q: new FakeTensor([1, 4, 6, 16]), k: new FakeTensor([1, 4, 4, 16]), v: new FakeTensor([1, 4, 4, 4]) }, 'fake', ['float32'])).toThrow(
      NSAShapeError,
    );
    expect(() => checkAttention({ q: new FakeTensor([1, 5, 4, 16]), k: new FakeTensor([1, 4, 4, 16]), v: new FakeTensor([1, 4, 4, 4]) }, 'fake', ['float32'])).toThrow(
      /5 queries but k holds 4 tokens/,
    );
  });
});

describe('cache checks', () => {
  const cache = (length: number, compressedLength: number, capacity = 40) =>
    ({ backend: 'fake', config, batch: 1, dtype: 'float32', capacity, length, compressedLength }) as unknown as NSACache;
  const raw = (t: number, dtype: 'float32' | 'float16' = 'float32') => ({
    kSlc: new FakeTensor([1, t, 2, 8], dtype),
    vSlc: new FakeTensor([1, t, 2, 6], dtype),
    kWin: new FakeTensor([1, t, 2, 8], dtype),
    vWin: new FakeTensor([1, t, 2, 6], dtype),
  });

  it('validates options', () => {
    expect(checkNSACacheOptions({ config, batch: 2, dtype: 'float32', capacity: 40 }, 'fake', ['float32'])).toBe(9);
    expect(() => checkNSACacheOptions({ config, batch: 0, dtype: 'float32', capacity: 40 }, 'fake', ['float32'])).toThrow('cache batch = 0 must be a positive integer');
    expect(() => checkNSACacheOptions({ config, batch: 1, dtype: 'float32', capacity: 2.5 }, 'fake', ['float32'])).toThrow('cache capacity = 2.5');
    expect(() => checkNSACacheOptions({ config, batch: 1, dtype: 'float16', capacity: 4 }, 'fake', ['float32'])).toThrow(UnsupportedError);
  });

  it('checks appended tokens: shapes, dtype, capacity', () => {
    expect(checkCacheAppend(cache(10, 1), raw(3))).toBe(3);
    expect(() => checkCacheAppend(cache(38, 0), raw(3))).toThrow('cache overflow: appending 3 tokens to 38 would exceed the capacity of 40');
    expect(() => checkCacheAppend(cache(0, 0), raw(3, 'float16'))).toThrow("kSlc has dtype float16, expected the cache's float32");
    expect(() => checkCacheAppend(cache(0, 0), { ...raw(3), vWin: new FakeTensor([1, 2, 2, 6]) })).toThrow('vWin has shape [1, 2, 2, 6], expected [1, 3, 2, 6]');
  });

  it('accepts only compressed blocks the cached tokens complete', () => {
    const blocks = (c: number) => ({ kCmp: new FakeTensor([1, c, 2, 8]), vCmp: new FakeTensor([1, c, 2, 6]) });
    expect(checkCacheAppendCompressed(cache(12, 0), blocks(2))).toBe(2); // tokens 0..11 complete blocks 0 and 1
    expect(() => checkCacheAppendCompressed(cache(12, 1), blocks(2))).toThrow(
      'appending 2 compressed blocks to 1 would exceed the 2 blocks that 12 cached tokens complete: append the raw tokens first',
    );
  });
});
