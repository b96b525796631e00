// One-query decode steps (decode-step.ts) against the float64 reference, with enough candidate
// blocks and free places that the block choice's top-n does several rounds, and a cache so short
// that every place is forced. The previous block choice and merge (NSA_WEBGPU_DECODE_STEP=previous)
// and the workgroup-memory top-n (adapters without subgroups) must give the same blocks and output,
// as must session 7's compressed/window attend and merge (NSA_WEBGPU_DECODE_ATTEND=session7) and
// the wide attend with other chunks and tiles,
// as must the block choice fused into the selected attend (ctx.decodeFused), with and without
// subgroups, and with attend workgroups smaller than the block choice's lse lanes (its lse loop).
// The default block choice is wide (one list per 64 candidates: one list here); 8 candidates per
// workgroup gives three lists, and ctx.decodeChoice = 'single' the one-workgroup block choice. With
// ctx.decodeSplit the compressed values' P·V runs in the wide block choice's dispatch. The wide block
// choice's session 8 kernels (NSA_WEBGPU_DECODE_CHOICE_KERNEL) must agree with the default's, as must
// dispatch 1 without its default register P·V and chunk loop (NSA_WEBGPU_DECODE_CW_KERNEL). With the
// fold the window's chunks run in the block choice's dispatch by default and the selected attend's
// extra workgroup folds them (NSA_WEBGPU_DECODE_WIN=choice: the merge reads them; =cw: dispatch 1).
import { compressedCount } from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { WebGPUBackend } from '../src/backend.js';
import { decodeAttendWideShader, regScoreLayout, type WideAttendKernel } from '../src/shaders/decode-wide.js';
import { gpuBackend, nsaInputs, probe, read, relativeError, smallConfig } from './gpu.js';

const TOL = 1e-4;
// 8 places, 3 forced (1 initial, 2 local): 5 chosen by top-n.
const config = smallConfig({ selectCount: 8, heads: 8, kvHeads: 2 });
const reference = createReferenceBackend();

// A cache (float32 on the GPU, float64 on the reference) holding the inputs' T tokens of B sequences
// and their C compressed blocks.
async function filledCache(
  be: WebGPUBackend | typeof reference,
  cfg: typeof config,
  inputs: ReturnType<typeof nsaInputs>,
  B: number,
  T: number,
  C: number,
  capacity: number,
) {
  const { kvHeads: H, headDimK: Dk, headDimV: Dv } = cfg;
  const dt = be === reference ? 'float64' : 'float32';
  const cache = be.createNSACache({ config: cfg, batch: B, dtype: dt, capacity });
  await cache.append({
    kSlc: be.tensor(inputs.values.kSlc, [B, T, H, Dk], dt),
    vSlc: be.tensor(inputs.values.vSlc, [B, T, H, Dv], dt),
    kWin: be.tensor(inputs.values.kWin, [B, T, H, Dk], dt),
    vWin: be.tensor(inputs.values.vWin, [B, T, H, Dv], dt),
  });
  await cache.appendCompressed({ kCmp: be.tensor(inputs.values.kCmp, [B, C, H, Dk], dt), vCmp: be.tensor(inputs.values.vCmp, [B, C, H, Dv], dt) });
  return cache;
}

describe.skipIf(!probe.available)(`webgpu one-query decode step${probe.available ? ` on ${probe.reason}` : ` (skipped: ${probe.reason})`}`, () => {
  let gpu: WebGPUBackend;
  beforeAll(async () => {
    gpu = await gpuBackend();
  });
  afterAll(() => gpu?.dispose());

  // T = 700: 22 candidate blocks; T = 70: 3 candidates, all forced (no top-n round). One capacity,
  // so both steps run the same pipelines (SwiftShader compiles slowly).
  it.each([700, 70])('T = %i: blocks equal the reference, output within tolerance, previous kernels agree', async (T) => {
    const B = 2;
    const C = compressedCount(T, config);
    const inputs = nsaInputs(config, B, T, C, 5 + T);
    const { heads: HQ, kvHeads: H, headDimK: Dk, selectCount: n } = config;
    const rows = (name: 'q' | 'gates', t: number) => {
      const width = inputs.shapes[name].slice(2).reduce((a, b) => a * b, 1);
      const out: number[] = [];
      for (let b = 0; b < B; b++) for (let x = 0; x < width; x++) out.push(inputs.values[name][(b * T + t) * width + x]);
      return out;
    };
    const filled = (be: typeof gpu | typeof reference) => filledCache(be, config, inputs, B, T, C, 700);
    const caches = [{ cache: await filled(gpu) }, { cache: await filled(reference) }];
    const q = rows('q', T - 1);
    const gates = rows('gates', T - 1);
    const step = (cache = caches[0].cache) => gpu.nsaDecode({ cache, q: gpu.tensor(q, [B, 1, HQ, Dk], 'float32'), gates: gpu.tensor(gates, [B, 1, HQ, 3], 'float32') });
    const out = await step();
    const chosen = Array.from(await out.blockIndices.read());
    const refCache = caches[1].cache;
    const own = await reference.nsaDecode({ cache: refCache, q: reference.tensor(q, [B, 1, HQ, Dk], 'float64'), gates: reference.tensor(gates, [B, 1, HQ, 3], 'float64') });
    expect(chosen).toEqual(Array.from(await own.blockIndices.read()));
    const ref = await reference.nsaDecode({
      cache: refCache,
      q: reference.tensor(q, [B, 1, HQ, Dk], 'float64'),
      gates: reference.tensor(gates, [B, 1, HQ, 3], 'float64'),
      blockIndices: reference.tensor(chosen, [B, 1, H, n], 'int32'),
    });
    const output = await read(out.output);
    expect(relativeError(output, await read(ref.output))).toBeLessThan(TOL);
    // Every row of the long cache chose blocks beyond the forced ones (the top-n ran).
    if (T === 700) expect(chosen.every((j) => j >= 0)).toBe(true);
    // Each variant sets what it changes and returns what puts it back.
    type Set = () => () => void;
    const tiles =
      (t: NonNullable<typeof gpu.ctx.decodeTiles>): Set =>
      () => {
        gpu.ctx.decodeTiles = t;
        return () => (gpu.ctx.decodeTiles = undefined);
      };
    const env =
      (name: string, value: string): Set =>
      () => {
        process.env[name] = value;
        return () => delete process.env[name];
      };
    const workgroupTopN: Set = () => {
      gpu.ctx.subgroupTopN = false;
      return () => (gpu.ctx.subgroupTopN = true);
    };
    const split: Set = () => {
      gpu.ctx.decodeSplit = true;
      return () => (gpu.ctx.decodeSplit = false);
    };
    const fuse: Set = () => {
      gpu.ctx.decodeFused = true;
      return () => (gpu.ctx.decodeFused = false);
    };
    const single: Set = () => {
      gpu.ctx.decodeChoice = 'single';
      return () => (gpu.ctx.decodeChoice = 'wide');
    };
    const both =
      (...sets: Set[]): Set =>
      () => {
        const undo = sets.map((set) => set());
        return () => undo.reverse().forEach((u) => u());
      };
    const variants: [string, Set][] = [
      ['previous kernels', env('NSA_WEBGPU_DECODE_STEP', 'previous')],
      ['workgroup-memory top-n', workgroupTopN],
      ['wide block choice, 8 candidates per workgroup', tiles({ choiceCands: 8 })],
      ...(['session8', 'choice8', 'attend8', 'unrolled'] as const).map((v): [string, Set] => [
        `wide block choice on session 8's kernels (${v})`,
        env('NSA_WEBGPU_DECODE_CHOICE_KERNEL', v),
      ]),
      ["wide block choice, 8 candidates per workgroup, session 8's kernels", both(tiles({ choiceCands: 8 }), env('NSA_WEBGPU_DECODE_CHOICE_KERNEL', 'session8'))],
      ['compressed values P·V in the block choice dispatch (split)', split],
      ['split, 8 candidates per block-choice workgroup', both(split, tiles({ choiceCands: 8 }))],
      ['split, 16-key chunks, 64 invocations', both(split, tiles({ cw: { KC: 16, WG: 64 } }))],
      ['single block choice', single],
      ['single block choice, workgroup-memory top-n', both(single, workgroupTopN)],
      ['session 7 attend and merge', env('NSA_WEBGPU_DECODE_ATTEND', 'session7')],
      [
        'wide attend: 16-key chunks, values through the keys tile, 1 x 1 tiles, 64 invocations',
        tiles({ cw: { KC: 16, shared: true, WG: 64, rh: 1, rk: 1, oh: 1, oc: 1 } }),
      ],
      ['wide attend: 64-key chunks (by default 32 here: few workgroups)', tiles({ cw: { KC: 64 } })],
      ['wide attend: 4 x 1 score tiles (the H100 default at G = 16, 64-key chunks)', tiles({ cw: { rh: 4 } })],
      ['wide attend: 4 x 2 tiles', tiles({ cw: { rh: 4, rk: 2, oh: 4 } })],
      ["wide attend: session 9's kernel (no register P·V, one chunk a workgroup)", env('NSA_WEBGPU_DECODE_CW_KERNEL', 'session9')],
      ['wide attend: P·V on the values registers, one chunk a workgroup', env('NSA_WEBGPU_DECODE_CW_KERNEL', 'regpv')],
      [
        'wide attend: P·V on the values registers, 64 invocations (keys past the tile, idle invocations)',
        both(env('NSA_WEBGPU_DECODE_CW_KERNEL', 'regpv'), tiles({ cw: { WG: 64 } })),
      ],
      ['wide attend: 2 workgroups per KV head, each taking chunks in turn', env('NSA_WEBGPU_DECODE_CW_KERNEL', 'loop:2')],
      ['wide attend: scores from the key tile (not the registers)', env('NSA_WEBGPU_DECODE_CW_SCORES', 'tile')],
      ['wide attend: register scores, 128 invocations', tiles({ cw: { WG: 128 } })],
      ['wide attend: register scores, 2 lanes a key row', env('NSA_WEBGPU_DECODE_CW_SCORES', 'reg:2')],
      ['wide attend: register scores, 1 lane a key row (no shuffles)', env('NSA_WEBGPU_DECODE_CW_SCORES', 'reg:1')],
      ['wide attend: register scores, 16-key chunks, 64 invocations', tiles({ cw: { KC: 16, WG: 64 } })],
      [
        'wide attend: register P·V, 16-key chunks, values through the keys tile, 64 invocations',
        both(env('NSA_WEBGPU_DECODE_CW_KERNEL', 'regpv'), tiles({ cw: { KC: 16, shared: true, WG: 64 } })),
      ],
      [
        'wide attend: chunks in turn, register P·V, 16-key chunks, 64 invocations',
        both(env('NSA_WEBGPU_DECODE_CW_KERNEL', 'loop:3,regpv'), tiles({ cw: { KC: 16, WG: 64 } })),
      ],
      ['fused block choice', fuse],
      ['fused block choice, workgroup-memory top-n', both(fuse, workgroupTopN)],
      ['fused block choice, 64-invocation attend', both(fuse, env('NSA_WEBGPU_DECODE_ATTEND_WG', '64'))],
      ['merge in 3 column slices, 64 invocations', both(env('NSA_WEBGPU_DECODE_MERGE_COLS', '3'), env('NSA_WEBGPU_DECODE_MERGE_WG', '64'))],
      ['selected attend steps in loops of 2', env('NSA_WEBGPU_DECODE_SLC_UNROLL', '2')],
      ['block choice rank comparisons in a loop', env('NSA_WEBGPU_DECODE_CHOICE_RANK', 'loop')],
      ['compressed and window partials folded in the block choice dispatch', both(env('NSA_WEBGPU_DECODE_FOLD', '1'), env('NSA_WEBGPU_DECODE_WIN', 'cw'))],
      ['fold, merge in 3 column slices', both(env('NSA_WEBGPU_DECODE_FOLD', '1'), env('NSA_WEBGPU_DECODE_WIN', 'cw'), env('NSA_WEBGPU_DECODE_MERGE_COLS', '3'))],
      ['fold, window chunks in the block choice dispatch, folded by the selected attend (the default with the fold)', env('NSA_WEBGPU_DECODE_FOLD', '1')],
      ['fold, window chunks in the block choice dispatch, read by the merge', both(env('NSA_WEBGPU_DECODE_FOLD', '1'), env('NSA_WEBGPU_DECODE_WIN', 'choice'))],
      ['fold, window chunks of 8 keys in the block choice dispatch, read by the merge', both(env('NSA_WEBGPU_DECODE_FOLD', '1'), env('NSA_WEBGPU_DECODE_WIN', 'choice:8'))],
      ['fold, window chunks in the block choice dispatch, folded by the selected attend, asked for', both(env('NSA_WEBGPU_DECODE_FOLD', '1'), env('NSA_WEBGPU_DECODE_WIN', 'choice-fold'))],
      [
        'fold, window chunks of 8 keys in the block choice dispatch, folded by the selected attend',
        both(env('NSA_WEBGPU_DECODE_FOLD', '1'), env('NSA_WEBGPU_DECODE_WIN', 'choice-fold:8')),
      ],
      [
        'fold, window chunks in the block choice dispatch on the value tile',
        both(env('NSA_WEBGPU_DECODE_FOLD', '1'), env('NSA_WEBGPU_DECODE_WIN', 'choice'), env('NSA_WEBGPU_DECODE_WIN_KERNEL', 'tile')),
      ],
      [
        'fold, window chunks in the block choice dispatch, 64-key chunks, merge in 3 column slices',
        both(env('NSA_WEBGPU_DECODE_FOLD', '1'), env('NSA_WEBGPU_DECODE_WIN', 'choice'), tiles({ cw: { KC: 64 } }), env('NSA_WEBGPU_DECODE_MERGE_COLS', '3')),
      ],
    ];
    // Variants whose dispatch 1 took its scores from the keys' registers.
    const regScoreRuns: string[] = [];
    for (const [name, set] of variants) {
      const restore = set();
      // A fresh cache: its workspace's block list starts zeroed, not with the blocks of the step above.
      const fresh = await filled(gpu);
      const pipelines = vi.spyOn(gpu.rt, 'pipelineOf');
      try {
        const other = await step(fresh);
        // A fused variant must have run the fused kernel and no block choice dispatch, a wide one the
        // wide kernel and the selected attend that takes the final top-n, the others the single one.
        const names = pipelines.mock.calls.map(([kernel, params]) => `${kernel}${'choice' in params ? ' fused' : ''}`);
        const wide = !gpu.ctx.decodeFused && gpu.ctx.decodeChoice === 'wide' && !process.env.NSA_WEBGPU_DECODE_STEP;
        if (gpu.ctx.decodeFused || wide) expect(names, name).toContain('nsa_decode_attend_slc fused');
        expect(names.includes('nsa_decode_choice_wide'), name).toBe(wide);
        expect(names.includes('nsa_decode_select'), name).toBe(!gpu.ctx.decodeFused && !wide);
        // The compressed values' P·V ran in the wide block choice's dispatch where asked (not on session 7's attend).
        const split = pipelines.mock.calls.some(([kernel, params]) => kernel === 'nsa_decode_choice_wide' && (params as { split?: boolean }).split === true);
        expect(split, name).toBe(wide && gpu.ctx.decodeSplit && !process.env.NSA_WEBGPU_DECODE_ATTEND);
        // The wide block choice's kernels: subgroup reductions (where the adapter has them) and the
        // selected attend's places in ranking order, unless session 8's are asked for.
        const choiceParams = pipelines.mock.calls.find(([kernel]) => kernel === 'nsa_decode_choice_wide')?.[1] as { wide: { sub?: number; slots?: boolean; fold?: number } } | undefined;
        if (choiceParams) {
          const kernels = process.env.NSA_WEBGPU_DECODE_CHOICE_KERNEL;
          const sub = gpu.ctx.subgroupTopN && gpu.ctx.features.subgroups && kernels !== 'session8' && kernels !== 'choice8';
          expect((choiceParams.wide.sub ?? 0) > 0, name).toBe(sub);
          expect(choiceParams.wide.slots === true, name).toBe(kernels !== 'session8' && kernels !== 'attend8');
          expect((choiceParams.wide as { searchLoop?: boolean }).searchLoop === true, name).toBe(kernels !== 'unrolled');
          // The fold ran where asked (it needs the subgroup block choice).
          expect((choiceParams.wide.fold ?? 0) > 0, name).toBe(process.env.NSA_WEBGPU_DECODE_FOLD === '1' && sub);
          // The window's chunks ran in the block choice's dispatch where asked (they need the fold),
          // and then dispatch 1 took the compressed chunks only.
          const win = (choiceParams.wide as { win?: WideAttendKernel }).win;
          expect(win !== undefined, name).toBe(process.env.NSA_WEBGPU_DECODE_WIN !== 'cw' && (choiceParams.wide.fold ?? 0) > 0);
          if (process.env.NSA_WEBGPU_DECODE_WIN?.endsWith(':8')) expect(win?.KCW, name).toBe(8);
          // The merge read the window chunks' partials, or (choice-fold) the selected attend folded them.
          const merge = pipelines.mock.calls.find(([kernel]) => kernel === 'nsa_decode_merge')?.[1] as { win?: number } | undefined;
          const slc = pipelines.mock.calls.find(([kernel]) => kernel === 'nsa_decode_attend_slc')?.[1] as { winFold?: unknown } | undefined;
          const slcFold = win !== undefined && !/^choice(:\d+)?$/.test(process.env.NSA_WEBGPU_DECODE_WIN ?? '');
          expect(slc?.winFold !== undefined, name).toBe(slcFold);
          expect(merge?.win, name).toBe(slcFold ? undefined : win?.KCW);
          if (process.env.NSA_WEBGPU_DECODE_WIN_KERNEL === 'tile') expect(win?.regPV, name).toBe(false);
          const cwParams = pipelines.mock.calls.find(([kernel]) => kernel === 'nsa_decode_attend_cw')?.[1] as WideAttendKernel | undefined;
          expect(cwParams?.noWindow === true, name).toBe(win !== undefined);
        }
        // The register P·V ran by default and where asked (its layout fits every variant here), not
        // with the split nor on session 9's kernel; the chunk loop likewise.
        const cw = pipelines.mock.calls.find(([kernel]) => kernel === 'nsa_decode_attend_cw')?.[1] as WideAttendKernel | undefined;
        if (cw && 'KCW' in cw && 'tile' in cw) {
          const kernel = process.env.NSA_WEBGPU_DECODE_CW_KERNEL;
          const wgsl = decodeAttendWideShader(cw);
          expect(wgsl.includes("P·V on the values' registers"), name).toBe(!gpu.ctx.decodeSplit && (kernel === undefined || kernel.includes('regpv')));
          expect(wgsl.includes('for (var cx = wid.x;'), name).toBe(kernel === undefined || kernel.includes('loop:'));
          // Scores from the keys' registers where the adapter has one subgroup size, the layout fits
          // and the register P·V runs, unless the tile is asked for.
          const f = gpu.ctx.features;
          const S = f.subgroups && f.subgroupMinSize >= 4 && f.subgroupMinSize === f.subgroupMaxSize ? f.subgroupMinSize : 0;
          const regScores = S > 0 && process.env.NSA_WEBGPU_DECODE_CW_SCORES !== 'tile' && regScoreLayout(cw, S, cw.regScoreLanes) !== undefined && wgsl.includes("P·V on the values' registers");
          expect(wgsl.includes("Scores from the keys' registers"), name).toBe(regScores);
          if (regScores) regScoreRuns.push(name);
        }
        expect(Array.from(await other.blockIndices.read()), name).toEqual(chosen);
        const got = await read(other.output);
        expect(relativeError(got, output), name).toBeLessThan(1e-6);
        expect(relativeError(got, await read(ref.output)), name).toBeLessThan(TOL);
        other.dispose();
      } finally {
        pipelines.mockRestore();
        fresh.dispose();
        restore();
      }
    }
    // Where the adapter has one subgroup size (SwiftShader: 4), the default kernel must have run them.
    const f = gpu.ctx.features;
    if (f.subgroups && f.subgroupMinSize >= 4 && f.subgroupMinSize === f.subgroupMaxSize) expect(regScoreRuns.length).toBeGreaterThan(0);
    out.dispose();
    for (const { cache } of caches) cache.dispose();
  });

  // G = 16 heads a KV head on 4-key chunks and 64 invocations: one score per invocation, a head's
  // keys within a subgroup (SwiftShader's are 4 wide), so the selected attend takes each head's max
  // and sum by subgroup shuffles where the adapter has subgroups; the scan must agree.
  it('selected attend statistics by subgroup shuffles agree with the scan and the reference', async () => {
    const cfg = smallConfig({ selectCount: 8, heads: 32, kvHeads: 2 });
    const B = 1;
    const T = 400;
    const C = compressedCount(T, cfg);
    const inputs = nsaInputs(cfg, B, T, C, 11);
    const { heads: HQ, headDimK: Dk } = cfg;
    const last = (name: 'q' | 'gates') => {
      const width = inputs.shapes[name].slice(2).reduce((a, b) => a * b, 1);
      return Array.from(inputs.values[name]).slice((T - 1) * width, T * width);
    };
    const filled = (be: typeof gpu | typeof reference) => filledCache(be, cfg, inputs, B, T, C, T);
    const refCache = await filled(reference);
    const own = await reference.nsaDecode({ cache: refCache, q: reference.tensor(Array.from(last('q')), [B, 1, HQ, Dk], 'float64'), gates: reference.tensor(Array.from(last('gates')), [B, 1, HQ, 3], 'float64') });
    const refBlocks = Array.from(await own.blockIndices.read());
    const ref = await read(own.output);
    gpu.ctx.decodeTiles = { KC: 4 };
    process.env.NSA_WEBGPU_DECODE_ATTEND_WG = '64';
    const outputs: Float64Array[] = [];
    try {
      for (const scan of [false, true]) {
        if (scan) process.env.NSA_WEBGPU_DECODE_SLC_STATS = 'scan';
        const cache = await filled(gpu);
        const pipelines = vi.spyOn(gpu.rt, 'pipelineOf');
        try {
          const out = await gpu.nsaDecode({ cache, q: gpu.tensor(Array.from(last('q')), [B, 1, HQ, Dk], 'float32'), gates: gpu.tensor(Array.from(last('gates')), [B, 1, HQ, 3], 'float32') });
          const slc = pipelines.mock.calls.find(([kernel]) => kernel === 'nsa_decode_attend_slc');
          const wgsl = (slc![2] as (p: unknown) => string)(slc![1]);
          expect(wgsl.includes('subgroupShuffleXor'), `scan ${scan}`).toBe(!scan && gpu.ctx.features.subgroups && gpu.ctx.subgroupTopN);
          expect(Array.from(await out.blockIndices.read())).toEqual(refBlocks);
          outputs.push(Float64Array.from(await read(out.output)));
          out.dispose();
        } finally {
          pipelines.mockRestore();
          cache.dispose();
        }
      }
    } finally {
      gpu.ctx.decodeTiles = undefined;
      delete process.env.NSA_WEBGPU_DECODE_ATTEND_WG;
      delete process.env.NSA_WEBGPU_DECODE_SLC_STATS;
    }
    expect(relativeError(outputs[0], outputs[1])).toBeLessThan(1e-6);
    expect(relativeError(outputs[0], ref)).toBeLessThan(TOL);
    refCache.dispose();
  });
});
