// One attention branch on the GPU (compressed, selected, window, or dense causal): planning,
// compiling and encoding its forward, dq and dk/dv passes. NSA forward/backward, decoding and
// the dense baseline are all compositions of these.
import { visibleCompressed } from '@nsa/core';
import { MAX_GRID, ROW_ALIGN, Frame, rowRange, type Runtime } from './runtime.js';
import { attentionShader } from './shaders/attention.js';
import type { ElementType, Mode, Params } from './shaders/common.js';
import { ITEM_WORDS } from './shaders/common.js';
import { dkdvShader } from './shaders/dkdv.js';
import { ELEMENTWISE_WG, backwardPrepShader, castShader, combineSplitsShader, gateCombineShader, mergeBranchesShader } from './shaders/elementwise.js';
import { selectionMatrixFits, selectionShader } from './shaders/selection.js';
import { matrixForwardFits, matrixForwardShader, matrixForwardSharedBytes } from './shaders/subgroup-matrix-forward.js';
import { matrixSelectedFits, matrixSelectedShader, matrixSelectedSharedBytes } from './shaders/subgroup-matrix-selected.js';
import { MATRIX_SUBGROUP } from './shaders/subgroup-matrix.js';
import { tiledForwardShader } from './shaders/tiled-forward.js';
import {
  chunkItems,
  itemCount,
  keyItems,
  planKeyTiles,
  planQueryTiles,
  planSelectionTiles,
  planWideSelection,
  planTiledForward,
  keyGroups,
  queryItems,
  type KeyGroup,
  type Sequence,
} from './tiling.js';

/** Sizes and hyper-parameters shared by every pass of one call. */
export interface Geometry {
  readonly H: number;
  readonly HQ: number;
  readonly G: number;
  readonly DK: number;
  readonly DV: number;
  readonly e: ElementType;
  readonly scale: number;
  /** Query token rows (batch x time, or the packed length). */
  readonly tokRows: number;
  readonly window: number;
  readonly cmpBlock: number;
  readonly cmpStride: number;
  readonly selBlock: number;
  readonly nSel: number;
  readonly initialBlocks: number;
  readonly localBlocks: number;
}

/** Fewer workgroups than this leave the GPU idle: split the keys (flash-decoding). */
const TARGET_WORKGROUPS = 512;
const MAX_SPLITS = 64;

function esize(e: ElementType): number {
  return e === 'f16' ? 2 : 4;
}

function baseParams(geo: Geometry): Params {
  return {
    H: geo.H,
    HQ: geo.HQ,
    window: geo.window,
    cmpBlock: geo.cmpBlock,
    cmpStride: geo.cmpStride,
    selBlock: geo.selBlock,
    nSel: geo.nSel,
    tokRows: geo.tokRows,
    scale: geo.scale,
  };
}

function keyLo(mode: Mode, geo: Geometry, p: number): number {
  return mode === 'window' ? Math.max(0, p + 1 - geo.window) : 0;
}

function keyHi(mode: Mode, geo: Geometry, p: number): number {
  if (mode === 'compressed') return visibleCompressed(p, { compressBlock: geo.cmpBlock, compressStride: geo.cmpStride });
  return p + 1;
}

export type Encoder<T> = (frame: Frame, buffers: T) => void;

interface ForwardGroupPlan {
  readonly group: KeyGroup;
  readonly items: Uint32Array;
  readonly n: number;
  readonly chunks: ReturnType<typeof chunkItems>;
  readonly splits: number;
  readonly perSplit: number;
}

export interface BranchBuffers {
  q: GPUBuffer;
  k: GPUBuffer;
  v: GPUBuffer;
  blocks?: GPUBuffer;
  out: GPUBuffer;
  lse: GPUBuffer;
  /** Deferred branches: where the unnormalised split partials and their (max, sum) go. */
  part?: GPUBuffer;
  stats?: GPUBuffer;
}

/**
 * A branch's encoder. `deferredSplits` is set when the branch was prepared with `defer` and can
 * leave its key splits unmerged: it then writes only `part` [splits, tokRows, HQ, DV] and `stats`
 * [splits, tokRows, HQ, 2] (no `out`, no `lse`), and a later pass (mergeBranches) merges them.
 */
export type BranchForward = Encoder<BranchBuffers> & { readonly deferredSplits?: number };

/** Forward of one branch: normalised output `out` [tokRows, HQ, DV] f32 and its `lse` [tokRows, HQ]. */
export async function prepareBranchForward(
  rt: Runtime,
  geo: Geometry,
  mode: Mode,
  seqs: readonly Sequence[],
  options: { defer?: boolean } = {},
): Promise<BranchForward> {
  const { G, H, HQ, DK, DV, e } = geo;
  const limit = rt.ctx.limits.maxStorageBufferBindingSize;
  const maxQueries = seqs.reduce((a, s) => Math.max(a, s.nq), 0);
  const tiled = rt.ctx.tiledForward ? planTiledForward(rt.ctx, mode, G, DK, DV, false, maxQueries) : undefined;
  const tiles = tiled ?? planQueryTiles(rt.ctx, 'forward', mode, G, DK, DV);
  const nhc = Math.ceil(G / tiles.GC);
  const bpr = { q: HQ * DK * esize(e), out: HQ * DV * 4, lse: HQ * 4, blocks: H * geo.nSel * 4 };
  const bpk = { k: H * DK * esize(e), v: H * DV * esize(e) };
  const groups = keyGroups(seqs, mode === 'compressed', Math.max(bpk.k, bpk.v), limit, ROW_ALIGN);
  const plans: ForwardGroupPlan[] = groups.map((group) => {
    const items = queryItems(group.seqs, tiles.TQB);
    const n = itemCount(items);
    const chunks = chunkItems(items, Math.max(...Object.values(bpr)), limit, ROW_ALIGN, MAX_GRID);
    let maxTiles = 1;
    if (mode === 'selected') maxTiles = geo.nSel;
    else {
      for (let i = 0; i < n; i++) {
        const p0 = items[i * ITEM_WORDS + 2];
        const p1 = p0 + items[i * ITEM_WORDS + 1] - 1;
        maxTiles = Math.max(maxTiles, Math.ceil((keyHi(mode, geo, p1) - keyLo(mode, geo, p0)) / tiles.KT));
      }
    }
    // Few workgroups (decoding): split the keys across workgroups and merge (flash-decoding).
    let splits = 1;
    let perSplit = maxTiles;
    const workgroups = n * H * nhc;
    if (groups.length === 1 && chunks.length === 1 && workgroups < TARGET_WORKGROUPS && maxTiles > 1) {
      const want = Math.min(MAX_SPLITS, maxTiles, Math.ceil(TARGET_WORKGROUPS / Math.max(1, workgroups)));
      perSplit = Math.ceil(maxTiles / want);
      splits = Math.ceil(maxTiles / perSplit);
      if (splits * geo.tokRows * HQ * DV * 4 > limit) {
        splits = 1;
        perSplit = maxTiles;
      }
    }
    return { group, items, n, chunks, splits, perSplit };
  });
  // Deferred merging (decode steps): one key group and one chunk, partials under the binding limit.
  const deferred =
    options.defer && plans.length === 1 && plans[0].chunks.length === 1 && plans[0].splits * geo.tokRows * HQ * DV * 4 <= limit ? plans[0].splits : undefined;
  const kernel = (split: boolean) => ({ kind: 'forward' as const, mode, e, G, GC: tiles.GC, TQB: tiles.TQB, DK, DV, KT: tiles.KT, WG: tiles.WG, split });
  // Row statistics through subgroup shuffles only where every subgroup holds whole row groups.
  const subgroups = rt.ctx.features.subgroups && rt.ctx.features.subgroupMinSize >= (tiled?.NKG ?? Infinity) && (tiled?.WG ?? 0) % rt.ctx.features.subgroupMinSize === 0;
  const compile = (split: boolean, name: string) => {
    if (!tiled) return rt.pipelineOf(name, kernel(split), attentionShader);
    // Split kernels take their keys per tile and rows per invocation from the split plan.
    const t = (split ? splitTiles : undefined) ?? tiled;
    return rt.pipelineOf(name, { mode, e, G, GC: tiled.GC, TQB: tiled.TQB, DK, DV, KT: t.KT, RM: t.RM, NKG: tiled.NKG, split, subgroups, batchLoads: tiled.batchLoads, vecP: tiled.vecP, prefetch: tiled.prefetch }, tiledForwardShader);
  };
  // Key splits of the selected branch (decoding) walk one block each: longer tiles there (their
  // workgroups are few, so occupancy matters less than the serial chain of tiles). Other modes size
  // their splits in tiles of tiled.KT, so they keep it.
  const splitTiles = tiled && mode === 'selected' ? (planTiledForward(rt.ctx, mode, G, DK, DV, true) ?? tiled) : tiled;
  const variant = tiled ? `tiled${subgroups ? '_sg' : ''}` : 'classic';
  const anySplit = deferred !== undefined || plans.some((p) => p.splits > 1);
  const [pipeline, splitPipeline, combine] = await Promise.all([
    compile(false, `nsa_${mode}_forward_${variant}`),
    anySplit ? compile(true, `nsa_${mode}_forward_split_${variant}`) : undefined,
    anySplit && deferred === undefined ? rt.pipelineOf('combine_splits', { DV }, (p) => combineSplitsShader(p.DV)) : undefined,
  ]);
  const encode: Encoder<BranchBuffers> = (frame, buf) => {
    if (deferred !== undefined && splitPipeline) {
      const plan = plans[0];
      if (!buf.part || !buf.stats) throw new Error(`${mode} forward: a deferred branch needs part and stats buffers`);
      const { keyLo: klo, keyHi: khi } = plan.group;
      const itemBuf = frame.upload(plan.items, `${mode} items`);
      const params = { ...baseParams(geo), perSplit: plan.perSplit, keyRowBase: klo, splits: plan.splits, rowBase: 0, itemBase: 0 };
      const bindings = [itemBuf, buf.q, rowRange(buf.k, bpk.k, klo, khi), rowRange(buf.v, bpk.v, klo, khi), buf.part, buf.stats, ...(buf.blocks ? [buf.blocks] : [])];
      frame.dispatch(splitPipeline, params, bindings, [plan.n, H * nhc, plan.splits]);
      return;
    }
    for (const plan of plans) {
      const { keyLo: klo, keyHi: khi } = plan.group;
      const k = rowRange(buf.k, bpk.k, klo, khi);
      const v = rowRange(buf.v, bpk.v, klo, khi);
      const itemBuf = frame.upload(plan.items, `${mode} items`);
      const params = { ...baseParams(geo), perSplit: plan.perSplit, keyRowBase: klo };
      if (plan.splits > 1 && splitPipeline && combine) {
        const part = frame.scratch(plan.splits * geo.tokRows * HQ * DV * 4, `${mode} split partials`);
        const stats = frame.scratch(plan.splits * geo.tokRows * HQ * 2 * 4, `${mode} split stats`);
        const bindings = [itemBuf, buf.q, k, v, part, stats, ...(buf.blocks ? [buf.blocks] : [])];
        frame.dispatch(splitPipeline, { ...params, splits: plan.splits, rowBase: 0, itemBase: 0 }, bindings, [plan.n, H * nhc, plan.splits]);
        frame.dispatch(
          combine,
          { ...baseParams(geo), splits: plan.splits, qRowLo: 0, qRowHi: geo.tokRows },
          [part, stats, buf.out, buf.lse],
          Frame.grid1d(geo.tokRows * HQ * DV, ELEMENTWISE_WG),
        );
        continue;
      }
      for (const c of plan.chunks) {
        const r = (buffer: GPUBuffer, bytes: number) => rowRange(buffer, bytes, c.rowBase, c.rowEnd);
        const bindings = [itemBuf, r(buf.q, bpr.q), k, v, r(buf.out, bpr.out), r(buf.lse, bpr.lse)];
        if (buf.blocks) bindings.push(r(buf.blocks, bpr.blocks));
        frame.dispatch(pipeline, { ...params, splits: 1, rowBase: c.rowBase, itemBase: c.first }, bindings, [c.count, H * nhc, 1]);
      }
    }
  };
  return Object.assign(encode, { deferredSplits: deferred });
}

/**
 * How float16 training calls may use subgroup matrices here: 'native' where the device has them,
 * 'emulated' (f32 or f16) when a test asks for the emulation, else undefined.
 */
function matrixMode(rt: Runtime, e: ElementType): 'native' | 'emulated' | undefined {
  const { ctx } = rt;
  if (!ctx.matrixForward) return undefined;
  if (ctx.matrixEmulation) return 'emulated';
  return ctx.features.subgroupMatrix && e === 'f16' ? 'native' : undefined;
}

/** Keys per tile (the first that fits workgroup memory) and tokens (subgroups) per workgroup of the subgroup-matrix forward. */
const MATRIX_KT = [64, 32];
const MATRIX_TOKENS = 4;
/** Lazy rescaling threshold (natural-log units): P stays below e^8 ~ 3000, well inside f16. */
const MATRIX_TAU = 8;

/**
 * The compressed, window or selected forward of a float16 training call on subgroup matrices, where
 * the device has them (or the tests' emulation) and the shapes fit; undefined otherwise (the caller
 * then plans the other kernels). No key splits: training calls have a workgroup per 4 tokens (per
 * token in the selected branch).
 */
export async function prepareMatrixBranchForward(rt: Runtime, geo: Geometry, mode: Mode, seqs: readonly Sequence[]): Promise<BranchForward | undefined> {
  const { ctx } = rt;
  const { G, H, HQ, DK, DV, e } = geo;
  // Native: f16 storage only. The tests' emulation also takes f32 (software adapters have no f16).
  const mode0 = matrixMode(rt, e);
  if (!mode0) return undefined;
  const native = mode0 === 'native';
  if (mode === 'selected') return ctx.matrixKernel?.selected === false ? undefined : prepareMatrixSelectedForward(rt, geo, seqs, native);
  if ((mode !== 'compressed' && mode !== 'window') || !matrixForwardFits(G, DK, DV)) return undefined;
  // The emulation (tests) raises the reference maximum at every increase, so rescaling runs often.
  const base = { mode, e, G, DK, DV, NSG: MATRIX_TOKENS, TAU: ctx.matrixEmulation ? 0 : MATRIX_TAU, accumulate: ctx.matrixAccumulate, rightMajor: ctx.matrixRightMajor, prefetch: ctx.matrixKernel?.prefetch ?? true, interior: ctx.matrixKernel?.interior ?? true, emulate: !native };
  const override = ctx.tileOverride?.[mode]?.KT;
  const KT = (override ? [override] : MATRIX_KT).find((kt) => kt % 16 === 0 && matrixForwardSharedBytes({ ...base, KT: kt }) <= ctx.limits.maxComputeWorkgroupStorageSize);
  if (KT === undefined) return undefined;
  const kernel = { ...base, KT };
  if (MATRIX_TOKENS * MATRIX_SUBGROUP > ctx.limits.maxComputeInvocationsPerWorkgroup) return undefined;
  const limit = ctx.limits.maxStorageBufferBindingSize;
  const nhc = G / 16;
  const bpr = { q: HQ * DK * esize(e), out: HQ * DV * 4, lse: HQ * 4 };
  const bpk = { k: H * DK * esize(e), v: H * DV * esize(e) };
  const plans = keyGroups(seqs, mode === 'compressed', Math.max(bpk.k, bpk.v), limit, ROW_ALIGN).map((group) => {
    const items = queryItems(group.seqs, MATRIX_TOKENS);
    return { group, items, chunks: chunkItems(items, Math.max(...Object.values(bpr)), limit, ROW_ALIGN, MAX_GRID) };
  });
  const name = `nsa_${mode}_forward_matrix${kernel.emulate ? '_emulated' : ''}`;
  const pipeline = await rt.pipelineOf(name, kernel, matrixForwardShader);
  return (frame, buf) => {
    for (const plan of plans) {
      const { keyLo: klo, keyHi: khi } = plan.group;
      const k = rowRange(buf.k, bpk.k, klo, khi);
      const v = rowRange(buf.v, bpk.v, klo, khi);
      const itemBuf = frame.upload(plan.items, `${mode} items`);
      for (const c of plan.chunks) {
        const r = (buffer: GPUBuffer, bytes: number) => rowRange(buffer, bytes, c.rowBase, c.rowEnd);
        frame.dispatch(
          pipeline,
          { ...baseParams(geo), keyRowBase: klo, rowBase: c.rowBase, itemBase: c.first },
          [itemBuf, r(buf.q, bpr.q), k, v, r(buf.out, bpr.out), r(buf.lse, bpr.lse)],
          [c.count, H * nhc, 1],
        );
      }
    }
  };
}

/**
 * The selected branch of a float16 training call on subgroup matrices (see
 * shaders/subgroup-matrix-selected.ts): a workgroup per (token, KV head, 16 heads), keys per tile
 * the first of MATRIX_SELECTED_KT that divides the block size. Undefined where the shapes do not fit.
 */
// 32-key tiles (two subgroups, ~14 KB of workgroup memory) ran the 64k selected branch in 81 ms
// against 120 ms with 64-key tiles (four subgroups, ~26 KB): more workgroups per SM (run wf16-1).
const MATRIX_SELECTED_KT = [32, 16, 64];
async function prepareMatrixSelectedForward(rt: Runtime, geo: Geometry, seqs: readonly Sequence[], native: boolean): Promise<BranchForward | undefined> {
  const { ctx } = rt;
  const { G, H, HQ, DK, DV, e } = geo;
  if (!matrixSelectedFits(G, DK, DV)) return undefined;
  const override = ctx.tileOverride?.selected?.KT;
  const base = { e, G, DK, DV, nSel: geo.nSel, selBlock: geo.selBlock, TAU: ctx.matrixEmulation ? 0 : MATRIX_TAU, emulate: !native };
  const KT = (override ? [override] : MATRIX_SELECTED_KT.filter((kt) => geo.selBlock % kt === 0).concat([16])).find(
    (kt) => [16, 32, 64].includes(kt) && matrixSelectedSharedBytes({ ...base, KT: kt }) <= ctx.limits.maxComputeWorkgroupStorageSize && (kt / 16) * MATRIX_SUBGROUP <= ctx.limits.maxComputeInvocationsPerWorkgroup,
  );
  if (KT === undefined) return undefined;
  const limit = ctx.limits.maxStorageBufferBindingSize;
  const nhc = G / 16;
  const bpr = { q: HQ * DK * esize(e), out: HQ * DV * 4, lse: HQ * 4, blocks: H * geo.nSel * 4 };
  const bpk = { k: H * DK * esize(e), v: H * DV * esize(e) };
  const plans = keyGroups(seqs, false, Math.max(bpk.k, bpk.v), limit, ROW_ALIGN).map((group) => {
    const items = queryItems(group.seqs, 1);
    return { group, items, chunks: chunkItems(items, Math.max(...Object.values(bpr)), limit, ROW_ALIGN, MAX_GRID) };
  });
  const pipeline = await rt.pipelineOf(`nsa_selected_forward_matrix${native ? '' : '_emulated'}`, { ...base, KT }, matrixSelectedShader);
  return (frame, buf) => {
    if (!buf.blocks) throw new Error('selected forward: no blocks buffer');
    for (const plan of plans) {
      const { keyLo: klo, keyHi: khi } = plan.group;
      const k = rowRange(buf.k, bpk.k, klo, khi);
      const v = rowRange(buf.v, bpk.v, klo, khi);
      const itemBuf = frame.upload(plan.items, 'selected items');
      for (const c of plan.chunks) {
        const r = (buffer: GPUBuffer, bytes: number) => rowRange(buffer, bytes, c.rowBase, c.rowEnd);
        frame.dispatch(
          pipeline,
          { ...baseParams(geo), keyRowBase: klo, rowBase: c.rowBase, itemBase: c.first },
          [itemBuf, r(buf.q, bpr.q), k, v, r(buf.out, bpr.out), r(buf.lse, bpr.lse), r(buf.blocks, bpr.blocks)],
          [c.count, H * nhc, 1],
        );
      }
    }
  };
}

/**
 * out (dtype) = Σ_b gate_b · merge_b, where merge_b merges the key splits of deferred branch b
 * (compressed, selected, window): one pass instead of three split merges and the gate pass.
 */
export async function prepareMergeBranches(
  rt: Runtime,
  geo: Geometry,
  splits: readonly [number, number, number],
): Promise<Encoder<{ part: GPUBuffer[]; stats: GPUBuffer[]; gates: GPUBuffer; out: GPUBuffer }>> {
  const { HQ, DV, e } = geo;
  const pipeline = await rt.pipelineOf('merge_branches', { e, DV, splits }, (p) => mergeBranchesShader(p.e, p.DV, p.splits));
  return (frame, buf) => {
    const bindings = [buf.part[0], buf.stats[0], buf.part[1], buf.stats[1], buf.part[2], buf.stats[2], buf.gates, buf.out];
    frame.dispatch(
      pipeline,
      { ...baseParams(geo), rowBase: 0, qRowLo: 0, qRowHi: geo.tokRows },
      bindings,
      [Math.min(geo.tokRows * HQ, MAX_GRID), Math.ceil((geo.tokRows * HQ) / MAX_GRID)],
    );
  };
}

/** Top-n block choice from the compression branch's lse: blocks [tokRows, H, n] int32. */
export async function prepareSelection(
  rt: Runtime,
  geo: Geometry,
  seqs: readonly Sequence[],
  /** The compression branch was deferred with this many splits: read its lse from their stats. */
  cmpSplits?: number,
  /** A training call: the fused pass may take its scores from subgroup matrices (see matrixMode). */
  training = false,
): Promise<Encoder<{ q: GPUBuffer; kCmp: GPUBuffer; lseCmp: GPUBuffer; blocks: GPUBuffer }> & { readonly twoPass: boolean }> {
  const { G, H, HQ, DK, e } = geo;
  const limit = rt.ctx.limits.maxStorageBufferBindingSize;
  let maxCandidates = 1;
  for (const s of seqs) if (s.nq > 0) maxCandidates = Math.max(maxCandidates, Math.floor((s.qPos + s.nq - 1) / geo.selBlock) + 1);
  const tiles = planSelectionTiles(rt.ctx, G, DK, geo.nSel, maxCandidates);
  const bpr = { q: HQ * DK * esize(e), lse: HQ * 4, blocks: H * geo.nSel * 4 };
  const bpk = H * DK * esize(e);
  const plans = keyGroups(seqs, true, bpk, limit, ROW_ALIGN).map((group) => {
    const items = queryItems(group.seqs, 1);
    return { group, items, chunks: chunkItems(items, Math.max(...Object.values(bpr)), limit, ROW_ALIGN, MAX_GRID) };
  });
  const kernel = {
    e,
    G,
    GC: tiles.GC,
    DK,
    CB: tiles.CB,
    WG: tiles.WG,
    NSMAX: tiles.NSMAX,
    nSel: geo.nSel,
    initialBlocks: geo.initialBlocks,
    localBlocks: geo.localBlocks,
    perCmp: geo.cmpBlock / geo.cmpStride,
    perSel: geo.selBlock / geo.cmpStride,
    subgroups: rt.ctx.subgroupTopN && rt.ctx.features.subgroups && rt.ctx.features.subgroupMinSize >= 4,
    batchLoads: rt.ctx.tiledKernel?.batchLoads ?? true,
  };
  // Few (token, KV head) workgroups (decoding): spread the compressed blocks over workgroups in a
  // scores pass that writes each block's group-summed probability, then choose in a second pass.
  let maxVisible = 0;
  for (const s of seqs) if (s.nq > 0) maxVisible = Math.max(maxVisible, keyHi('compressed', geo, s.qPos + s.nq - 1));
  const chunksPerRow = Math.ceil(maxVisible / tiles.CB);
  const impBytes = geo.tokRows * H * Math.max(1, maxVisible) * 4;
  const rowsTotal = plans.reduce((a, p) => a + itemCount(p.items), 0);
  const twoPass = plans.length === 1 && plans[0].chunks.length === 1 && rowsTotal * H < TARGET_WORKGROUPS && chunksPerRow > 1 && impBytes <= limit;
  const splits = twoPass ? Math.min(MAX_SPLITS, chunksPerRow, Math.ceil(TARGET_WORKGROUPS / Math.max(1, rowsTotal * H))) : 1;
  const perSplit = Math.ceil(chunksPerRow / splits);
  const fromStats = twoPass && cmpSplits !== undefined;
  // Fused (training calls): several tokens per workgroup where workgroup memory allows.
  const fused = twoPass ? undefined : planSelectionTiles(rt.ctx, G, DK, geo.nSel, maxCandidates, rt.ctx.selectionTokens);
  if (fused && fused.TQS > 1) {
    for (const plan of plans) {
      plan.items = queryItems(plan.group.seqs, fused.TQS);
      plan.chunks = chunkItems(plan.items, Math.max(...Object.values(bpr)), limit, ROW_ALIGN, MAX_GRID);
    }
  }
  const fusedKernel = fused && { ...kernel, GC: fused.GC, CB: fused.CB, WG: fused.WG, NSMAX: fused.NSMAX, TQS: fused.TQS, phase: 'fused' as const };
  const matrix = fusedKernel && training && rt.ctx.matrixSelection && selectionMatrixFits(fusedKernel) ? matrixMode(rt, e) : undefined;
  // Otherwise the wide tiles where they fit (same tokens per workgroup, so the same items).
  const wide = fusedKernel && !matrix ? planWideSelection(rt.ctx, fusedKernel) : undefined;
  const [pipeline, scoresPipeline, topnPipeline] = await Promise.all([
    fusedKernel
      ? wide
        ? rt.pipelineOf('nsa_selection_topn_wide', { ...fusedKernel, ...wide }, selectionShader)
        : rt.pipelineOf(`nsa_selection_topn${matrix ? `_matrix${matrix === 'emulated' ? '_emulated' : ''}` : ''}`, { ...fusedKernel, matrix, matrixPrefetch: matrix && (rt.ctx.matrixKernel?.selection ?? true) }, selectionShader)
      : undefined,
    twoPass ? rt.pipelineOf('nsa_selection_scores_split', { ...kernel, phase: 'scores' as const, lseFromSplits: fromStats }, selectionShader) : undefined,
    twoPass ? rt.pipelineOf('nsa_selection_topn_split', { ...kernel, phase: 'topn' as const }, selectionShader) : undefined,
  ]);
  const encode: Encoder<{ q: GPUBuffer; kCmp: GPUBuffer; lseCmp: GPUBuffer; blocks: GPUBuffer }> = (frame, buf) => {
    for (const plan of plans) {
      const kCmp = rowRange(buf.kCmp, bpk, plan.group.keyLo, plan.group.keyHi);
      const itemBuf = frame.upload(plan.items, 'selection items');
      if (scoresPipeline && topnPipeline) {
        const c = plan.chunks[0];
        const imp = frame.scratch(impBytes, 'selection block probabilities');
        const params = { ...baseParams(geo), rowBase: c.rowBase, itemBase: c.first, keyRowBase: plan.group.keyLo, impStride: Math.max(1, maxVisible), perSplit, splits: cmpSplits ?? 1 };
        const r = (buffer: GPUBuffer, bytes: number) => rowRange(buffer, bytes, c.rowBase, c.rowEnd);
        // From split stats: lseCmp is the compression branch's stats, bound whole (absolute rows).
        const lse = fromStats ? buf.lseCmp : r(buf.lseCmp, bpr.lse);
        frame.dispatch(scoresPipeline, params, [itemBuf, r(buf.q, bpr.q), kCmp, lse, imp], [c.count, H, splits]);
        frame.dispatch(topnPipeline, params, [itemBuf, imp, r(buf.blocks, bpr.blocks)], [c.count, H, 1]);
        continue;
      }
      for (const c of plan.chunks) {
        const r = (buffer: GPUBuffer, bytes: number) => rowRange(buffer, bytes, c.rowBase, c.rowEnd);
        frame.dispatch(
          pipeline!,
          { ...baseParams(geo), rowBase: c.rowBase, itemBase: c.first, keyRowBase: plan.group.keyLo },
          [itemBuf, r(buf.q, bpr.q), kCmp, r(buf.lseCmp, bpr.lse), r(buf.blocks, bpr.blocks)],
          [c.count, H, 1],
        );
      }
    }
  };
  return Object.assign(encode, { twoPass });
}

/** dq of one branch, added into `dq` [tokRows, HQ, DK] f32 when `accumulate`. */
export async function prepareBranchDq(
  rt: Runtime,
  geo: Geometry,
  mode: Mode,
  seqs: readonly Sequence[],
): Promise<
  Encoder<{ q: GPUBuffer; k: GPUBuffer; v: GPUBuffer; dOut: GPUBuffer; rowgd: GPUBuffer; lse: GPUBuffer; dq: GPUBuffer; blocks?: GPUBuffer; accumulate: boolean }>
> {
  const { G, H, HQ, DK, DV, e } = geo;
  const tiles = planQueryTiles(rt.ctx, 'dq', mode, G, DK, DV);
  const items = queryItems(seqs, tiles.TQB);
  const nhc = Math.ceil(G / tiles.GC);
  const bpr = { q: HQ * DK * esize(e), dOut: HQ * DV * esize(e), rowgd: HQ * 8, lse: HQ * 4, dq: HQ * DK * 4, blocks: H * geo.nSel * 4 };
  const chunks = chunkItems(items, Math.max(...Object.values(bpr)), rt.ctx.limits.maxStorageBufferBindingSize, ROW_ALIGN, MAX_GRID);
  const kernel = { kind: 'dq' as const, mode, e, G, GC: tiles.GC, TQB: tiles.TQB, DK, DV, KT: tiles.KT, WG: tiles.WG, split: false };
  const pipeline = await rt.pipeline(`nsa_${mode}_dq`, attentionShader(kernel));
  return (frame, buf) => {
    const itemBuf = frame.upload(items, `${mode} dq items`);
    for (const c of chunks) {
      const r = (buffer: GPUBuffer, bytes: number) => rowRange(buffer, bytes, c.rowBase, c.rowEnd);
      const bindings = [itemBuf, r(buf.q, bpr.q), buf.k, buf.v, r(buf.dOut, bpr.dOut), r(buf.rowgd, bpr.rowgd), r(buf.lse, bpr.lse), r(buf.dq, bpr.dq)];
      if (buf.blocks) bindings.push(r(buf.blocks, bpr.blocks));
      frame.dispatch(
        pipeline,
        { ...baseParams(geo), perSplit: geo.nSel, splits: 1, rowBase: c.rowBase, itemBase: c.first, accum: buf.accumulate ? 1 : 0 },
        bindings,
        [c.count, H * nhc, 1],
      );
    }
  };
}

/** dk, dv of one branch: [keyRows, H, DK|DV] f32, written whole. */
export async function prepareBranchDkDv(
  rt: Runtime,
  geo: Geometry,
  mode: Mode,
  seqs: readonly Sequence[],
): Promise<Encoder<{ q: GPUBuffer; k: GPUBuffer; v: GPUBuffer; dOut: GPUBuffer; rowgd: GPUBuffer; lse: GPUBuffer; dk: GPUBuffer; dv: GPUBuffer; blocks?: GPUBuffer }>> {
  const { G, H, HQ, DK, DV, e } = geo;
  const tiles = planKeyTiles(rt.ctx, G, DK, DV, mode === 'selected' ? geo.selBlock : 64);
  const items = keyItems(seqs, mode, tiles.KT, geo.selBlock);
  const n = itemCount(items);
  const bpr = { q: HQ * DK * esize(e), dOut: HQ * DV * esize(e), rowgd: HQ * 8, lse: HQ * 4, blocks: H * geo.nSel * 4 };
  const queryChunks = rt.rowChunks(geo.tokRows, Math.max(...Object.values(bpr)));
  const pipeline = await rt.pipeline(`nsa_${mode}_dkdv`, dkdvShader({ mode, e, G, GC: tiles.GC, TQB: tiles.TQB, DK, DV, KT: tiles.KT, WG: tiles.WG }));
  return (frame, buf) => {
    for (const [name, b] of [['keys', buf.k], ['values', buf.v], ['dk', buf.dk], ['dv', buf.dv]] as const) rt.checkWhole(`${mode} ${name}`, b.size);
    if (n === 0) return;
    const itemBuf = frame.upload(items, `${mode} dkdv items`);
    queryChunks.forEach(([lo, hi], ci) => {
      const r = (buffer: GPUBuffer, bytes: number) => rowRange(buffer, bytes, lo, hi);
      const bindings = [itemBuf, r(buf.q, bpr.q), buf.k, buf.v, r(buf.dOut, bpr.dOut), r(buf.rowgd, bpr.rowgd), r(buf.lse, bpr.lse), buf.dk, buf.dv];
      if (buf.blocks) bindings.push(r(buf.blocks, bpr.blocks));
      for (let first = 0; first < n; first += MAX_GRID) {
        frame.dispatch(
          pipeline,
          { ...baseParams(geo), rowBase: lo, qRowLo: lo, qRowHi: hi, itemBase: first, accum: ci > 0 ? 1 : 0 },
          bindings,
          [Math.min(MAX_GRID, n - first), H, 1],
        );
      }
    });
  };
}

/** out (dtype) = Σ gate_b O_b (three branches) or a cast of O (one). */
export async function prepareGateCombine(rt: Runtime, geo: Geometry, NB: 1 | 3): Promise<Encoder<{ o: GPUBuffer[]; gates?: GPUBuffer; out: GPUBuffer }>> {
  const { HQ, DV, e } = geo;
  const pipeline = await rt.pipelineOf(`gate_combine_${NB}`, { e, DV, NB }, (p) => gateCombineShader(p.e, p.DV, p.NB));
  const bpr = { o: HQ * DV * 4, gates: HQ * 3 * esize(e), out: HQ * DV * esize(e) };
  const chunks = rt.rowChunks(geo.tokRows, Math.max(...Object.values(bpr)));
  return (frame, buf) => {
    for (const [lo, hi] of chunks) {
      const r = (buffer: GPUBuffer, bytes: number) => rowRange(buffer, bytes, lo, hi);
      const bindings = [...buf.o.map((o) => r(o, bpr.o)), ...(buf.gates ? [r(buf.gates, bpr.gates)] : []), r(buf.out, bpr.out)];
      frame.dispatch(pipeline, { HQ, rowBase: lo, qRowLo: lo, qRowHi: hi }, bindings, Frame.grid1d((hi - lo) * HQ * DV, ELEMENTWISE_WG));
    }
  };
}

/** Per-branch (g, g * dO·O_b) rows and, with three branches, dGates. */
export async function prepareBackwardPrep(
  rt: Runtime,
  geo: Geometry,
  NB: 1 | 3,
): Promise<Encoder<{ dOut: GPUBuffer; o: GPUBuffer[]; gates?: GPUBuffer; rowgd: GPUBuffer[]; dGates?: GPUBuffer }>> {
  const { HQ, DV, e } = geo;
  const pipeline = await rt.pipeline(`backward_prep_${NB}`, backwardPrepShader(e, DV, NB));
  const bpr = { dOut: HQ * DV * esize(e), o: HQ * DV * 4, gates: HQ * 3 * esize(e), rowgd: HQ * 8 };
  const chunks = rt.rowChunks(geo.tokRows, Math.max(...Object.values(bpr)));
  return (frame, buf) => {
    for (const [lo, hi] of chunks) {
      const r = (buffer: GPUBuffer, bytes: number) => rowRange(buffer, bytes, lo, hi);
      const bindings = [
        r(buf.dOut, bpr.dOut),
        ...buf.o.map((o) => r(o, bpr.o)),
        ...(buf.gates ? [r(buf.gates, bpr.gates)] : []),
        ...buf.rowgd.map((g) => r(g, bpr.rowgd)),
        ...(buf.dGates ? [r(buf.dGates, bpr.gates)] : []),
      ];
      frame.dispatch(pipeline, { HQ, rowBase: lo, qRowLo: lo, qRowHi: hi }, bindings, Frame.grid1d((hi - lo) * HQ, ELEMENTWISE_WG));
    }
  };
}

/** float32 scratch -> the output dtype, in chunks under the binding limit. */
export async function prepareCast(rt: Runtime, e: ElementType): Promise<Encoder<{ src: GPUBuffer; out: GPUBuffer; count: number }>> {
  const pipeline = await rt.pipeline(`cast_${e}`, castShader(e));
  return (frame, buf) => {
    const limit = rt.ctx.limits.maxStorageBufferBindingSize;
    const step = Math.max(128, Math.floor(limit / 4 / 128) * 128);
    for (let first = 0; first < buf.count; first += step) {
      const count = Math.min(step, buf.count - first);
      frame.dispatch(
        pipeline,
        { nItems: count },
        [
          { buffer: buf.src, offset: first * 4, size: Math.ceil((count * 4) / 4) * 4 },
          { buffer: buf.out, offset: first * esize(e), size: Math.min(buf.out.size - first * esize(e), Math.ceil((count * esize(e)) / 4) * 4) },
        ],
        Frame.grid1d(count, ELEMENTWISE_WG),
      );
    }
  };
}
