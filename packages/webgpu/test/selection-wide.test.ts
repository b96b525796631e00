// The wide selection tiles (SelectionKernel.wide, ctx.selectionWide) against the float64 reference:
// a group of 16 heads (the only size they are planned for), two selection chunks, key columns in one
// or several stages (loaded ahead or not, batched or in a loop), head sums through subgroup shuffles
// or workgroup memory; the previous tiles (selectionWide: false) choose the same blocks.
import { compressedCount } from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WebGPUBackend } from '../src/backend.js';
import { selectionShader, wideSelectionBlocks } from '../src/shaders/selection.js';
import { planWideSelection } from '../src/tiling.js';
import { gpuBackend, nsaInputs, probe, read, relativeError, smallConfig, upload } from './gpu.js';

const TOL = 1e-4;
// G = 16 (one KV head: SwiftShader is slow), Dk = 24 (6 vec4 columns: stages of 4 leave a stage of 2).
const config = smallConfig({ heads: 16, kvHeads: 1, headDimK: 24, headDimV: 12 });
const reference = createReferenceBackend();

describe('wide selection tiles: code generation', () => {
  const k = { e: 'f32' as const, G: 16, GC: 16, DK: 24, WG: 128, NSMAX: 32, TQS: 2, nSel: 4, initialBlocks: 1, localBlocks: 2, perCmp: 2, perSel: 4, phase: 'fused' as const, subgroups: true, batchLoads: true };
  it('sums heads in registers (no prob array) and needs CB to match the tiles', () => {
    const wgsl = selectionShader({ ...k, CB: wideSelectionBlocks(k, { JB: 4 }), wide: { JB: 4, DS: 4 } });
    expect(wgsl).not.toContain('var<workgroup> prob');
    expect(wgsl).toContain('subgroupShuffleXor(p3, 2u)');
    const two = selectionShader({ ...k, CB: wideSelectionBlocks(k, { JB: 4, HG: 2 }), wide: { JB: 4, DS: 4, HG: 2 } });
    expect(two).toContain('subgroupShuffleXor(p0, 1u)');
    expect(two).not.toContain('subgroupShuffleXor(p0, 2u)');
    expect(() => selectionShader({ ...k, CB: 32, wide: { JB: 4, DS: 4 } })).toThrow(/wide tiles/);
    expect(() => selectionShader({ ...k, G: 32, CB: 64, wide: { JB: 4, DS: 4 } })).toThrow(/wide tiles/);
  });
});

describe.skipIf(!probe.available)(`webgpu wide selection tiles${probe.available ? ` on ${probe.reason}` : ` (skipped: ${probe.reason})`}`, () => {
  let gpu: WebGPUBackend;
  beforeAll(async () => {
    gpu = await gpuBackend();
  });
  afterAll(() => gpu?.dispose());

  const T = 600;
  const inputs = nsaInputs(config, 1, T, compressedCount(T, config), 5);

  async function run(settings: Partial<Pick<WebGPUBackend['ctx'], 'selectionWide' | 'subgroupTopN' | 'tiledKernel'>>) {
    const saved = { selectionWide: gpu.ctx.selectionWide, subgroupTopN: gpu.ctx.subgroupTopN, tiledKernel: gpu.ctx.tiledKernel };
    Object.assign(gpu.ctx, settings);
    try {
      const out = await gpu.nsaForward({ config, ...upload(gpu, inputs, 'float32') });
      return { blocks: Array.from(await out.blockIndices.read()), output: await read(out.output) };
    } finally {
      Object.assign(gpu.ctx, saved);
    }
  }

  it('is planned for this group and matches the reference in every variant', async () => {
    const wide = planWideSelection(gpu.ctx, { G: 16, GC: 16, DK: 24, WG: 128, NSMAX: 20, TQS: 2, nSel: 4, subgroups: true });
    // 128-block chunks (8 heads x 4 blocks per invocation); software adapters 64 (8 x 2): two chunks here.
    expect(wide?.CB).toBe(gpu.ctx.software ? 64 : 128);
    expect(compressedCount(T, config)).toBeGreaterThan(64);
    const ref = await reference.nsaForward({ config, ...upload(reference, inputs, 'float64') });
    const refBlocks = Array.from(await ref.blockIndices.read());
    const refOut = await read(ref.output);
    // One stage (the default); stages of 4 + 2 columns loaded ahead; HG = 4 with the sums through
    // workgroup memory and the stages in loops; the previous tiles.
    const variants = [
      {},
      { selectionWide: { JB: 2, DS: 4, ahead: true } },
      { selectionWide: { JB: 4, DS: 4, HG: 4 }, subgroupTopN: false, tiledKernel: { batchLoads: false } },
      { selectionWide: false as const },
    ];
    for (const v of variants) {
      const { blocks, output } = await run(v);
      expect(blocks, JSON.stringify(v)).toEqual(refBlocks);
      expect(relativeError(output, refOut), JSON.stringify(v)).toBeLessThan(TOL);
    }
  });
});
