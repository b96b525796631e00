// The subgroup-matrix forward (compressed and window branches of float16 training calls). No CI
// adapter has 'chromium-experimental-subgroup-matrix' (nor shader-f16), so here the generator is
// checked for the builtins it must emit, and the kernel's logic (tiles, masks, lazy rescaling,
// row layout) runs with plain-WGSL stand-ins for the matrix builtins over f32 storage, against
// the float64 reference. The native kernels are checked by run-parity on a GPU that has them.
import { compressedCount, varlenLayout } from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { WebGPUBackend } from '../src/backend.js';
import { matrixForwardFits, matrixForwardShader, type MatrixForwardKernel } from '../src/shaders/subgroup-matrix-forward.js';
import { selectionShader, type SelectionKernel } from '../src/shaders/selection.js';
import { gpuBackend, nsaInputs, probe, read, relativeError, smallConfig, upload } from './gpu.js';

const kernel: MatrixForwardKernel = { mode: 'compressed', e: 'f16', G: 16, DK: 128, DV: 128, KT: 64, NSG: 4, TAU: 8, emulate: false };

describe('subgroup-matrix forward shader text', () => {
  it('emits the matrix builtins with f16 16x16 operands and f32 results', () => {
    const code = matrixForwardShader(kernel);
    expect(code).toContain('enable chromium_experimental_subgroup_matrix;');
    expect(code).toContain('diagnostic(off, chromium.subgroup_matrix_uniformity);');
    // Every tile comes from workgroup memory (staged rows, scores, probabilities).
    expect(code).toContain('subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&kv, ');
    expect(code).toContain('subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&kv, ');
    expect(code).toContain('subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&pbuf, ');
    expect(code).not.toMatch(/subgroupMatrixLoad<[^>]*>>\(&(q|kbuf|vbuf),/);
    expect(code).toContain('subgroupMatrixStore(&sbuf, ');
    expect(code).toContain('@workgroup_size(128)');
    // Q K^T: 4 key blocks x 8 dim blocks; P V: 8 column blocks x 4 key blocks.
    expect(code.match(/subgroupMatrixMultiplyAccumulate\(/g)?.length).toBe(64);
    expect(code).not.toContain('emuMma');
  });

  // The driver places workgroup variables in an order of its own; the cooperative-matrix loads and
  // stores need 16-byte aligned array bases, so every variable must take a multiple of 16 bytes.
  it('every workgroup variable takes a multiple of 16 bytes', () => {
    const layouts: Partial<MatrixForwardKernel>[] = [{}, { NSG: 1 }, { KT: 32 }, { accumulate: 'rows' }, { rightMajor: 'row' }, { prefetch: true, interior: true }, { prefetch: true, KT: 32, NSG: 1 }];
    for (const [DK, DV] of [[64, 64], [128, 128], [192, 128]]) {
      for (const layout of layouts) {
        const code = matrixForwardShader({ ...kernel, DK, DV, ...layout });
        const sizes = workgroupBytes(code);
        expect(Object.keys(sizes).length).toBeGreaterThan(4);
        for (const [name, bytes] of Object.entries(sizes)) expect({ DK, layout, name, rem: bytes % 16 }).toEqual({ DK, layout, name, rem: 0 });
      }
    }
  });

  it('prefetch keeps each tile share in registers; interior tiles skip the masks', () => {
    const plain = matrixForwardShader(kernel);
    const code = matrixForwardShader({ ...kernel, prefetch: true, interior: true });
    // 64 keys x 128 dims / 4 per vec4 / 128 invocations = 16 vec4 of keys and 16 of values each.
    expect(code.match(/^ {2}var kr\d+: vec4<f16>;$/gm)?.length).toBe(16);
    expect(code.match(/^ {2}var vr\d+: vec4<f16>;$/gm)?.length).toBe(16);
    expect(plain).not.toContain('var kr0');
    expect(code).toContain('let whole = allRows && kp0 >= lastLo && kp0 + KT <= firstHi;');
    expect(code.match(/subgroupMatrixMultiplyAccumulate\(/g)?.length).toBe(64);
  });

  // The fused selection pass with matrix scores as the H100 runs it at 64k (2 tokens, 32 blocks per chunk).
  const selection: SelectionKernel = { e: 'f16', G: 16, GC: 16, DK: 128, CB: 32, WG: 128, NSMAX: 1024, TQS: 2, nSel: 16, initialBlocks: 1, localBlocks: 2, perCmp: 2, perSel: 4, phase: 'fused', subgroups: true, matrix: 'native' };
  it('selection with matrix scores: the next chunk prefetched, workgroup variables in 16-byte multiples', () => {
    const plain = selectionShader(selection);
    const code = selectionShader({ ...selection, matrixPrefetch: true });
    // 32 blocks x 128 dims / 4 per vec4 / 128 invocations = 8 vec4 per invocation.
    expect(code.match(/^ {2}var kr\d+: vec4<f16>;$/gm)?.length).toBe(8);
    expect(plain).not.toContain('var kr0');
    expect(code.match(/subgroupMatrixMultiplyAccumulate\(/g)?.length).toBe(plain.match(/subgroupMatrixMultiplyAccumulate\(/g)?.length);
    for (const text of [plain, code]) {
      for (const [name, bytes] of Object.entries(workgroupBytes(text))) expect({ name, rem: bytes % 16 }).toEqual({ name, rem: 0 });
    }
  });

  it('emulated text has no matrix builtin; shapes outside 16-multiples are refused', () => {
    const code = matrixForwardShader({ ...kernel, e: 'f32', emulate: true });
    expect(code).not.toMatch(/subgroupMatrix|subgroup_matrix|enable f16/);
    expect(code).toContain('fn emuMma(');
    expect(() => matrixForwardShader({ ...kernel, e: 'f32' })).toThrow(/f16/);
    expect(matrixForwardFits(8, 128, 128)).toBe(false);
    expect(() => matrixForwardShader({ ...kernel, G: 8 })).toThrow(/multiples of 16/);
  });
});

const config = smallConfig({ window: 40, heads: 32, headDimK: 32, headDimV: 16 });
const reference = createReferenceBackend();
// P goes through f16 in these kernels.
const TOL = 2e-3;

describe.skipIf(!probe.available)(`subgroup-matrix forward, emulated${probe.available ? ` on ${probe.reason}` : ` (skipped: ${probe.reason})`}`, () => {
  let gpu: WebGPUBackend;
  beforeAll(async () => {
    gpu = await gpuBackend();
    gpu.ctx.matrixEmulation = true;
  });
  afterAll(() => gpu?.dispose());

  async function forward(B: number, T: number, cuSeqlens?: number[]) {
    const C = cuSeqlens ? varlenLayout(cuSeqlens, T, config).compressedOffsets.at(-1)! : compressedCount(T, config);
    const inputs = nsaInputs(config, B, T, C, 11 + T);
    const names: string[] = [];
    const spy = vi.spyOn(gpu.rt, 'pipelineOf');
    let out;
    try {
      out = await gpu.nsaForward({ config, ...upload(gpu, inputs, 'float32'), cuSeqlens });
      for (const call of spy.mock.calls) names.push(call[0]);
    } finally {
      spy.mockRestore();
    }
    // The reference on the same blocks (selection itself is not part of these kernels).
    const ref = upload(reference, inputs, 'float64');
    const blockIndices = reference.tensor(await out.blockIndices.read(), out.blockIndices.shape, 'int32');
    const rOut = await reference.nsaForward({ config, ...ref, cuSeqlens, blockIndices });
    // The selection's own choice (scores in f32 here) against the reference's.
    const own = await reference.nsaForward({ config, ...ref, cuSeqlens });
    const chosen = Array.from(await out.blockIndices.read());
    const refChosen = Array.from(await own.blockIndices.read());
    return { names, chosen, refChosen, error: relativeError(await read(out.output), await read(rOut.output)) };
  }

  it('B = 2, G = 16 in two head chunks, Dk != Dv, a window shorter than the tile', async () => {
    const { names, error, chosen, refChosen } = await forward(2, 75);
    expect(names).toContain('nsa_compressed_forward_matrix_emulated');
    expect(names).toContain('nsa_window_forward_matrix_emulated');
    expect(names).toContain('nsa_selection_topn_matrix_emulated');
    expect(chosen).toEqual(refChosen);
    expect(error).toBeLessThan(TOL);
  });

  it('varlen: items never cross a sequence', async () => {
    const { names, error, chosen, refChosen } = await forward(1, 160, [0, 70, 71, 160]);
    expect(names).toContain('nsa_compressed_forward_matrix_emulated');
    expect(names).toContain('nsa_selection_topn_matrix_emulated');
    expect(chosen).toEqual(refChosen);
    expect(error).toBeLessThan(TOL);
  });

  // 16-key tiles so that whole tiles (no masks) occur at these lengths, next to ragged ones.
  it('16-key tiles: prefetch and interior tiles against the previous kernel', async () => {
    gpu.ctx.tileOverride = { compressed: { KT: 16 }, window: { KT: 16 } };
    try {
      const now = await forward(1, 160, [0, 150, 160]);
      expect(now.names).toContain('nsa_window_forward_matrix_emulated');
      expect(now.chosen).toEqual(now.refChosen);
      expect(now.error).toBeLessThan(TOL);
      gpu.ctx.matrixKernel = { prefetch: false, interior: false };
      const before = await forward(1, 160, [0, 150, 160]);
      expect(before.error).toBeLessThan(TOL);
    } finally {
      gpu.ctx.tileOverride = undefined;
      gpu.ctx.matrixKernel = undefined;
    }
  });

  // 74 compressed blocks: three selection chunks one after another, so later tokens choose among
  // blocks that the second chunk scored (not only forced local ones); a prefetch that staged the
  // wrong chunk's keys fails here.
  it('several selection chunks, keys prefetched', async () => {
    const { names, error, chosen, refChosen } = await forward(1, 600);
    expect(names).toContain('nsa_selection_topn_matrix_emulated');
    expect(chosen).toEqual(refChosen);
    expect(error).toBeLessThan(TOL);
  });

  it('matrixForward = false keeps the previous kernels', async () => {
    gpu.ctx.matrixForward = false;
    try {
      const { names, error } = await forward(1, 40);
      expect(names.some((n) => n.includes('matrix'))).toBe(false);
      expect(error).toBeLessThan(1e-4);
    } finally {
      gpu.ctx.matrixForward = true;
    }
  });
});

/** Bytes of each `var<workgroup>` of a shader (its constants resolved). */
function workgroupBytes(code: string): Record<string, number> {
  const consts = Object.fromEntries([...code.matchAll(/^const (\w+) = (\d+)u;/gm)].map((m) => [m[1], Number(m[2])]));
  const scalar: Record<string, number> = { f32: 4, u32: 4, i32: 4, f16: 2, Item: 32 };
  const size = (t: string): number => {
    t = t.trim();
    const arr = /^array<(.+),\s*(\w+)>$/.exec(t);
    if (arr) return size(arr[1]) * (consts[arr[2]] ?? Number(arr[2]));
    const vec = /^vec(\d)<(\w+)>$/.exec(t);
    if (vec) return Number(vec[1]) * scalar[vec[2]];
    if (!(t in scalar)) throw new Error(`unknown type ${t}`);
    return scalar[t];
  };
  return Object.fromEntries([...code.matchAll(/^var<workgroup> (\w+): (.+);$/gm)].map((m) => [m[1], size(m[2])]));
}
