// NSA forward, backward, varlen, supplied blocks and decode against the float64 reference, on
// whatever adapter Dawn finds (SwiftShader in CI). Sizes stay small: SwiftShader runs on the CPU.
import { compressedCount, varlenLayout } from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WebGPUBackend } from '../src/backend.js';
import { WebGPUNSACache } from '../src/decode.js';
import { gpuBackend, nsaInputs, probe, read, relativeError, smallConfig, upload } from './gpu.js';

const TOL = 1e-4;
const GRADS = ['dq', 'dkCmp', 'dvCmp', 'dkSlc', 'dvSlc', 'dkWin', 'dvWin', 'dGates'] as const;
const config = smallConfig();
const reference = createReferenceBackend();

describe.skipIf(!probe.available)(`webgpu NSA parity${probe.available ? ` on ${probe.reason}` : ` (skipped: ${probe.reason})`}`, () => {
  let gpu: WebGPUBackend;
  beforeAll(async () => {
    gpu = await gpuBackend();
  });
  afterAll(() => gpu?.dispose());

  async function forwardBackward(B: number, T: number, cuSeqlens?: number[], supplied = false) {
    const C = cuSeqlens ? varlenLayout(cuSeqlens, T, config).compressedOffsets.at(-1)! : compressedCount(T, config);
    const inputs = nsaInputs(config, B, T, C, 7 + T);
    const mine = upload(gpu, inputs, 'float32');
    const ref = upload(reference, inputs, 'float64');
    const { heads: HQ, kvHeads: H, headDimV: Dv, selectCount: n } = config;
    let given;
    if (supplied) {
      // A valid ascending choice per row: block 0 and the current block (what exists).
      const idx = new Int32Array(B * T * H * n).fill(-1);
      for (let b = 0; b < B; b++)
        for (let t = 0; t < T; t++)
          for (let h = 0; h < H; h++) {
            const cur = Math.floor(t / config.selectBlock);
            const row = ((b * T + t) * H + h) * n;
            idx[row] = 0;
            if (cur > 0) idx[row + 1] = cur;
          }
      given = gpu.tensor(idx, [B, T, H, n], 'int32');
    }
    const fwd = await gpu.nsaForward({ config, ...mine, cuSeqlens, blockIndices: given });
    const chosen = await fwd.blockIndices.read();
    const own = await reference.nsaForward({ config, ...ref, cuSeqlens });
    const refChoice = await own.blockIndices.read();
    const rFwd = await reference.nsaForward({ config, ...ref, cuSeqlens, blockIndices: reference.tensor(chosen, [B, T, H, n], 'int32') });
    const dOut = (be: typeof gpu | typeof reference, dtype: 'float32' | 'float64') => be.tensor(inputs.dOutput, [B, T, HQ, Dv], dtype);
    const grads = await gpu.nsaBackward({ config, ...mine, cuSeqlens, forward: fwd, dOutput: dOut(gpu, 'float32') });
    const rGrads = await reference.nsaBackward({ config, ...ref, cuSeqlens, forward: rFwd, dOutput: dOut(reference, 'float64') });
    const errors: Record<string, number> = { output: relativeError(await read(fwd.output), await read(rFwd.output)) };
    for (const name of GRADS) errors[name] = relativeError(await read(grads[name]), await read(rGrads[name]));
    const sameChoice = supplied || chosen.every((x, i) => x === refChoice[i]);
    return { errors, sameChoice, chosen, given };
  }

  it('forward and backward, B = 2, GQA group of 4, Dk != Dv', async () => {
    const { errors, sameChoice } = await forwardBackward(2, 150);
    expect(sameChoice).toBe(true);
    for (const [name, err] of Object.entries(errors)) expect(err, name).toBeLessThan(TOL);
  });

  it('varlen: packed sequences stay independent', async () => {
    const { errors, sameChoice } = await forwardBackward(1, 130, [0, 70, 71, 130]);
    expect(sameChoice).toBe(true);
    for (const [name, err] of Object.entries(errors)) expect(err, name).toBeLessThan(TOL);
  });

  it('caller-supplied blockIndices are used and echoed', async () => {
    const { errors, chosen, given } = await forwardBackward(1, 100, undefined, true);
    expect(Array.from(chosen)).toEqual(Array.from(await given!.read()));
    for (const [name, err] of Object.entries(errors)) expect(err, name).toBeLessThan(TOL);
  });

  it('the workgroup-memory top-n rounds (adapters without subgroups) choose as the reference does', async () => {
    gpu.ctx.subgroupTopN = false;
    try {
      const T = 150;
      const inputs = nsaInputs(config, 1, T, compressedCount(T, config), 43);
      const ref = await reference.nsaForward({ config, ...upload(reference, inputs, 'float64') });
      const out = await gpu.nsaForward({ config, ...upload(gpu, inputs, 'float32') });
      expect(Array.from(await out.blockIndices.read())).toEqual(Array.from(await ref.blockIndices.read()));
      expect(relativeError(await read(out.output), await read(ref.output))).toBeLessThan(TOL);
    } finally {
      gpu.ctx.subgroupTopN = true;
    }
  });

  it('the classic forward kernels (tiledForward: false) still match, and GPU time is measured where timestamps exist', async () => {
    const classic = await gpuBackend({ tiledForward: false });
    try {
      const B = 1;
      const T = 90;
      const C = compressedCount(T, config);
      const inputs = nsaInputs(config, B, T, C, 31);
      const ref = await reference.nsaForward({ config, ...upload(reference, inputs, 'float64') });
      const profiling = classic.rt.profile(true);
      const out = await classic.nsaForward({ config, ...upload(classic, inputs, 'float32') });
      expect(Array.from(await out.blockIndices.read())).toEqual(Array.from(await ref.blockIndices.read()));
      expect(relativeError(await read(out.output), await read(ref.output))).toBeLessThan(TOL);
      await classic.rt.profiler?.flush();
      const timings = classic.rt.profiler?.timings ?? [];
      expect(profiling).toBe(classic.ctx.features.timestamps);
      if (profiling) {
        expect(timings.map((t) => t.label)).toContain('nsaForward');
        expect(timings.every((t) => t.passes >= 1 && Number.isFinite(t.ms) && t.ms >= 0)).toBe(true);
      }
    } finally {
      classic.dispose();
    }
  });

  it('decode steps through a cache match the reference', async () => {
    const B = 2;
    // Past 32 visible compressed blocks, so decode steps take the two-pass (split) selection.
    const T = 303;
    const C = compressedCount(T, config);
    const inputs = nsaInputs(config, B, T, C, 99);
    const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv, selectCount: n } = config;
    const rows = (name: 'q' | 'kSlc' | 'vSlc' | 'kWin' | 'vWin' | 'gates' | 'kCmp' | 'vCmp', from: number, to: number, len: number) => {
      const width = inputs.shapes[name].slice(2).reduce((a, b) => a * b, 1);
      const out: number[] = [];
      for (let b = 0; b < B; b++) for (let t = from; t < to; t++) for (let x = 0; x < width; x++) out.push(inputs.values[name][(b * len + t) * width + x]);
      return out;
    };
    const caches = [gpu, reference].map((be) => be.createNSACache({ config, batch: B, dtype: be === gpu ? 'float32' : 'float64', capacity: T }));
    let length = 0;
    let compressed = 0;
    let worst = 0;
    let last: { q: number[]; gates: number[]; TQ: number; output: Float64Array; chosen: number[] } | undefined;
    const trusted: number[] = [];
    for (const to of [280, 281, 284, 285, 293, 300, 301, 302, 303]) {
      const cTo = compressedCount(to, config);
      for (const [i, be] of [gpu, reference].entries()) {
        const dt = be === gpu ? 'float32' : 'float64';
        const s = to - length;
        await caches[i].append({
          kSlc: be.tensor(rows('kSlc', length, to, T), [B, s, H, Dk], dt),
          vSlc: be.tensor(rows('vSlc', length, to, T), [B, s, H, Dv], dt),
          kWin: be.tensor(rows('kWin', length, to, T), [B, s, H, Dk], dt),
          vWin: be.tensor(rows('vWin', length, to, T), [B, s, H, Dv], dt),
        });
        if (cTo > compressed) {
          await caches[i].appendCompressed({
            kCmp: be.tensor(rows('kCmp', compressed, cTo, C), [B, cTo - compressed, H, Dk], dt),
            vCmp: be.tensor(rows('vCmp', compressed, cTo, C), [B, cTo - compressed, H, Dv], dt),
          });
        }
      }
      const from = length;
      length = to;
      compressed = cTo;
      if (from === 0) continue;
      const TQ = to - from;
      const q = rows('q', from, to, T);
      const gates = rows('gates', from, to, T);
      const out = await gpu.nsaDecode({ cache: caches[0], q: gpu.tensor(q, [B, TQ, HQ, Dk], 'float32'), gates: gpu.tensor(gates, [B, TQ, HQ, 3], 'float32') });
      const chosen = await out.blockIndices.read();
      const own = await reference.nsaDecode({ cache: caches[1], q: reference.tensor(q, [B, TQ, HQ, Dk], 'float64'), gates: reference.tensor(gates, [B, TQ, HQ, 3], 'float64') });
      expect(Array.from(chosen)).toEqual(Array.from(await own.blockIndices.read()));
      const ref = await reference.nsaDecode({
        cache: caches[1],
        q: reference.tensor(q, [B, TQ, HQ, Dk], 'float64'),
        gates: reference.tensor(gates, [B, TQ, HQ, 3], 'float64'),
        blockIndices: reference.tensor(chosen, [B, TQ, H, n], 'int32'),
      });
      const output = await read(out.output);
      worst = Math.max(worst, relativeError(output, await read(ref.output)));
      last = { q, gates, TQ, output, chosen: Array.from(chosen) };
      trusted.push((caches[0] as WebGPUNSACache).workspace.trusted.size);
    }
    expect(worst).toBeLessThan(TOL);
    // The cache binds its whole capacity, so a step one token longer than a validated one has the
    // same dispatch sequence: it reuses the bind groups and adds no new signature.
    expect(trusted.at(-1)).toBe(trusted.at(-2));
    // Repeats of a step reuse the cache's workspace (cached bind groups, no wait for error scopes)
    // and give the same result; fresh input tensors are copied in, so they may differ per call.
    const { q, gates, TQ, output, chosen } = last!;
    for (let k = 0; k < 3; k++) {
      const again = await gpu.nsaDecode({ cache: caches[0], q: gpu.tensor(q, [B, TQ, HQ, Dk], 'float32'), gates: gpu.tensor(gates, [B, TQ, HQ, 3], 'float32') });
      expect(Array.from(await read(again.output))).toEqual(Array.from(output));
      again.dispose();
    }
    expect(caches[0] instanceof WebGPUNSACache && caches[0].workspace.trusted.size).toBeGreaterThan(0);
    // The last step has one query, so it ran the four dispatches of decode-step.ts; the forward's
    // six passes and the previous nine (each branch's splits merged on their own, then the gates) agree.
    expect(TQ).toBe(1);
    gpu.ctx.singleQueryDecode = false;
    try {
      for (const merged of [true, false]) {
        gpu.ctx.mergedDecode = merged;
        const separate = await gpu.nsaDecode({ cache: caches[0], q: gpu.tensor(q, [B, TQ, HQ, Dk], 'float32'), gates: gpu.tensor(gates, [B, TQ, HQ, 3], 'float32') });
        expect(relativeError(await read(separate.output), output)).toBeLessThan(1e-6);
        expect(Array.from(await separate.blockIndices.read())).toEqual(chosen);
        separate.dispose();
      }
    } finally {
      gpu.ctx.mergedDecode = true;
      gpu.ctx.singleQueryDecode = true;
    }
    // Adapters without subgroups take the workgroup-memory top-n rounds (shaders/top-n.ts) in both
    // the four dispatches and the six passes: the same blocks and output.
    gpu.ctx.subgroupTopN = false;
    try {
      for (const single of [true, false]) {
        gpu.ctx.singleQueryDecode = single;
        const tree = await gpu.nsaDecode({ cache: caches[0], q: gpu.tensor(q, [B, TQ, HQ, Dk], 'float32'), gates: gpu.tensor(gates, [B, TQ, HQ, 3], 'float32') });
        expect(relativeError(await read(tree.output), output)).toBeLessThan(1e-6);
        expect(Array.from(await tree.blockIndices.read())).toEqual(chosen);
        tree.dispose();
      }
    } finally {
      gpu.ctx.subgroupTopN = true;
      gpu.ctx.singleQueryDecode = true;
    }
  });
});
