// A one-query decode step (TQ = 1) in four dispatches: compressed and window chunks together,
// block choice, selected chunks, merge with the gates (shaders/decode-step.ts says why). Steps it
// cannot take (TQ > 1, head dims not multiples of 4, a cache over one binding, workgroup memory
// too small) return undefined and run the forward's decode passes instead, as does
// `ctx.singleQueryDecode = false` (the previous six passes, kept for comparison).
// The block choice is wide by default: several workgroups per KV head each write the best of their
// candidates, the selected attend's workgroups take the final top-n (ctx.decodeChoice = 'single',
// env NSA_WEBGPU_DECODE_CHOICE=single: one workgroup per KV head does it all). Where dispatch 1 has
// many chunks (64k), the block choice's dispatch also folds the compressed chunks' partials and runs
// the window's chunks (windowInChoice), so that dispatch 1 takes the compressed chunks only.
// `ctx.decodeFused` (NSA_WEBGPU_DECODE_FUSED=1; slower on the H100) makes the whole block choice in
// the selected attend's workgroups instead: three dispatches.
import { visibleCompressed } from '@nsa/core';
import type { Geometry } from './branch.js';
import type { WebGPUNSACache } from './decode.js';
import type { NSAForwardBuffers } from './nsa-forward.js';
import { MAX_GRID, type Frame, type Runtime } from './runtime.js';
import {
  attendSharedBytes,
  candidateGeometry,
  chunksPerBlock,
  decodeAttendShader,
  decodeMergeShader,
  decodeSelectShader,
  decodeSelectShaderPrevious,
  decodeChoiceWideShader,
  selectSharedBytes,
  splitPV,
  foldSharedBytes,
  wideChoiceSharedBytes,
  wideMergeSharedBytes,
  winChoiceExtraBytes,
  type DecodeStepShape,
} from './shaders/decode-step.js';
import { decodeAttendWideShader, wideAttendBytes, wideAttendShared, wideTile, winAliases, type WideAttendKernel } from './shaders/decode-wide.js';

/** Invocations of the attend and merge workgroups. */
const WG = 256;
/** Keys per attend chunk: the largest of these whose tiles fit workgroup memory. */
const CHUNK_KEYS = [32, 16, 8, 4];
/**
 * The wide block choice runs for at most this many (sequence, KV head) pairs: on the H100 it was
 * faster with 4 (B = 1), slower with 64 (B = 16; the single choice already fills the GPU there and
 * every selected attend workgroup pays for the final top-n).
 */
const WIDE_MAX_HEADS = 16;
/** Keys per compressed or window chunk of the wide attend (dispatch 1), likewise. */
const WIDE_KEYS = [64, 32, 16, 8, 4];
/**
 * Chunks over 32 keys only where they still give this many workgroups at the cache's capacity: on
 * the H100, 64-key chunks were slower with 48 workgroups (4k cache, batch 1) and faster with 96.
 */
const WIDE_MIN_GROUPS = 64;
/**
 * Column slices per row of the merge and its workgroup (mergeShape): on the H100 at 64k, batch 1, 2
 * slices of 128 invocations shortened the merge by ~0.5 us against one workgroup of 256 per row.
 */
const MERGE_COLS = 2;
const MERGE_WG = 128;
/**
 * The fold (NSA_WEBGPU_DECODE_FOLD) runs by default where dispatch 1 has at least this many chunks
 * per row at the cache's capacity: on the H100 it shortened the 64k step (72 chunks) and lengthened
 * the 4k and 16k steps (16 and 24 chunks), whose block choice is done sooner than the fold.
 */
const FOLD_MIN_CHUNKS = 48;

/**
 * NSA_WEBGPU_DECODE_CHAIN=session9: dispatches 2-4 as in session 9 (the selected attend's statistics
 * by a scan, one merge workgroup of wg invocations per row, no fold).
 */
function session9Chain(): boolean {
  return envOf('NSA_WEBGPU_DECODE_CHAIN') === 'session9';
}

/**
 * NSA_WEBGPU_DECODE_STEP=previous: the kernels of run 9 (block choice with a barrier per top-n round
 * and serial forced blocks and sort; merge through workgroup-memory trees; attend passes without
 * register tiles).
 */
function previousKernels(): boolean {
  return envOf('NSA_WEBGPU_DECODE_STEP') === 'previous';
}

/**
 * NSA_WEBGPU_DECODE_ATTEND=session7: dispatch 1 on session 7's kernel (chunks of KC keys, both
 * tiles in workgroup memory) and the merge without its partials loaded ahead.
 */
function session7Kernels(): boolean {
  return previousKernels() || envOf('NSA_WEBGPU_DECODE_ATTEND') === 'session7';
}

/**
 * NSA_WEBGPU_DECODE_CHOICE_KERNEL: session 8's wide block choice kernels, 'session8' both, 'choice8'
 * the block choice's (workgroup-memory reductions), 'attend8' the selected attend's final top-n (lists
 * loaded after the queries, blocks sorted before the gathers), 'unrolled' the default's but with the
 * final top-n's binary-search steps unrolled. Default: the subgroup block choice (where the adapter has
 * subgroups) and the selected attend's places in ranking order, its search steps in a loop.
 */
function choiceKernels(): { sub: boolean; slots: boolean; searchLoop: boolean } {
  const v = envOf('NSA_WEBGPU_DECODE_CHOICE_KERNEL');
  return { sub: v !== 'session8' && v !== 'choice8', slots: v !== 'session8' && v !== 'attend8', searchLoop: v !== 'unrolled' };
}

/**
 * NSA_WEBGPU_DECODE_CW_HEADS: heads per register tile of dispatch 1's scores (2: the previous 2 x 1 tiles;
 * default: wideTile's, 4 at G = 16 with 64-key chunks). ctx.decodeTiles.cw.rh wins over it.
 */
function cwScoreHeads(): number | undefined {
  return Number(envOf('NSA_WEBGPU_DECODE_CW_HEADS')) || undefined;
}

/**
 * NSA_WEBGPU_DECODE_MERGE_COLS: column slices per output row of the merge (1 with
 * NSA_WEBGPU_DECODE_MERGE_WG=256: one workgroup per row, the previous merge), NSA_WEBGPU_DECODE_MERGE_WG
 * its workgroup (a power of two, 64 to wg).
 */
function mergeShape(wg: number, DV: number): { cols: number; WG: number } {
  if (session9Chain()) return { cols: 1, WG: wg };
  const cols = Number(envOf('NSA_WEBGPU_DECODE_MERGE_COLS') ?? MERGE_COLS) || 1;
  const mwg = Number(envOf('NSA_WEBGPU_DECODE_MERGE_WG')) || MERGE_WG;
  const ok = cols >= 1 && (DV / 4) % cols === 0;
  return { cols: ok ? cols : 1, WG: Math.min(wg, 2 ** Math.floor(Math.log2(Math.max(64, mwg)))) };
}

// NSA_WEBGPU_DECODE_CHOICE_RANK=loop: the subgroup block choice's rank comparisons in a loop (an experiment).
// NSA_WEBGPU_DECODE_SLC_UNROLL=n: the selected attend's score and P·V steps in loops of n steps (an
// experiment: less code for each multiprocessor to fetch; default fully unrolled).
// NSA_WEBGPU_DECODE_SLC_STATS=scan: the selected attend's softmax statistics by the previous scan
// (a barrier, then one invocation per head over the chunk) instead of subgroup shuffles.

/**
 * Dispatch 1's chunk loop: where B·H <= WIDE_MAX_HEADS, at most this many workgroups in all, each
 * taking every n-th chunk of its KV head (n = CW_LOOP_GROUPS / (B·H) workgroups a KV head). On the
 * H100 a 64-key chunk keeps an SM busy about as long whether its workgroup shares the SM or not
 * (wdec10a, 64k B = 1, dispatch 1 alone in a pass: 132 of the 288 workgroups 17.5 us, 176 or 220
 * 24 us, all 30.6 us), so workgroups that take chunks in turn lose nothing and load their queries
 * once (with the register P·V: 26.6 against 27.7 us; 33 a KV head 26.5, 36 or 18 slower).
 */
const CW_LOOP_GROUPS = 128;

/**
 * NSA_WEBGPU_DECODE_CW_KERNEL: dispatch 1's wide kernel. Unset: the register P·V (WideAttendKernel.regPV,
 * where its layout fits) and the chunk loop (CW_LOOP_GROUPS). 'session9': session 9's kernel (neither).
 * Otherwise a comma list that replaces the defaults, for experiments: 'regpv', 'loop:N' (N workgroups a
 * KV head).
 */
function cwKernel(BH: number): { regPV: boolean; loop?: number } {
  const env = envOf('NSA_WEBGPU_DECODE_CW_KERNEL');
  if (env === undefined || env === '') return { regPV: true, loop: BH <= WIDE_MAX_HEADS ? Math.max(1, Math.floor(CW_LOOP_GROUPS / BH)) : undefined };
  const v = env.split(',');
  const loop = Number(v.find((x) => x.startsWith('loop:'))?.slice(5));
  return { regPV: v.includes('regpv'), loop: loop > 0 ? loop : undefined };
}

/**
 * NSA_WEBGPU_DECODE_CW_SCORES=tile: dispatch 1's scores from the key tile in workgroup memory (the
 * previous kernel). Default: from the keys' registers (WideAttendKernel.regScores) where the adapter
 * has one subgroup size (min = max) and the register P·V runs, 8 lanes a key row;
 * NSA_WEBGPU_DECODE_CW_SCORES=reg:N: N lanes a key row (an experiment). size 0 = the tile.
 * H100, 64k B = 1, one decode-ab call, rounds alternating (slow-clock state): dispatch 1 46.0 us with
 * 8 lanes a row against the tile's 47.2 (16 lanes 47.2, 4 49.6, 32 51.8), the step 0.0832 against
 * 0.0840 ms; in a full-clock call 32 lanes took 28.9 against 27.2 us (124 shuffles a lane a chunk).
 */
function cwRegScores(ctx: Runtime['ctx']): { size: number; lanes: number } {
  const f = ctx.features;
  const env = envOf('NSA_WEBGPU_DECODE_CW_SCORES') ?? '';
  const one = f.subgroups && f.subgroupMinSize >= 4 && f.subgroupMinSize === f.subgroupMaxSize;
  const lanes = Number(env.startsWith('reg:') ? env.slice(4) : 8) || 8;
  return { size: env !== 'tile' && one ? f.subgroupMinSize : 0, lanes };
}

/**
 * Where the window's chunks run. By default wherever the fold runs (so at 64k, B = 1, not at 4k or
 * 16k): in workgroups of the block choice's dispatch (WideChoice.win), beside the block choice and the
 * fold, where their tiles fit; dispatch 1 then takes the compressed chunks only (at 64k, B = 1: 2 each
 * for its 128 workgroups, not up to 3), and the selected attend's extra workgroup of each KV head
 * folds the window chunks' partials (its winFold), so that the merge reads NS + 2 splits as with the
 * fold alone. On the H100 at 64k, B = 1 (session 16, bench/run.mjs in alternating processes):
 * 0.044-0.045 ms a step against 0.045-0.048 with the window in dispatch 1.
 * NSA_WEBGPU_DECODE_WIN: 'cw', the window in dispatch 1 always; 'choice', in the block choice's
 * dispatch with the merge reading its chunks' partials (no faster); ':N' after 'choice' or
 * 'choice-fold' (the default's name), window chunks of N keys (a power of two up to dispatch 1's; 32
 * and 16 were slower). NSA_WEBGPU_DECODE_WIN_KERNEL (an experiment): the window chunks' kernel there
 * without the register scores ('regpv') or without either register path ('tile'); default: dispatch 1's.
 */
function windowInChoice(KCW: number): { keys: number; slcFold: boolean; regPV?: boolean; regScores?: boolean } | undefined {
  const v = envOf('NSA_WEBGPU_DECODE_WIN') ?? '';
  const m = /^choice(-fold)?(?::(\d+))?$/.exec(v);
  if (!m && v !== '') return undefined;
  const n = Number(m?.[2]);
  const kernel = envOf('NSA_WEBGPU_DECODE_WIN_KERNEL');
  return {
    keys: n >= 4 && n <= KCW && (n & (n - 1)) === 0 ? n : KCW,
    slcFold: v === '' || m?.[1] !== undefined,
    ...(kernel === 'tile' ? { regPV: false, regScores: false } : kernel === 'regpv' ? { regScores: false } : {}),
  };
}

/** NSA_WEBGPU_DECODE_CHOICE_WG: the block choice's workgroup size (an experiment; ctx.decodeTiles.selectWG wins). */
function choiceWg(): number | undefined {
  return Number(envOf('NSA_WEBGPU_DECODE_CHOICE_WG')) || undefined;
}

function envOf(name: string): string | undefined {
  return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];
}

export type DecodeStepEncoder = (frame: Frame, buf: NSAForwardBuffers) => void;

export async function prepareDecodeStep(rt: Runtime, geo: Geometry, cache: WebGPUNSACache, TQ: number, given: boolean): Promise<DecodeStepEncoder | undefined> {
  const { ctx } = rt;
  const { H, G, HQ, DK, DV, e } = geo;
  const B = cache.batch;
  const pos = cache.length - 1;
  if (!ctx.singleQueryDecode || TQ !== 1 || pos < 0 || DK % 4 !== 0 || DV % 4 !== 0) return undefined;
  const limits = ctx.limits;
  // Powers of two: the merge and the top-n tree halve their workgroup.
  const pow2 = (n: number) => 2 ** Math.floor(Math.log2(n));
  const wg = pow2(Math.min(WG, limits.maxComputeInvocationsPerWorkgroup, ctx.device.limits.maxComputeWorkgroupSizeX));
  if (wg < 64 || G > wg || DV / 4 > wg || limits.maxStorageBuffersPerShaderStage < 8) return undefined;
  const CAP = cache.capacity;
  const blocks = { compressBlock: geo.cmpBlock, compressStride: geo.cmpStride };
  const CCAP = Math.max(1, cache.compressedCapacity);
  const last = CAP - 1;
  // Candidate blocks at capacity, rounded up to a power of two so few shapes compile.
  const NSMAX = 2 ** Math.ceil(Math.log2(Math.max(wg, Math.floor(last / geo.selBlock) + 1)));
  // The block choice has one workgroup per (sequence, KV head): as many invocations as allowed.
  const selWg = pow2(Math.min(ctx.decodeTiles?.selectWG ?? choiceWg() ?? 512, limits.maxComputeInvocationsPerWorkgroup, ctx.device.limits.maxComputeWorkgroupSizeX));
  const subgroups = ctx.subgroupTopN && ctx.features.subgroups && ctx.features.subgroupMinSize >= 4;
  const previous = previousKernels();
  const minSg = subgroups ? ctx.features.subgroupMinSize : 0;
  // Attend workgroups: NSA_WEBGPU_DECODE_ATTEND_WG (an experiment; a power of two from 64 to wg) or wg.
  const attendWg = previous ? wg : Math.min(wg, pow2(Math.max(64, Number(envOf('NSA_WEBGPU_DECODE_ATTEND_WG') ?? wg) || wg)));
  // Dispatch 1 on wide chunks (shaders/decode-wide.ts): the most keys whose workgroup memory fits
  // and (unless ctx.decodeTiles.cw.KC caps them) that leave enough workgroups.
  const cwTiles = ctx.decodeTiles?.cw ?? {};
  const cwGroups = (kc: number) => B * H * (Math.ceil(visibleCompressed(CAP - 1, blocks) / kc) + Math.ceil(Math.min(geo.window, CAP) / kc));
  // (Its workgroup may exceed the others' 256 invocations where the device allows: ctx.decodeTiles.cw.WG.)
  const cwWg = pow2(Math.min(Math.max(64, cwTiles.WG ?? wg), limits.maxComputeInvocationsPerWorkgroup, ctx.device.limits.maxComputeWorkgroupSizeX));
  const wideCw = session7Kernels()
    ? undefined
    : WIDE_KEYS.filter((kc) => (cwTiles.KC === undefined ? kc <= 32 || cwGroups(kc) >= WIDE_MIN_GROUPS : kc <= cwTiles.KC))
        .map((kc) => ({ kc, fit: wideAttendShared({ G, DK, DV, KCW: kc, WG: cwWg }, limits.maxComputeWorkgroupStorageSize) }))
        .find(({ fit }) => fit !== undefined);
  const attendFits = (kc: number) => kc <= (ctx.decodeTiles?.KC ?? Infinity) && attendSharedBytes({ G, DK, DV, KC: kc }) <= limits.maxComputeWorkgroupStorageSize;
  // The fused block choice (ctx.decodeFused) runs in the selected attend's workgroups, so both
  // kernels' workgroup memory must fit together: the largest chunk where it does, with candidate
  // sums where they fit too. Its lse merge takes the block choice kernel's lanes (same blocks).
  const lanes = Math.min(64, Math.max(1, Math.floor(selWg / G)));
  const fusedBytes = (kc: number, cand: boolean) =>
    attendSharedBytes({ G, DK, DV, KC: kc }) + 4 * G + 4 * geo.nSel + selectSharedBytes({ G, WG: attendWg, NSMAX, nSel: geo.nSel, lanes }, minSg, cand ? Math.ceil(CCAP / (wideCw?.kc ?? kc)) : 0);
  const fusedKC = ctx.decodeFused && !given && !previous ? CHUNK_KEYS.find((kc) => attendFits(kc) && fusedBytes(kc, false) <= limits.maxComputeWorkgroupStorageSize) : undefined;
  const fused = fusedKC !== undefined;
  const KC = fusedKC ?? CHUNK_KEYS.find(attendFits);
  if (KC === undefined) return undefined;
  const KCW = wideCw?.kc ?? KC;
  const shape: DecodeStepShape = {
    e,
    B,
    H,
    G,
    DK,
    DV,
    KC,
    KCW,
    CAP,
    CCAP,
    window: geo.window,
    cmpBlock: geo.cmpBlock,
    cmpStride: geo.cmpStride,
    selBlock: geo.selBlock,
    nSel: geo.nSel,
  };
  // Splits at the cache's capacity, so the scratch buffers and bind groups stay the same as it fills.
  const NS = geo.nSel * chunksPerBlock(shape);
  // (Window chunks of KWIN keys where they run in the block choice's dispatch: windowInChoice.)
  const winAsked = wideCw ? windowInChoice(KCW) : undefined;
  const KWIN = winAsked?.keys ?? KCW;
  const SMAX = NS + Math.ceil(visibleCompressed(last, blocks) / KCW) + Math.ceil(Math.min(geo.window, CAP) / KWIN);
  const rows = B * HQ;
  const es = e === 'f16' ? 2 : 4;
  const { NJ, NCH } = candidateGeometry(shape);
  const bytes = {
    raw: B * CAP * H * Math.max(DK, DV) * es,
    cmp: B * CCAP * H * Math.max(DK, DV) * es,
    part: SMAX * rows * DV * 4,
    // Raw compressed scores, or the candidate sums [rows, NCH, NJ].
    scores: rows * Math.max(CCAP, NCH * NJ) * 4,
  };
  if (Object.values(bytes).some((n) => n > limits.maxStorageBufferBindingSize) || rows > MAX_GRID || B * H > MAX_GRID) return undefined;
  const selSharedOf = (chunks: number) => selectSharedBytes({ G, WG: selWg, NSMAX, nSel: geo.nSel }, minSg, chunks);
  // The block choice scores candidates from the attend pass's candidate sums when their factor
  // table fits workgroup memory (else from the raw compressed scores, as the previous kernels).
  const cand = fused ? fusedBytes(KC, true) <= limits.maxComputeWorkgroupStorageSize : !previous && selSharedOf(NCH) <= limits.maxComputeWorkgroupStorageSize;
  const selShared = previous ? 4 * (selWg + G + NSMAX + 4 * selWg + geo.nSel + 1) : selSharedOf(cand ? NCH : 0);
  // (The fused kernel's own fit was checked with its chunk above.)
  if ((!fused && selShared > limits.maxComputeWorkgroupStorageSize) || SMAX * 4 + 48 * wg > limits.maxComputeWorkgroupStorageSize) return undefined;
  const selParams = { ...shape, WG: selWg, NSMAX, initialBlocks: geo.initialBlocks, localBlocks: geo.localBlocks, subgroups };
  // The wide block choice (ctx.decodeChoice): CPW candidates per workgroup (a power of two, at
  // least nSel so that each workgroup's list fills), the fewest that fit both kernels' workgroup memory
  // with at most 32 lists per KV head (the selected attend searches each list).
  const nCandCap = Math.floor(last / geo.selBlock) + 1;
  // 128 by default (on the H100 at 64k, B = 1: 8 lists a KV head; 64, session 8's count, gave a
  // faster block choice but a slower final top-n, 0.0532 against 0.0525 ms a step); env
  // NSA_WEBGPU_DECODE_CHOICE_CANDS: another count, for experiments such as bench/run.mjs's.
  const kernels = choiceKernels();
  const cands = ctx.decodeTiles?.choiceCands ?? (Number(envOf('NSA_WEBGPU_DECODE_CHOICE_CANDS')) || (kernels.sub || kernels.slots ? 128 : 64));
  const cpw0 = 2 ** Math.ceil(Math.log2(Math.max(cands, geo.nSel)));
  const wideChoice =
    ctx.decodeChoice === 'wide' && B * H <= WIDE_MAX_HEADS && !given && !fused && !previous && cand
      ? [1, 2, 4, 8, 16]
          .map((f) => ({
            CPW: f * cpw0,
            PMAX: Math.ceil(nCandCap / (f * cpw0)),
            slots: kernels.slots,
            sub: kernels.sub && subgroups ? minSg : 0,
            searchLoop: kernels.searchLoop,
            rankLoop: envOf('NSA_WEBGPU_DECODE_CHOICE_RANK') === 'loop',
          }))
          .find(
            (w) =>
              w.PMAX <= 32 &&
              wideChoiceSharedBytes({ G, WG: selWg, lanes, CPW: w.CPW, NCJ: candidateGeometry(shape).NCJ }) <= limits.maxComputeWorkgroupStorageSize &&
              attendSharedBytes({ G, DK, DV, KC }) + 4 * geo.nSel + wideMergeSharedBytes({ nSel: geo.nSel, PMAX: w.PMAX }) <= limits.maxComputeWorkgroupStorageSize,
          )
      : undefined;
  // ctx.decodeSplit (opt-in): the compressed values' P·V leaves dispatch 1 for extra workgroups of the wide
  // block choice's (which waits for dispatch 1 anyway), where its partial tiles fit too.
  const split =
    ctx.decodeSplit &&
    wideChoice !== undefined &&
    wideCw !== undefined &&
    wideChoiceSharedBytes({ G, WG: selWg, lanes, CPW: wideChoice.CPW, NCJ: candidateGeometry(shape).NCJ }) + splitPV({ G, DV, KCW, WG: selWg }).bytes <= limits.maxComputeWorkgroupStorageSize;
  // The fold: G more workgroups of the (subgroup) block choice's dispatch fold each row's compressed
  // and window chunk partials into one split each, so the merge reads NS + 2 splits. By default where
  // dispatch 1 has FOLD_MIN_CHUNKS chunks a row at capacity; NSA_WEBGPU_DECODE_FOLD=1 wherever it can,
  // =0 never.
  const foldEnv = envOf('NSA_WEBGPU_DECODE_FOLD');
  const fold =
    (foldEnv === '1' || (foldEnv !== '0' && !session9Chain() && SMAX - NS >= FOLD_MIN_CHUNKS)) &&
    wideChoice !== undefined &&
    !!wideChoice.sub &&
    !split &&
    wideChoice.CPW <= selWg &&
    wideChoiceSharedBytes({ G, WG: selWg, lanes, CPW: wideChoice.CPW, NCJ: candidateGeometry(shape).NCJ }) + foldSharedBytes({ WG: selWg, SMAX, NS }) <= limits.maxComputeWorkgroupStorageSize;
  const cwKind = cwKernel(B * H);
  const cwScores = cwRegScores(ctx);
  // The window's chunks in the block choice's dispatch (windowInChoice): dispatch 1's kernel at the
  // block choice's workgroup size, its tiles shared with the block choice's and the fold's arrays.
  // (Its fit: the attend's tiles with the values apart or in the keys' tile, plus what the block
  // choice's and the fold's arrays add beyond what those tiles hold.)
  const winFit = (shared: boolean) =>
    wideChoice !== undefined &&
    wideAttendBytes({ G, DK, DV, KCW: KWIN, WG: selWg }, shared) +
      winChoiceExtraBytes({ WG: selWg, minSubgroup: minSg, CPW: wideChoice.CPW, foldSplits: SMAX - NS }, winAliases({ G, DK, DV, KCW: KWIN, WG: selWg, shared }, wideChoice.CPW, SMAX - NS)) <=
      limits.maxComputeWorkgroupStorageSize;
  // (The values apart where that fits, as dispatch 1's.)
  const winShared = fold && wideCw && wideChoice && !split ? (winFit(false) ? { shared: false } : winFit(true) ? { shared: true } : undefined) : undefined;
  const win: WideAttendKernel | undefined =
    winAsked && winShared && wideChoice
      ? {
          ...shape,
          KCW: KWIN,
          WG: selWg,
          cand,
          shared: winShared.shared,
          tile: wideTile(G, KWIN, DV, { rh: cwScoreHeads(), ...cwTiles }, selWg),
          regPV: cwKind.regPV && winAsked.regPV !== false,
          regScores: cwKind.regPV && winAsked.regPV !== false && winAsked.regScores !== false ? cwScores.size : 0,
          regScoreLanes: cwScores.lanes,
        }
      : undefined;
  const wide = wideChoice && { ...wideChoice, fold: fold ? SMAX : 0, ...(win ? { win } : {}) };
  // (choice-fold: the selected attend's extra workgroup folds the window chunks; it needs the slots.)
  const winFold = win && winAsked?.slcFold && wideChoice?.slots ? { SMAX, KWIN } : undefined;

  // (The fold's two splits of each row follow dispatch 1's.)
  const splits = SMAX + (fold ? 2 : 0);
  const mergeOf = previous || session7Kernels() ? { cols: 1, WG: wg } : mergeShape(wg, DV);
  // (The chunk loop: at most this many workgroups per KV head, each taking every cwLoop-th chunk.)
  const cwLoop = wideCw ? cwKind.loop : undefined;
  const [attendCw, select, attendSlc, merge] = await Promise.all([
    wideCw
      ? rt.pipelineOf(
          'nsa_decode_attend_cw',
          {
            ...shape,
            KCW,
            WG: cwWg,
            cand,
            split,
            shared: wideCw.fit!.shared || cwTiles.shared === true,
            tile: wideTile(G, KCW, DV, { rh: cwScoreHeads(), ...cwTiles }, cwWg),
            regPV: cwKind.regPV,
            loop: cwLoop,
            regScores: cwKind.regPV ? cwScores.size : 0,
            regScoreLanes: cwScores.lanes,
            ...(win ? { noWindow: true } : {}),
          },
          decodeAttendWideShader,
        )
      : rt.pipelineOf('nsa_decode_attend_cw', { ...shape, phase: 'cw' as const, WG: attendWg, tiled: !previous, cand }, decodeAttendShader),
    given || fused
      ? undefined
      : previous
        ? rt.pipelineOf('nsa_decode_select', selParams, decodeSelectShaderPrevious)
        : wideChoice
          ? rt.pipelineOf('nsa_decode_choice_wide', { ...selParams, subgroups: false, minSubgroup: 0, cand, wide: wide!, split }, decodeChoiceWideShader)
          : rt.pipelineOf('nsa_decode_select', { ...selParams, minSubgroup: ctx.features.subgroupMinSize, cand }, decodeSelectShader),
    rt.pipelineOf(
      'nsa_decode_attend_slc',
      {
        ...shape,
        phase: 'slc' as const,
        WG: attendWg,
        tiled: !previous,
        sgStats: subgroups && !previous && !session9Chain() && envOf('NSA_WEBGPU_DECODE_SLC_STATS') !== 'scan' ? minSg : 0,
        unroll: Number(envOf('NSA_WEBGPU_DECODE_SLC_UNROLL')) || undefined,
        ...(fused ? { choice: { NSMAX, initialBlocks: geo.initialBlocks, localBlocks: geo.localBlocks, subgroups, minSubgroup: ctx.features.subgroupMinSize, cand, lanes } } : {}),
        ...(wideChoice ? { choice: { NSMAX, initialBlocks: geo.initialBlocks, localBlocks: geo.localBlocks, subgroups: false, minSubgroup: 0, cand, wide: wideChoice } } : {}),
        ...(winFold ? { winFold } : {}),
      },
      decodeAttendShader,
    ),
    rt.pipelineOf('nsa_decode_merge', { ...shape, ...mergeOf, SMAX, fold, subgroups: subgroups && !previous, ahead: !session7Kernels(), ...(win && !winFold ? { win: KWIN } : {}) }, decodeMergeShader),
  ]);
  const winChunks = Math.ceil((pos + 1 - Math.max(0, pos + 1 - geo.window)) / (win ? KWIN : KCW));
  // (win: dispatch 1 takes the compressed chunks only, the block choice's dispatch the window's.)
  const chunks = Math.ceil(visibleCompressed(pos, blocks) / KCW) + (win ? 0 : winChunks);
  const params = { H, HQ, tokRows: B, scale: geo.scale, qRowLo: pos };
  // Wide block-choice workgroups per KV head: the candidates up to the query's block.
  const nP = wideChoice ? Math.ceil((Math.floor(pos / geo.selBlock) + 1) / wideChoice.CPW) : 0;
  // With split, then one workgroup per compressed chunk (its P·V).
  const nPV = split ? Math.ceil(visibleCompressed(pos, blocks) / KCW) : 0;
  return (frame, buf) => {
    const part = frame.scratch((bytes.part / SMAX) * splits, 'decode split partials');
    const stats = frame.scratch(splits * rows * 2 * 4, 'decode split stats');
    const scores = frame.scratch(bytes.scores, 'decode compressed scores');
    // Split: the compressed chunks' probabilities [rows, CCAP] (dispatch 1 writes, the block choice's P·V reads).
    const probs = split ? frame.scratch(rows * CCAP * 4, 'decode compressed probabilities') : undefined;
    frame.dispatch(attendCw, params, [buf.q, buf.kCmp, probs ?? buf.vCmp, buf.kWin, buf.vWin, part, stats, scores], [Math.min(chunks, cwLoop ?? Infinity), B * H]);
    // The wide block choice's lists [B * H, PMAX, nSel] of (score, index).
    const lists = wideChoice && frame.scratch(B * H * wideChoice.PMAX * geo.nSel * 8, 'decode block lists');
    if (buf.given) frame.copy(buf.given, 0, buf.blocks, 0, Math.min(buf.given.size, buf.blocks.size));
    else if (select && lists)
      frame.dispatch(
        select,
        params,
        probs ? [stats, scores, lists, probs, buf.vCmp, part] : win ? [stats, scores, lists, part, buf.q, buf.kWin, buf.vWin] : fold ? [stats, scores, lists, part] : [stats, scores, lists],
        [nP + nPV + (fold ? G : 0) + (win ? winChunks : 0), B * H],
      );
    else if (select) frame.dispatch(select, params, [stats, scores, buf.blocks], [B * H]);
    const slcIn = [buf.q, buf.kSlc, buf.vSlc, buf.blocks, part, stats];
    // (With the wide choice's slots, one more workgroup per KV head writes the sorted blocks.)
    frame.dispatch(attendSlc, params, fused ? [...slcIn, scores] : lists ? [...slcIn, lists] : slcIn, [NS + (wideChoice?.slots ? 1 : 0), B * H]);
    frame.dispatch(merge, params, [part, stats, buf.gates, buf.out], [rows, mergeOf.cols]);
  };
}
