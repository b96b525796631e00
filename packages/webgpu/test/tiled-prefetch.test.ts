// The tiled forward that loads each K/V tile one step ahead (ctx.tiledKernel.prefetch) against the
// float64 reference. Head dims of 32 make every tile divide evenly among the invocations, so the
// prefetching code is generated (the other suites' 16/12 dims fall back to the plain tile loads).
import { compressedCount } from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WebGPUBackend } from '../src/backend.js';
import { tiledForwardShader } from '../src/shaders/tiled-forward.js';
import { gpuBackend, nsaInputs, probe, read, relativeError, smallConfig, upload } from './gpu.js';

const TOL = 1e-4;
const config = smallConfig({ headDimK: 32, headDimV: 32 });
const reference = createReferenceBackend();

describe('tiled forward prefetch: code generation', () => {
  const kernel = { mode: 'window' as const, e: 'f32' as const, G: 4, GC: 4, TQB: 8, DK: 32, DV: 32, KT: 32, RM: 1, NKG: 8, split: false, subgroups: false, batchLoads: true, vecP: true };
  it('loads the next K tile ahead only when asked, and only where the tile divides evenly', () => {
    expect(tiledForwardShader({ ...kernel, prefetch: true })).toContain('kp0 + KT + (lid');
    expect(tiledForwardShader({ ...kernel, prefetch: false })).not.toContain('kp0 + KT + (lid');
    expect(tiledForwardShader({ ...kernel, prefetch: false })).toBe(tiledForwardShader(kernel));
    // 12-wide V rows: 32 keys x 3 vec4 do not divide among 256 invocations.
    expect(tiledForwardShader({ ...kernel, DV: 12, prefetch: true })).toBe(tiledForwardShader({ ...kernel, DV: 12 }));
  });
});

describe.skipIf(!probe.available)(`webgpu tiled forward prefetch${probe.available ? ` on ${probe.reason}` : ` (skipped: ${probe.reason})`}`, () => {
  let gpu: WebGPUBackend;
  beforeAll(async () => {
    gpu = await gpuBackend();
  });
  afterAll(() => gpu?.dispose());

  async function forwardError(prefetch: boolean, B: number, T: number) {
    const inputs = nsaInputs(config, B, T, compressedCount(T, config), 11 + T);
    gpu.ctx.tiledKernel = { prefetch };
    try {
      const out = await gpu.nsaForward({ config, ...upload(gpu, inputs, 'float32') });
      const ref = await reference.nsaForward({ config, ...upload(reference, inputs, 'float64') });
      expect(Array.from(await out.blockIndices.read())).toEqual(Array.from(await ref.blockIndices.read()));
      return relativeError(await read(out.output), await read(ref.output));
    } finally {
      gpu.ctx.tiledKernel = undefined;
    }
  }

  it('matches the reference with and without prefetch (several tiles per workgroup, B = 2)', async () => {
    expect(await forwardError(true, 2, 150)).toBeLessThan(TOL);
    expect(await forwardError(false, 2, 150)).toBeLessThan(TOL);
  });
});
