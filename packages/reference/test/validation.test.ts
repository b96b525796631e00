import { compressedCount, DisposedTensorError, NSAError, NSAShapeError, UnsupportedError, type Tensor } from '@nsa/core';
import { describe, expect, it } from 'vitest';
import { createReferenceBackend, nsaBackwardHost, nsaForwardHost, referenceProvider, ReferenceTensor, type NSAHostInputs } from '../src/index.js';
import { allFinite, randomInputs, smallConfig } from './fixtures.js';
import { randomArray, seededRandom } from './random.js';

const config = smallConfig();
const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv } = config;

function tensors(T: number, dtype: 'float64' | 'float32' = 'float64', seed = 1) {
  const be = createReferenceBackend();
  const x = randomInputs(config, 1, T, seed);
  const C = compressedCount(T, config);
  const args = {
    config,
    q: be.tensor(x.q, [1, T, HQ, Dk], dtype),
    kCmp: be.tensor(x.kCmp, [1, C, H, Dk], dtype),
    vCmp: be.tensor(x.vCmp, [1, C, H, Dv], dtype),
    kSlc: be.tensor(x.kSlc, [1, T, H, Dk], dtype),
    vSlc: be.tensor(x.vSlc, [1, T, H, Dv], dtype),
    kWin: be.tensor(x.kWin, [1, T, H, Dk], dtype),
    vWin: be.tensor(x.vWin, [1, T, H, Dv], dtype),
    gates: be.tensor(x.gates, [1, T, HQ, 3], dtype),
  };
  return { be, x, args };
}

describe('tensors', () => {
  it('rounds to the dtype and reads back the documented array types', async () => {
    const be = createReferenceBackend();
    const v = [1 / 3, 1e-9, 65519, -2.5];
    const f64 = await be.tensor(v, [4], 'float64').read();
    const f32 = await be.tensor(v, [2, 2], 'float32').read();
    const f16 = be.tensor(v, [4], 'float16');
    const bf16 = be.tensor(v, [4], 'bfloat16');
    const i32 = await be.tensor([1, -2, 3], [3], 'int32').read();
    expect(f64).toBeInstanceOf(Float64Array);
    expect([...f64]).toEqual(v);
    expect(f32).toBeInstanceOf(Float32Array);
    expect(f32[0]).toBe(Math.fround(1 / 3));
    expect(f16.data[0]).toBe(0.333251953125);
    expect(f16.data[2]).toBe(65504);
    expect(bf16.data[0]).toBe(0.333984375);
    expect(await f16.read()).toBeInstanceOf(Float32Array);
    expect(i32).toBeInstanceOf(Int32Array);
    expect(() => be.tensor([1.5], [1], 'int32')).toThrow(NSAShapeError);
    expect(() => be.tensor([1, 2, 3], [2, 2], 'float32')).toThrow(/3 values for shape \[2, 2\]/);
  });

  it('dispose makes data and read() throw; backend dispose makes its tensors unusable', async () => {
    const be = createReferenceBackend();
    const t = be.tensor([1, 2], [2], 'float64');
    t.dispose();
    t.dispose();
    expect(() => t.data).toThrow(DisposedTensorError);
    expect(() => t.read()).toThrow(DisposedTensorError);
    const u = be.tensor([1, 2], [2], 'float64');
    be.dispose();
    expect(() => u.data).toThrow(/backend was disposed/);
    expect(() => be.tensor([1], [1], 'float64')).toThrow(NSAError);
  });

  it('the provider is always available and creates a backend', async () => {
    expect(await referenceProvider.probe()).toEqual({ available: true, reason: 'pure TypeScript, always available' });
    const be = await referenceProvider.create();
    expect(be.name).toBe('reference');
    expect(be.dtypes).toEqual(['float64', 'float32', 'float16', 'bfloat16']);
  });
});

describe('validation errors are precise', () => {
  it('wrong shape', async () => {
    const { be, args } = tensors(20);
    await expect(be.nsaForward({ ...args, kSlc: be.tensor(new Float64Array(19 * H * Dk), [1, 19, H, Dk], 'float64') })).rejects.toThrow(
      'kSlc has shape [1, 19, 2, 6], expected [1, 20, 2, 6]',
    );
    await expect(be.nsaForward({ ...args, kCmp: be.tensor(new Float64Array(H * Dk), [1, 1, H, Dk], 'float64') })).rejects.toThrow(
      /kCmp has shape \[1, 1, 2, 6\], expected \[1, 4, 2, 6\]/,
    );
  });

  it('dtype mismatch and unsupported dtype', async () => {
    const { be, args } = tensors(20);
    const gates32 = be.tensor(new Float64Array(20 * HQ * 3).fill(0.5), [1, 20, HQ, 3], 'float32');
    await expect(be.nsaForward({ ...args, gates: gates32 })).rejects.toThrow('gates has dtype float32, expected float64 (like q)');
    const qInt = be.tensor(new Array(20 * HQ * Dk).fill(1), [1, 20, HQ, Dk], 'int32');
    await expect(be.nsaForward({ ...args, q: qInt })).rejects.toThrow(UnsupportedError);
  });

  it('a tensor of another backend', async () => {
    const { be, args } = tensors(20);
    const foreign = { ...args.vWin, backend: 'cuda', shape: args.vWin.shape, disposed: false } as unknown as Tensor;
    await expect(be.nsaForward({ ...args, vWin: foreign })).rejects.toThrow("vWin belongs to backend 'cuda', not 'reference'");
    const impostor = { shape: args.vWin.shape, dtype: 'float64', backend: 'reference', disposed: false } as unknown as Tensor;
    await expect(be.nsaForward({ ...args, vWin: impostor })).rejects.toThrow('expected a reference tensor');
  });

  it('a disposed tensor', async () => {
    const { be, args } = tensors(20);
    args.kWin.dispose();
    await expect(be.nsaForward(args)).rejects.toThrow('kWin was disposed before use');
  });

  it('bad blockIndices name b, t and h', async () => {
    const { be, args } = tensors(20);
    const ok = (await be.nsaForward(args)).blockIndices;
    const bad = Int32Array.from((await ok.read()) as Int32Array);
    bad[(17 * H + 1) * 3 + 2] = 2; // t = 17 may use blocks 0..1 only
    await expect(be.nsaForward({ ...args, blockIndices: be.tensor(bad, [1, 20, H, 3], 'int32') })).rejects.toThrow(
      'blockIndices[b=0, t=17, h=1] slot 2 is 2: the query at position 17 may use only -1 or causal blocks 0..1',
    );
    const dup = Int32Array.from((await ok.read()) as Int32Array);
    dup[(18 * H) * 3] = 1;
    dup[(18 * H) * 3 + 1] = 1;
    await expect(be.nsaForward({ ...args, blockIndices: be.tensor(dup, [1, 20, H, 3], 'int32') })).rejects.toThrow(
      'blockIndices[b=0, t=18, h=0] lists block 1 twice',
    );
    await expect(be.nsaForward({ ...args, blockIndices: be.tensor(new Float64Array(20 * H * 3), [1, 20, H, 3], 'float64') })).rejects.toThrow(
      'blockIndices has dtype float64, expected int32',
    );
    // A varlen position restarts at 0: position 2 of the second sequence may use block 0 only.
    const cu = [0, 17, 20];
    const x = randomInputs(config, 1, 20, 3, cu);
    const blocks = new Int32Array(20 * H * 3).fill(-1);
    blocks[(19 * H) * 3] = 1;
    expect(() => nsaForwardHost(x, config, { B: 1, T: 20, cuSeqlens: cu, blockIndices: blocks })).toThrow(
      'blockIndices[b=0, t=19, h=0] slot 0 is 1: the query at position 2 may use only -1 or causal blocks 0..0',
    );
  });

  it('bad cuSeqlens', async () => {
    const { be, args } = tensors(20);
    await expect(be.nsaForward({ ...args, cuSeqlens: [1, 20] })).rejects.toThrow('cuSeqlens[0] must be 0');
    await expect(be.nsaForward({ ...args, cuSeqlens: [0, 19] })).rejects.toThrow('must end at the packed length 20');
    await expect(be.nsaForward({ ...args, cuSeqlens: [0, 12, 8, 20] })).rejects.toThrow('non-decreasing');
    // Two sequences of 10 tokens hold 1 + 1 compressed blocks, not the 4 of one 20-token sequence.
    await expect(be.nsaForward({ ...args, cuSeqlens: [0, 10, 20] })).rejects.toThrow('kCmp has shape [1, 4, 2, 6], expected [1, 2, 2, 6]');
  });

  it('backward checks its forward and dOutput', async () => {
    const { be, args } = tensors(20);
    const fwd = await be.nsaForward(args);
    const dOutput = be.tensor(randomArray(seededRandom(1), 20 * HQ * Dv), [1, 20, HQ, Dv], 'float64');
    await expect(be.nsaBackward({ ...args, forward: fwd, dOutput: args.q })).rejects.toThrow('dOutput has shape');
    fwd.saved.dispose();
    await expect(be.nsaBackward({ ...args, forward: fwd, dOutput })).rejects.toThrow(DisposedTensorError);
  });

  it('cache overflow, premature decode and too many compressed blocks', async () => {
    const be = createReferenceBackend();
    const cache = be.createNSACache({ config, batch: 1, dtype: 'float64', capacity: 10 });
    const rand = seededRandom(4);
    const raw = (t: number) => ({
      kSlc: be.tensor(randomArray(rand, t * H * Dk), [1, t, H, Dk], 'float64'),
      vSlc: be.tensor(randomArray(rand, t * H * Dv), [1, t, H, Dv], 'float64'),
      kWin: be.tensor(randomArray(rand, t * H * Dk), [1, t, H, Dk], 'float64'),
      vWin: be.tensor(randomArray(rand, t * H * Dv), [1, t, H, Dv], 'float64'),
    });
    const cmp = (c: number) => ({
      kCmp: be.tensor(randomArray(rand, c * H * Dk), [1, c, H, Dk], 'float64'),
      vCmp: be.tensor(randomArray(rand, c * H * Dv), [1, c, H, Dv], 'float64'),
    });
    await cache.append(raw(9));
    const step = { cache, q: be.tensor(randomArray(rand, HQ * Dk), [1, 1, HQ, Dk], 'float64'), gates: be.tensor(randomArray(rand, HQ * 3), [1, 1, HQ, 3], 'float64') };
    await expect(be.nsaDecode(step)).rejects.toThrow('cache holds 0 compressed blocks but 9 tokens need 1: appendCompressed the missing blocks first');
    await expect(cache.appendCompressed(cmp(2))).rejects.toThrow('would exceed the 1 blocks that 9 cached tokens complete');
    await cache.appendCompressed(cmp(1));
    const out = await be.nsaDecode(step);
    expect(allFinite((await out.output.read()) as Float64Array)).toBe(true);
    await expect(cache.append(raw(2))).rejects.toThrow('cache overflow: appending 2 tokens to 9 would exceed the capacity of 10');
    await expect(cache.append({ ...raw(1), vWin: be.tensor(new Float64Array(H * Dv), [1, 1, H, Dv], 'float32') })).rejects.toThrow(
      "vWin has dtype float32, expected the cache's float64",
    );
    await expect(
      be.nsaDecode({ ...step, q: be.tensor(randomArray(rand, 10 * HQ * Dk), [1, 10, HQ, Dk], 'float64') }),
    ).rejects.toThrow('q has 10 queries but the cache holds 9 tokens');
    cache.dispose();
    await expect(cache.append(raw(1))).rejects.toThrow('NSA cache was used after dispose()');
  });
});

describe('no NaN or Inf for any valid input', () => {
  for (const [name, T, qScale] of [
    ['T = 1', 1, 1],
    ['T = l - 2: no compressed block at all', 6, 1],
    ['T = l', 8, 1],
    ['huge logits (q x 1e4)', 40, 1e4],
  ] as const) {
    it(name, () => {
      const x = randomInputs(config, 1, T, 77);
      const inputs: NSAHostInputs = { ...x, q: x.q.map((v) => v * qScale) };
      const fwd = nsaForwardHost(inputs, config, { B: 1, T });
      expect(allFinite(fwd.output)).toBe(true);
      const dOut = randomArray(seededRandom(5), fwd.output.length);
      const g = nsaBackwardHost(inputs, config, { B: 1, T, blockIndices: fwd.blockIndices, lse: fwd.lse, dOutput: dOut });
      for (const v of Object.values(g)) expect(allFinite(v)).toBe(true);
    });
  }

  it('float16 inputs round, compute and return float16 values', async () => {
    const be = createReferenceBackend();
    const x = randomInputs(config, 1, 20, 2);
    const t = (a: Float64Array, s: number[]) => be.tensor(a, s, 'float16');
    const C = compressedCount(20, config);
    const fwd = await be.nsaForward({
      config, q: t(x.q, [1, 20, HQ, Dk]), kCmp: t(x.kCmp, [1, C, H, Dk]), vCmp: t(x.vCmp, [1, C, H, Dv]),
      kSlc: t(x.kSlc, [1, 20, H, Dk]), vSlc: t(x.vSlc, [1, 20, H, Dv]), kWin: t(x.kWin, [1, 20, H, Dk]),
      vWin: t(x.vWin, [1, 20, H, Dv]), gates: t(x.gates, [1, 20, HQ, 3]),
    });
    const out = fwd.output as ReferenceTensor;
    expect(out.dtype).toBe('float16');
    expect(allFinite(out.data)).toBe(true);
    const f16 = be.tensor(out.data, out.shape, 'float16');
    expect(f16.data).toEqual(out.data);
  });
});
