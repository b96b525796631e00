// The selected branch on subgroup matrices (float16 training calls). As in subgroup-matrix.test.ts:
// the generated text is checked here, and the kernel's logic (tile list, masks past the token's
// position, lazy rescaling, output tiles spread over subgroups) runs with plain-WGSL stand-ins for
// the matrix builtins over f32 storage against the float64 reference on the same blocks. The
// native kernel is checked by run-parity on a GPU that has subgroup matrices.
import { compressedCount, varlenLayout } from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { WebGPUBackend } from '../src/backend.js';
import { matrixSelectedShader, type MatrixSelectedKernel } from '../src/shaders/subgroup-matrix-selected.js';
import { gpuBackend, nsaInputs, probe, read, relativeError, smallConfig, upload } from './gpu.js';

const kernel: MatrixSelectedKernel = { e: 'f16', G: 16, DK: 128, DV: 128, KT: 64, nSel: 16, selBlock: 64, TAU: 8, emulate: false };

/** Bytes of each `var<workgroup>` of a shader (its u32 constants resolved). */
function workgroupBytes(code: string): Record<string, number> {
  const consts = Object.fromEntries([...code.matchAll(/^const (\w+) = (\d+)u;/gm)].map((m) => [m[1], Number(m[2])]));
  const scalar: Record<string, number> = { f32: 4, u32: 4, i32: 4, f16: 2, Item: 32 };
  const size = (t: string): number => {
    const arr = /^array<(.+),\s*(\w+)>$/.exec(t.trim());
    if (arr) return size(arr[1]) * (consts[arr[2]] ?? Number(arr[2]));
    if (!(t.trim() in scalar)) throw new Error(`unknown type ${t}`);
    return scalar[t.trim()];
  };
  return Object.fromEntries([...code.matchAll(/^var<workgroup> (\w+): (.+);$/gm)].map((m) => [m[1], size(m[2])]));
}

describe('subgroup-matrix selected shader text', () => {
  it('one 16-key score tile and two output tiles per subgroup, tiles from workgroup memory only', () => {
    const code = matrixSelectedShader(kernel);
    expect(code).toContain('enable chromium_experimental_subgroup_matrix;');
    expect(code).toContain('@workgroup_size(128)');
    // S: 8 dim blocks; P V: 2 column tiles x 4 key blocks.
    expect(code.match(/subgroupMatrixMultiplyAccumulate\(/g)?.length).toBe(16);
    expect(code).not.toMatch(/subgroupMatrixLoad<[^>]*>>\(&(q|kbuf|vbuf),/);
    // 64 keys x 128 dims / 4 per vec4 / 128 invocations: 16 vec4 of keys and 16 of values in registers.
    expect(code.match(/^ {2}var kr\d+: vec4<f16>;$/gm)?.length).toBe(16);
    expect(code.match(/^ {2}var vr\d+: vec4<f16>;$/gm)?.length).toBe(16);
    expect(() => matrixSelectedShader({ ...kernel, e: 'f32' })).toThrow(/f16/);
    expect(() => matrixSelectedShader({ ...kernel, KT: 48 })).toThrow(/KT/);
  });

  it('every workgroup variable takes a multiple of 16 bytes', () => {
    for (const [DK, DV] of [[64, 64], [128, 128], [192, 128], [32, 16]]) {
      for (const [KT, nSel, selBlock] of [[64, 16, 64], [32, 3, 32], [16, 5, 40]]) {
        const sizes = workgroupBytes(matrixSelectedShader({ ...kernel, DK, DV, KT, nSel, selBlock }));
        expect(Object.keys(sizes).length).toBeGreaterThan(6);
        for (const [name, bytes] of Object.entries(sizes)) expect({ DK, KT, name, rem: bytes % 16 }).toEqual({ DK, KT, name, rem: 0 });
      }
    }
  });
});

// G = 16 (32 heads, 2 KV heads), Dv = 16: one output tile, so with two subgroups (32-key blocks)
// only subgroup 0 owns one.
const config = smallConfig({ window: 40, heads: 32, headDimK: 32, headDimV: 16 });
const reference = createReferenceBackend();
// P goes through f16.
const TOL = 2e-3;

describe.skipIf(!probe.available)(`subgroup-matrix selected, emulated${probe.available ? ` on ${probe.reason}` : ` (skipped: ${probe.reason})`}`, () => {
  let gpu: WebGPUBackend;
  beforeAll(async () => {
    gpu = await gpuBackend();
    gpu.ctx.matrixEmulation = true;
  });
  afterAll(() => gpu?.dispose());

  /** Error of the selected branch's output against the reference on the same blocks. */
  async function selected(B: number, T: number, cuSeqlens?: number[]) {
    const C = cuSeqlens ? varlenLayout(cuSeqlens, T, config).compressedOffsets.at(-1)! : compressedCount(T, config);
    const inputs = nsaInputs(config, B, T, C, 5 + T);
    const spy = vi.spyOn(gpu.rt, 'pipelineOf');
    let out;
    const names: string[] = [];
    try {
      out = await gpu.nsaForward({ config, ...upload(gpu, inputs, 'float32'), cuSeqlens });
      for (const call of spy.mock.calls) names.push(call[0]);
    } finally {
      spy.mockRestore();
    }
    const ref = upload(reference, inputs, 'float64');
    const blockIndices = reference.tensor(await out.blockIndices.read(), out.blockIndices.shape, 'int32');
    const rOut = await reference.nsaForward({ config, ...ref, cuSeqlens, blockIndices });
    return { names, error: relativeError(await read(out.output), await read(rOut.output)) };
  }

  it('B = 2, 32-key blocks (two subgroups), partial blocks at the token', async () => {
    const { names, error } = await selected(2, 75);
    expect(names).toContain('nsa_selected_forward_matrix_emulated');
    expect(error).toBeLessThan(TOL);
  });

  it('varlen, 16-key tiles: two tiles per block, keys of the next block loaded ahead', async () => {
    gpu.ctx.tileOverride = { selected: { KT: 16 } };
    try {
      const { names, error } = await selected(1, 120, [0, 50, 51, 120]);
      expect(names).toContain('nsa_selected_forward_matrix_emulated');
      expect(error).toBeLessThan(TOL);
    } finally {
      gpu.ctx.tileOverride = undefined;
    }
  });

  it('matrixKernel.selected = false keeps the tiled kernel', async () => {
    gpu.ctx.matrixKernel = { selected: false };
    try {
      const { names, error } = await selected(1, 40);
      expect(names).not.toContain('nsa_selected_forward_matrix_emulated');
      expect(names).toContain('nsa_compressed_forward_matrix_emulated');
      expect(error).toBeLessThan(TOL);
    } finally {
      gpu.ctx.matrixKernel = undefined;
    }
  });
});
