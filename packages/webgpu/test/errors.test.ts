// Every failure mode becomes a precise JavaScript error: bad input, no adapter, a shader that does
// not compile, a WebGPU validation error, a buffer over the device's limits, a lost device.
import { NSAShapeError, UnsupportedError, compressedCount } from '@nsa/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WebGPUBackend } from '../src/backend.js';
import { createWebGPUBackendFrom } from '../src/backend.js';
import { ShaderCompilationError, WebGPUError } from '../src/device.js';
import { createWebGPUProvider } from '../src/provider.js';
import { run } from '../src/runtime.js';
import { gpuBackend, nsaInputs, probe, read, relativeError, smallConfig, upload } from './gpu.js';

describe('no adapter', () => {
  it('a missing navigator.gpu is reported, not crashed on', async () => {
    const provider = createWebGPUProvider(async () => undefined);
    expect(await provider.probe()).toEqual({ available: false, reason: 'WebGPU is not available here (navigator.gpu is undefined)' });
    await expect(createWebGPUBackendFrom(undefined)).rejects.toMatchObject({ code: 'NSA_WEBGPU_NO_ADAPTER' });
  });

  it('an adapter request that returns null says so', async () => {
    const gpu = { requestAdapter: async () => null } as unknown as GPU;
    const provider = createWebGPUProvider(async () => gpu);
    const result = await provider.probe();
    expect(result.available).toBe(false);
    expect(result.reason).toMatch(/requestAdapter\(\) returned null/);
    await expect(createWebGPUBackendFrom(gpu)).rejects.toThrow(WebGPUError);
  });
});

describe.skipIf(!probe.available)(`webgpu errors${probe.available ? '' : ` (skipped: ${probe.reason})`}`, () => {
  let gpu: WebGPUBackend;
  beforeAll(async () => {
    gpu = await gpuBackend();
  });
  afterAll(() => gpu?.dispose());

  it('bad shapes and dtypes are rejected before any dispatch', async () => {
    const config = smallConfig({ heads: 4, headDimK: 8, headDimV: 8 });
    const inputs = upload(gpu, nsaInputs(config, 1, 40, compressedCount(40, config), 1), 'float32');
    const wrongQ = gpu.tensor(new Float32Array(40 * 2 * 8).fill(0.5), [1, 40, 2, 8], 'float32');
    await expect(gpu.nsaForward({ config, ...inputs, q: wrongQ })).rejects.toThrow(NSAShapeError);
    await expect(gpu.nsaForward({ config, ...inputs, q: wrongQ })).rejects.toThrow(/q has 2 heads/);
    expect(() => gpu.tensor([1, 2], [2], 'float64')).toThrow(UnsupportedError);
    expect(() => gpu.tensor([1, 2, 3], [2], 'float32')).toThrow(/do not fill shape/);
  });

  it('a shader that fails to compile is named', async () => {
    const error = await gpu.rt.pipeline('broken_kernel', '@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ShaderCompilationError);
    expect((error as ShaderCompilationError).shader).toBe('broken_kernel');
    expect((error as Error).message).toMatch(/broken_kernel/);
  });

  it('a WebGPU validation error becomes a WebGPUError naming the operation', async () => {
    const t = gpu.tensor(new Float32Array(64).fill(1), [64], 'float32');
    const buffer = (t as unknown as { buffer: GPUBuffer }).buffer;
    const error = await run(gpu.rt, 'overlapping copy', (frame) => frame.copy(buffer, 0, buffer, 4, 64)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WebGPUError);
    expect((error as WebGPUError).kind).toBe('validation');
    expect((error as Error).message).toMatch(/^overlapping copy: WebGPU validation error/);
  });

  it('a tensor larger than maxBufferSize is refused with the limit', () => {
    const huge = Math.ceil(gpu.ctx.limits.maxBufferSize / 4) + 1024;
    expect(() => gpu.rt.frame('x').scratch(huge * 4, 'huge')).toThrow(/maxBufferSize/);
  });

  it('bindings are tiled under maxStorageBufferBindingSize with identical results', async () => {
    const config = smallConfig({ heads: 4, headDimK: 16, headDimV: 8 });
    const T = 600;
    const host = nsaInputs(config, 1, T, compressedCount(T, config), 5);
    const small = await gpuBackend({ maxBindingBytes: 131072 });
    try {
      const results = [];
      for (const be of [gpu, small]) {
        const inputs = upload(be, host, 'float32');
        const fwd = await be.nsaForward({ config, ...inputs });
        const grads = await be.nsaBackward({ config, ...inputs, forward: fwd, dOutput: be.tensor(host.dOutput, [1, T, 4, 8], 'float32') });
        results.push([await read(fwd.output), await read(grads.dq), await read(grads.dkSlc), await read(grads.dvCmp)]);
      }
      for (let i = 0; i < results[0].length; i++) expect(relativeError(results[1][i], results[0][i])).toBeLessThan(1e-6);
    } finally {
      small.dispose();
    }
  });

  it('a lost device turns every later call into a device-lost error', async () => {
    const doomed = await gpuBackend();
    doomed.ctx.device.destroy();
    await doomed.ctx.device.lost;
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(() => doomed.tensor([1], [1], 'float32')).toThrow(/device lost/);
    await expect(doomed.synchronize()).rejects.toMatchObject({ code: 'NSA_WEBGPU_DEVICE_LOST' });
  });
});
