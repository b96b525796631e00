// Tile shapes that fit the device's workgroup memory, and the work items (tiles of tokens of one
// sequence) that every kernel walks. Batches, varlen packs and decode queries all become the
// same list of sequences.
import { WebGPUError, type DeviceContext } from './device.js';
import { attentionSharedBytes } from './shaders/attention.js';
import { ITEM_WORDS, type Mode } from './shaders/common.js';
import { dkdvSharedBytes } from './shaders/dkdv.js';
import { selectionSharedBytes, wideSelectionBlocks, wideSelectionFits, wideSelectionSharedBytes, type SelectionKernel, type WideSelection } from './shaders/selection.js';
import { tiledShape, tiledSharedBytes } from './shaders/tiled-forward.js';

/** One sequence of the call: its queries, and where its keys live. */
export interface Sequence {
  /** Row of its first query in q (token rows: batch and time flattened). */
  readonly qRow: number;
  /** Queries. */
  readonly nq: number;
  /** Position of the first query inside the sequence (Tk - TQ when decoding). */
  readonly qPos: number;
  /** Row of position 0 in the raw key tensors. */
  readonly keyBase: number;
  /** Row of compressed block 0 in the compressed key tensors. */
  readonly cmpBase: number;
  /** Raw keys (positions 0..seqLen-1). */
  readonly seqLen: number;
  /** Compressed blocks. */
  readonly cmpLen: number;
  /**
   * Rows the key bindings may cover (raw, compressed): a decode cache binds its whole capacity,
   * so growing the context by a token changes no binding and a step's bind groups stay valid.
   */
  readonly bindRows?: { readonly raw: number; readonly cmp: number };
}

export interface QueryTiles {
  readonly GC: number;
  readonly TQB: number;
  readonly KT: number;
  readonly WG: number;
}

function workgroupSize(ctx: DeviceContext): number {
  return Math.min(128, ctx.limits.maxComputeInvocationsPerWorkgroup);
}

/** Heads per chunk x tokens per tile x keys per tile that fit in workgroup memory. */
export function planQueryTiles(ctx: DeviceContext, kind: 'forward' | 'dq', mode: Mode, G: number, DK: number, DV: number): QueryTiles {
  const limit = ctx.limits.maxComputeWorkgroupStorageSize;
  const WG = workgroupSize(ctx);
  let best: (QueryTiles & { score: number }) | undefined;
  for (const rows of [64, 32, 16, 8, 4, 2, 1]) {
    const GC = Math.min(G, rows);
    const TQB = mode === 'selected' ? 1 : Math.max(1, Math.floor(rows / GC));
    const R = GC * TQB;
    for (const KT of [64, 32, 16, 8, 4]) {
      if (attentionSharedBytes({ kind, G, GC, TQB, DK, DV, KT }) > limit) continue;
      // Reuse per loaded element: rows per key and keys per row, balanced.
      const score = (R * KT) / (R + KT) + (KT >= 16 ? 0.5 : 0);
      if (!best || score > best.score) best = { GC, TQB, KT, WG, score };
    }
  }
  if (!best) throw noFit(ctx, `attention ${kind}`, DK, DV);
  return { GC: best.GC, TQB: best.TQB, KT: best.KT, WG: best.WG };
}

export interface TiledForwardTiles {
  readonly GC: number;
  readonly TQB: number;
  readonly KT: number;
  readonly RM: number;
  readonly NKG: number;
  readonly WG: number;
  readonly batchLoads: boolean;
  readonly vecP: boolean;
  readonly prefetch: boolean;
}

/**
 * Tiles of the register-tiled forward: up to 32 rows (tokens x heads of a group) and 32 keys,
 * 2 rows x 4 keys of scores per invocation (8 invocations per row group; the selected branch: 1 row
 * x 1 key of 8-key tiles); undefined when nothing fits the device (the classic kernel is used then). Software adapters get 1 row per
 * invocation: SwiftShader takes over a minute to compile the 2 x 4 micro-tile (about 2 s for 1 x 4).
 * Compressed, window and dense causal tiles of calls with many queries per sequence (`maxQueries`)
 * first try 64 rows, 4 rows x 2 keys per invocation and 16-key tiles (see WIDE_TILES).
 */
export function planTiledForward(ctx: DeviceContext, mode: Mode, G: number, DK: number, DV: number, split = false, maxQueries = 0): TiledForwardTiles | undefined {
  const limit = ctx.limits.maxComputeWorkgroupStorageSize;
  const override = ctx.tileOverride?.[mode];
  // Selected tiles hold one token's heads (rows = G) and gather scattered blocks, so they wait on
  // memory: 1 row per invocation and 8-key tiles (less workgroup memory, more warps in flight) ran
  // that branch 3.1x faster on the H100 than 2 rows and 32 keys (BENCHMARKS.md, run 5). Decode
  // steps (`split`) have few workgroups: 16-key tiles were faster there (run 5c vs 5d). With the
  // batched tile loads, 2 rows per invocation ran the selected branch of training calls at G = 16 faster
  // (64k: 148 vs 194 ms, BENCHMARKS.md, helper wfwd in session 6); smaller groups and decode splits keep 1.
  const selected = mode === 'selected';
  const NKG = override?.NKG ?? 8;
  const batchLoads = ctx.tiledKernel?.batchLoads ?? true;
  const vecP = ctx.tiledKernel?.vecP ?? true;
  // Loading K/V one tile ahead (tiled-forward.ts) ran the dense causal forward 2% faster on the H100
  // (64k: 3738 vs 3814 ms) but the compressed branch 4% slower (249 vs 240 ms; selected and window
  // equal): BENCHMARKS.md, helper wpre in session 6. So it is the default for the dense kernel only.
  const prefetch = ctx.tiledKernel?.prefetch ?? mode === 'causal';
  const fit = (rows: number, RM: number, KTs: readonly number[]): TiledForwardTiles | undefined => {
    const GC = Math.min(G, rows);
    const TQB = selected ? 1 : Math.max(1, Math.floor(rows / GC));
    for (const KT of KTs) {
      const t = { GC, TQB, KT, RM, NKG, DK, DV, vecP };
      const { WG } = tiledShape(t);
      if (WG > ctx.limits.maxComputeInvocationsPerWorkgroup || tiledSharedBytes(t) > limit) continue;
      return { GC, TQB, KT, RM, NKG, WG, batchLoads, vecP, prefetch };
    }
    return undefined;
  };
  if (!override && !ctx.software && (mode === 'compressed' || mode === 'window' || mode === 'causal')) {
    const wide = fit(WIDE_TILES.rows, WIDE_TILES.RM, [WIDE_TILES.KT]);
    if (wide && wide.TQB <= maxQueries) return wide;
  }
  const RM = override?.RM ?? (ctx.software || (selected && (split || G < 16)) ? 1 : 2);
  for (const rows of override?.rows ? [override.rows] : [32, 16, 8]) {
    const tiles = fit(rows, RM, override?.KT ? [override.KT] : selected ? (split ? [16, 8] : [8]) : [32, 16, 8]);
    if (tiles) return tiles;
  }
  return undefined;
}

/**
 * Compressed, window and dense causal tiles: 64 rows (4 tokens x 16 heads at G = 16) read each K/V
 * tile from memory half as often as 32 rows; with 4 rows x 2 keys per invocation and 16-key tiles they
 * fit 48 KiB at D = 128. On the H100 (BENCHMARKS.md, session 6) against 32 rows of 2 x 4 and 32-key
 * tiles: compressed 279 -> 240 ms and window 72 -> 65 ms at 64k (helper wfwd), the dense forward
 * 4456 -> 3839 ms at 64k (lead, run L1); 32 rows of 4 x 4 (64 invocations) were slower (463 ms).
 */
const WIDE_TILES = { rows: 64, RM: 4, KT: 16 } as const;

export interface KeyTiles {
  readonly GC: number;
  readonly TQB: number;
  readonly KT: number;
  readonly WG: number;
}

export function planKeyTiles(ctx: DeviceContext, G: number, DK: number, DV: number, maxKT: number): KeyTiles {
  const limit = ctx.limits.maxComputeWorkgroupStorageSize;
  const WG = powerOfTwoBelow(workgroupSize(ctx));
  let best: (KeyTiles & { score: number }) | undefined;
  for (const rows of [32, 16, 8, 4, 2, 1]) {
    const GC = Math.min(G, rows);
    const TQB = Math.max(1, Math.floor(rows / GC));
    const R = GC * TQB;
    for (const KT of [32, 16, 8, 4]) {
      if (KT > maxKT && KT > 4) continue;
      if (dkdvSharedBytes({ G, GC, TQB, DK, DV, KT, WG }) > limit) continue;
      const score = (R * KT) / (R + KT);
      if (!best || score > best.score) best = { GC, TQB, KT, WG, score };
    }
  }
  if (!best) throw noFit(ctx, 'attention dk/dv', DK, DV);
  return { GC: best.GC, TQB: best.TQB, KT: best.KT, WG: best.WG };
}

export interface SelectionTiles {
  readonly GC: number;
  readonly CB: number;
  readonly WG: number;
  readonly NSMAX: number;
  /** Query tokens per workgroup. */
  readonly TQS: number;
}

/**
 * Selection needs one score per candidate block and token in workgroup memory: `maxCandidates` of
 * them. Up to `tokens` tokens share a workgroup where that fits, else one.
 */
export function planSelectionTiles(ctx: DeviceContext, G: number, DK: number, nSel: number, maxCandidates: number, tokens = 1): SelectionTiles {
  const limit = ctx.limits.maxComputeWorkgroupStorageSize;
  const WG = powerOfTwoBelow(workgroupSize(ctx));
  const NSMAX = Math.max(4, Math.ceil(maxCandidates / 4) * 4);
  for (const [GC, CB] of [
    [Math.min(G, 16), 32],
    [Math.min(G, 8), 16],
    [Math.min(G, 4), 8],
    [1, 4],
  ]) {
    for (const TQS of tokens > 1 ? [tokens, 1] : [1]) {
      const bytes = selectionSharedBytes({ G, GC, DK, CB, WG, NSMAX, nSel, initialBlocks: 0, localBlocks: 0, perCmp: 1, perSel: 1, TQS });
      if (bytes <= limit) return { GC, CB, WG, NSMAX, TQS };
    }
  }
  throw new WebGPUError(
    'limit',
    `selection scores need ${maxCandidates} candidate blocks in workgroup memory, more than this device's ` +
      `maxComputeWorkgroupStorageSize (${limit} bytes) holds with head dim ${DK}; use shorter sequences or a larger selectBlock`,
  );
}

/**
 * Wide tiles for a fused selection pass of these tiles (same tokens per workgroup), at G = 16 where
 * they fit workgroup memory (fewer key columns per stage first); undefined: the previous tiles.
 * Default 8 heads x 4 blocks per invocation (HG 2, JB 4: 128-block chunks) in stages of 8 vec4 columns.
 * H100, float32, 64k (helper wf32, session 7; each against the previous tiles in the same call): selection
 * 132.3 ms (previous 242.1; 4 heads x 8 blocks 136.6, ahead 130.8); before the side-by-side block map:
 * 139.0, 8 heads x 8 blocks 148.3, 4 x 8 141.9, 4 x 16 142.2, 4 x 4 176.7, 4-column stages 160.5 (243.8).
 * Software adapters take 8 x 2: SwiftShader did not finish compiling the 8 x 4 tile in 5 minutes (8 x 2: seconds).
 */
export function planWideSelection(
  ctx: DeviceContext,
  k: Pick<SelectionKernel, 'G' | 'GC' | 'DK' | 'WG' | 'NSMAX' | 'TQS' | 'nSel' | 'subgroups'>,
): { CB: number; wide: WideSelection } | undefined {
  const setting = ctx.selectionWide;
  if (setting === false) return undefined;
  const HG = setting.HG ?? 2;
  if (k.G !== 16 || !wideSelectionFits(k, HG)) return undefined;
  for (const DS of [setting.DS ?? 8, 4, 2]) {
    const wide = { JB: setting.JB ?? (ctx.software ? 2 : 4), DS, HG, ahead: setting.ahead ?? false };
    if (wideSelectionSharedBytes(k, wide) <= ctx.limits.maxComputeWorkgroupStorageSize) return { CB: wideSelectionBlocks(k, wide), wide };
  }
  return undefined;
}

function powerOfTwoBelow(n: number): number {
  return 2 ** Math.floor(Math.log2(n));
}

function noFit(ctx: DeviceContext, what: string, DK: number, DV: number): WebGPUError {
  return new WebGPUError(
    'limit',
    `${what}: head dims ${DK}/${DV} do not fit this device's maxComputeWorkgroupStorageSize (${ctx.limits.maxComputeWorkgroupStorageSize} bytes)`,
  );
}

/** Query tiles: TQB consecutive queries of one sequence per item. */
export function queryItems(seqs: readonly Sequence[], TQB: number): Uint32Array {
  const out: number[] = [];
  for (const s of seqs) {
    for (let i = 0; i < s.nq; i += TQB) {
      out.push(s.qRow + i, Math.min(TQB, s.nq - i), s.qPos + i, s.keyBase, s.cmpBase, s.seqLen, s.qRow, s.qPos);
    }
  }
  return Uint32Array.from(out);
}

/**
 * Key tiles for the key-centric backward: KT keys of one sequence per item (raw or compressed;
 * in selected mode never crossing a selection block).
 */
export function keyItems(seqs: readonly Sequence[], mode: Mode, KT: number, selBlock: number): Uint32Array {
  const out: number[] = [];
  for (const s of seqs) {
    const count = mode === 'compressed' ? s.cmpLen : s.seqLen;
    const base = mode === 'compressed' ? s.cmpBase : s.keyBase;
    const span = mode === 'selected' ? selBlock : count;
    for (let b0 = 0; b0 < count; b0 += span) {
      const bEnd = Math.min(count, b0 + span);
      for (let k0 = b0; k0 < bEnd; k0 += KT) {
        out.push(base + k0, Math.min(KT, bEnd - k0), k0, s.keyBase, s.cmpBase, s.qPos + s.nq, s.qRow, s.qPos);
      }
    }
  }
  return Uint32Array.from(out);
}

export function itemCount(items: Uint32Array): number {
  return items.length / ITEM_WORDS;
}

/**
 * Groups consecutive query items into dispatches whose query rows fit one binding of
 * `bytesPerRow` per token row and whose count fits one grid dimension.
 */
export function chunkItems(
  items: Uint32Array,
  bytesPerRow: number,
  maxBinding: number,
  rowAlign: number,
  maxGrid: number,
): { first: number; count: number; rowBase: number; rowEnd: number }[] {
  const n = itemCount(items);
  const chunks: { first: number; count: number; rowBase: number; rowEnd: number }[] = [];
  let i = 0;
  while (i < n) {
    const rowBase = Math.floor(items[i * ITEM_WORDS] / rowAlign) * rowAlign;
    let rowEnd = items[i * ITEM_WORDS] + items[i * ITEM_WORDS + 1];
    let j = i + 1;
    while (j < n && j - i < maxGrid) {
      const end = Math.max(rowEnd, items[j * ITEM_WORDS] + items[j * ITEM_WORDS + 1]);
      const start = Math.min(rowBase, Math.floor(items[j * ITEM_WORDS] / rowAlign) * rowAlign);
      if (start !== rowBase || (end - rowBase) * bytesPerRow > maxBinding) break;
      rowEnd = end;
      j++;
    }
    if ((rowEnd - rowBase) * bytesPerRow > maxBinding) {
      throw new WebGPUError('limit', `one tile's query rows (${(rowEnd - rowBase) * bytesPerRow} bytes) exceed maxStorageBufferBindingSize ${maxBinding}`);
    }
    chunks.push({ first: i, count: j - i, rowBase, rowEnd });
    i = j;
  }
  return chunks;
}

/** Sequences whose keys can be bound together, and the key rows [keyLo, keyHi) to bind. */
export interface KeyGroup {
  readonly seqs: Sequence[];
  readonly keyLo: number;
  readonly keyHi: number;
}

/**
 * Splits the sequences into groups whose key rows (raw, or compressed) fit one binding of
 * `bytesPerKeyRow` per row, so a long batch of caches never binds more than the device allows.
 */
export function keyGroups(seqs: readonly Sequence[], compressed: boolean, bytesPerKeyRow: number, maxBinding: number, rowAlign: number): KeyGroup[] {
  const used = (s: Sequence): [number, number] => (compressed ? [s.cmpBase, s.cmpBase + s.cmpLen] : [s.keyBase, s.keyBase + s.seqLen]);
  const span = (s: Sequence): [number, number] => {
    const [lo, hi] = used(s);
    if (!s.bindRows) return [lo, hi];
    // The whole capacity when it fits one binding; otherwise only the rows in use.
    const wide = lo + Math.max(hi - lo, compressed ? s.bindRows.cmp : s.bindRows.raw);
    return (wide - Math.floor(lo / rowAlign) * rowAlign) * bytesPerKeyRow <= maxBinding ? [lo, wide] : [lo, hi];
  };
  const groups: KeyGroup[] = [];
  let current: { seqs: Sequence[]; keyLo: number; keyHi: number } | undefined;
  for (const s of seqs) {
    const [lo, hi] = span(s);
    const aligned = Math.floor(lo / rowAlign) * rowAlign;
    if ((hi - aligned) * bytesPerKeyRow > maxBinding) {
      throw new WebGPUError(
        'limit',
        `one sequence's keys (${(hi - aligned) * bytesPerKeyRow} bytes) exceed maxStorageBufferBindingSize ${maxBinding}`,
      );
    }
    if (current && (Math.max(current.keyHi, hi) - current.keyLo) * bytesPerKeyRow <= maxBinding && lo >= current.keyLo) {
      current.seqs.push(s);
      current.keyHi = Math.max(current.keyHi, hi);
    } else {
      current = { seqs: [s], keyLo: aligned, keyHi: Math.max(hi, aligned + 1) };
      groups.push(current);
    }
  }
  return groups;
}
