import { NSAShapeError, UnsupportedError, createNSAConfig, varlenLayout, type Tensor } from '@nsa/core';
import { describe, expect, it } from 'vitest';
import { CudaBackend } from '../src/backend.js';
import { trainingSeq } from '../src/seq.js';
import { fakeAddon } from './fake-addon.js';

const config = createNSAConfig({
  compressBlock: 16, compressStride: 8, selectBlock: 32, selectCount: 4, window: 64,
  heads: 4, kvHeads: 2, headDimK: 16, headDimV: 8,
});

function setup() {
  const addon = fakeAddon();
  const backend = new CudaBackend(addon, 'Fake GPU (sm_90)');
  const B = 2, T = 40, C = 4, { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv } = config;
  const t = (shape: number[], dtype: 'float32' | 'bfloat16' = 'float32'): Tensor =>
    backend.tensor(Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i + 1)), shape, dtype);
  const inputs = {
    q: t([B, T, HQ, Dk]), kCmp: t([B, C, H, Dk]), vCmp: t([B, C, H, Dv]), kSlc: t([B, T, H, Dk]), vSlc: t([B, T, H, Dv]),
    kWin: t([B, T, H, Dk]), vWin: t([B, T, H, Dv]), gates: t([B, T, HQ, 3]),
  };
  return { addon, backend, inputs, t, B, T };
}

describe('CudaBackend (host fake of the addon)', () => {
  it('round-trips tensors in each dtype, rounding 16-bit floats', async () => {
    const { backend } = setup();
    const values = [1.5, -2.25, 3.0078125, 1e-3];
    expect(Array.from(await backend.tensor(values, [4], 'float32').read())).toEqual(values.map(Math.fround));
    const bf = await backend.tensor(values, [2, 2], 'bfloat16').read();
    expect(bf[2]).toBe(3); // 3.0078125 rounds to 3 in bfloat16
    expect(Array.from(await backend.tensor([1, -1, 7], [3], 'int32').read())).toEqual([1, -1, 7]);
    expect(() => backend.tensor([1], [1], 'float64')).toThrow(UnsupportedError);
    expect(() => backend.tensor([1, 2], [3], 'float32')).toThrow(/2 values for shape \[3\]/);
  });

  it('validates every NSA input before any native call', async () => {
    const { addon, backend, inputs, t, B, T } = setup();
    const badCmp = t([B, 5, 2, 16]);
    await expect(backend.nsaForward({ config, ...inputs, kCmp: badCmp })).rejects.toThrow(NSAShapeError);
    await expect(backend.nsaForward({ config, ...inputs, gates: t([B, T, 4, 3], 'bfloat16') })).rejects.toThrow(/dtype bfloat16/);
    await expect(backend.nsaForward({ config, ...inputs, blockIndices: t([B, T, 2, 4]) })).rejects.toThrow(/expected int32/);
    expect(addon.calls).toEqual([]);
  });

  it('rejects tensors of another backend', async () => {
    const { backend, inputs } = setup();
    const foreign = { ...inputs.q, backend: 'reference', shape: inputs.q.shape, disposed: false } as Tensor;
    await expect(backend.nsaForward({ config, ...inputs, q: foreign })).rejects.toThrow(/belongs to backend 'reference'/);
  });

  it('runs the forward with outputs of the right shapes and disposes them', async () => {
    const { addon, backend, inputs, B, T } = setup();
    const fwd = await backend.nsaForward({ config, ...inputs });
    expect(addon.calls).toEqual(['nsaForward']);
    expect(fwd.output.shape).toEqual([B, T, 4, 8]);
    expect(fwd.blockIndices.shape).toEqual([B, T, 2, 4]);
    expect(fwd.blockIndices.dtype).toBe('int32');
    fwd.dispose();
    expect(fwd.output.disposed).toBe(true);
  });

  it('checks dense attention and decode inputs', async () => {
    const { addon, backend, t } = setup();
    await expect(backend.attentionForward({ q: t([1, 8, 4, 16]), k: t([1, 8, 3, 16]), v: t([1, 8, 3, 8]) })).rejects.toThrow(/not a multiple/);
    const cache = backend.createNSACache({ config, batch: 1, dtype: 'float32', capacity: 64 });
    await cache.append({ kSlc: t([1, 20, 2, 16]), vSlc: t([1, 20, 2, 8]), kWin: t([1, 20, 2, 16]), vWin: t([1, 20, 2, 8]) });
    expect(cache.length).toBe(20);
    await expect(backend.nsaDecode({ cache, q: t([1, 1, 4, 16]), gates: t([1, 1, 4, 3]) })).rejects.toThrow(/appendCompressed/);
    await expect(
      cache.append({ kSlc: t([1, 50, 2, 16]), vSlc: t([1, 50, 2, 8]), kWin: t([1, 50, 2, 16]), vWin: t([1, 50, 2, 8]) }),
    ).rejects.toThrow(/cache overflow/);
    expect(addon.calls).toEqual([]);
    cache.dispose();
  });
});

describe('sequence table', () => {
  it('lays out batches and packed sequences for the kernels', () => {
    const batch = trainingSeq(2, 40, config);
    // qStart, kBase, cBase, pos0, selBase
    expect(Array.from(batch.host)).toEqual([0, 40, 80, 0, 40, 0, 4, 0, 0, 0, 2, 4]);
    expect(batch.rows).toBe(80);
    const varlen = trainingSeq(1, 50, config, varlenLayout([0, 10, 50], 50, config));
    expect(Array.from(varlen.host)).toEqual([0, 10, 50, 0, 10, 0, 0, 0, 0, 0, 1, 3]);
    expect(varlen.maxKeys).toBe(40);
  });
});
