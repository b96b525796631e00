// The kernels of a one-query decode step (NSA-SPEC.md, Decoding): four dispatches.
//
//   1. attend 'cw'   one workgroup per (sequence, KV head, chunk of KCW keys: decode-wide.ts) over
//                    the compressed keys and the window together (they do not depend on the selection); writes
//                    each chunk's unnormalised partial output and (max, sum), and the raw
//                    compressed scores, which the selection needs.
//   2. select        one workgroup per (sequence, KV head): each head's compression lse from the
//                    chunk stats, the selection blocks' scores from the stored raw scores, top-n.
//                    Wide (default): several workgroups per (sequence, KV head), each scoring a
//                    range of candidates and listing its best (decodeChoiceWideShader). With
//                    `split` (opt-in) more workgroups do the compressed chunks' P·V, whose
//                    values dispatch 1 then skips (it writes their probabilities instead).
//   3. attend 'slc'  one workgroup per (sequence, KV head, chunk of a selected block). With the
//                    wide choice each first takes the final top-n from the lists (blockChoiceMerge).
//                    With `choice` alone (opt-in, slower) each makes its head's whole block choice
//                    with the code of 2 (blockChoice), and dispatch 2 goes.
//   4. merge         one workgroup per output row: every chunk of the three branches, the gates.
//
// A decode step is latency-bound (a 64k step reads ~11 MB): every workgroup does one chunk, loads
// its whole chunk at once (the loads are independent and unrolled), and the serial parts are
// short. Split layout: `part` [split, rows, DV] f32 and `stats` [split, rows, 2] (max, sum) with
// the selected chunks first (NS = nSel * CPB of them), then the compressed chunks, then the window
// chunks; rows = B * HQ. The query position comes in P.qRowLo (the only per-step value).
import { NEG, NEG_HALF, enableF16, paramsStruct, type ElementType } from './common.js';
import { TOP_N_ROUNDS_TREE, topNRoundsSubgroup } from './top-n.js';
// (A cycle: decode-wide.ts takes this file's helpers; both only call each other's functions.)
import { wideAttendParts, winAliases, type WideAttendKernel, type WinAliases } from './decode-wide.js';

/** Shape constants every decode-step kernel shares (compile-time). */
export interface DecodeStepShape {
  readonly e: ElementType;
  readonly B: number;
  readonly H: number;
  readonly G: number;
  readonly DK: number;
  readonly DV: number;
  /** Keys per chunk of an attend workgroup. */
  readonly KC: number;
  /**
   * Keys per compressed or window chunk (attend 'cw', its stats and candidate sums; default KC):
   * the geometry the block choice and the merge read them with.
   */
  readonly KCW?: number;
  /** Raw and compressed token rows per sequence in the cache (its capacity). */
  readonly CAP: number;
  readonly CCAP: number;
  readonly window: number;
  readonly cmpBlock: number;
  readonly cmpStride: number;
  readonly selBlock: number;
  readonly nSel: number;
}

/** Chunks per selected block. */
export function chunksPerBlock(s: DecodeStepShape): number {
  return Math.ceil(s.selBlock / s.KC);
}

/** Workgroup memory of an attend workgroup (bytes). */
export function attendSharedBytes(s: Pick<DecodeStepShape, 'G' | 'DK' | 'DV' | 'KC'>): number {
  const qs = (s.DK / 4 + 1) * 16;
  return s.G * qs + s.KC * qs + s.KC * (s.DV / 4) * 16 + 4 * s.G * s.KC;
}

export function constants(s: DecodeStepShape, WG: number): string {
  return `const B = ${s.B}u;
const H = ${s.H}u;
const G = ${s.G}u;
const HQ = ${s.H * s.G}u;
const ROWS = ${s.B * s.H * s.G}u;
const DK4 = ${s.DK / 4}u;
const DV4 = ${s.DV / 4}u;
// Row stride of q and K tiles in workgroup memory: one vec4 of padding keeps reads conflict-free.
const QS = ${s.DK / 4 + 1}u;
const KC = ${s.KC}u;
const KCW = ${s.KCW ?? s.KC}u;
const CPB = ${chunksPerBlock(s)}u;
const NSEL = ${s.nSel}u;
const NS = ${s.nSel * chunksPerBlock(s)}u;
const CAP = ${s.CAP}u;
const CCAP = ${s.CCAP}u;
const WIN = ${s.window}u;
const CMP_BLOCK = ${s.cmpBlock}u;
const CMP_STRIDE = ${s.cmpStride}u;
const SEL_BLOCK = ${s.selBlock}u;
const WG = ${WG}u;
// Compressed blocks visible to the query at position p, and the chunks they and the window take.
fn visibleCompressed(p: u32) -> u32 {
  return select(0u, (p + 1u - CMP_BLOCK) / CMP_STRIDE + 1u, p + 1u >= CMP_BLOCK);
}
fn windowLo(p: u32) -> u32 {
  return select(0u, p + 1u - WIN, p + 1u > WIN);
}
fn compressedChunks(p: u32) -> u32 {
  return (visibleCompressed(p) + KCW - 1u) / KCW;
}
fn windowChunks(p: u32) -> u32 {
  return (p + 1u - windowLo(p) + KCW - 1u) / KCW;
}
`;
}

/** WGSL: the window's chunks of `keys` keys at position pos (windowChunks() for another chunk size). */
function windowChunksOf(keys: number): string {
  return `(pos + 1u - windowLo(pos) + ${keys - 1}u) / ${keys}u`;
}

/** Statements for x = lid + r * WG, r < ceil(n / WG), each guarded by x < n (unrolled: the loads overlap). */
export function unrolled(n: number, WG: number, body: string): string {
  const out: string[] = [];
  for (let r = 0; r * WG < n; r++) {
    const guard = (r + 1) * WG <= n ? '' : `if (x < ${n}u) `;
    out.push(`  { let x = lid + ${r * WG}u; ${guard}{ ${body} } }`);
  }
  return out.join('\n');
}

/**
 * Candidate sums (the block choice's scores split by compressed chunk): a compressed chunk touches
 * at most NJ selection blocks from jLo = chunk start / PER_SEL, a selection block at most NCJ chunks.
 */
export function candidateGeometry(s: Pick<DecodeStepShape, 'KC' | 'KCW' | 'CCAP' | 'cmpBlock' | 'cmpStride' | 'selBlock'>): { NJ: number; NCH: number; NCJ: number } {
  const pc = s.cmpBlock / s.cmpStride;
  const ps = s.selBlock / s.cmpStride;
  const kc = s.KCW ?? s.KC;
  return { NJ: Math.floor((kc + pc - 2) / ps) + 2, NCH: Math.ceil(s.CCAP / kc), NCJ: Math.floor((ps + pc - 2) / kc) + 2 };
}

/** WGSL constants and overlap() of the candidate sums (attend 'cw' and the block choice). */
export function candidateConstants(s: DecodeStepShape): string {
  const { NJ, NCH, NCJ } = candidateGeometry(s);
  return `const PER_CMP = ${s.cmpBlock / s.cmpStride}u;
const PER_SEL = ${s.selBlock / s.cmpStride}u;
// Compressed blocks that can overlap one selection block.
const SPAN = ${(s.selBlock + s.cmpBlock) / s.cmpStride - 1}u;
const NJ = ${NJ}u;
const NCH = ${NCH}u;
const NCJ = ${NCJ}u;
// Sub-blocks shared by compressed block i and selection block j.
fn overlap(i: u32, j: u32) -> f32 {
  let lo = max(i, j * PER_SEL);
  let hi = min(i + PER_CMP, (j + 1u) * PER_SEL);
  return select(0.0, f32(hi - lo), hi > lo);
}
`;
}

/**
 * Register tile (rh heads x rk of n) of the attend passes: doubled, heads first, while the tiles
 * outnumber the invocations, and at most 4 x 2.
 */
function registerTile(G: number, n: number, WG: number): { rh: number; rk: number } {
  let rh = 1;
  let rk = 1;
  while ((G / rh) * (n / rk) > WG) {
    if (rh < 4 && G % (2 * rh) === 0) rh *= 2;
    else if (rk < 2 && n % (2 * rk) === 0) rk *= 2;
    else break;
  }
  return { rh, rk };
}

/**
 * Attention over one chunk of keys for the G heads of one KV head: phase 'cw' (compressed chunks,
 * then window chunks, by workgroup_id.x) or 'slc' (chunks of the selected blocks).
 */
export function decodeAttendShader(
  k: DecodeStepShape & {
    readonly phase: 'cw' | 'slc';
    readonly WG: number;
    readonly tiled?: boolean;
    /** Phase 'cw': write candidate sums (candidateGeometry) instead of the raw compressed scores. */
    readonly cand?: boolean;
    /**
     * Phase 'slc': every workgroup first makes its KV head's block choice itself (the same as
     * decodeSelectShader's, whose dispatch this saves; workgroup 0 of the head writes blocks), with
     * these settings (its workgroup is the attend's).
     */
    readonly choice?: Omit<BlockChoiceKernel, keyof DecodeStepShape | 'WG'>;
    /**
     * Phase 'slc', tiled: the adapter's smallest subgroup. Where a head's keys fit one subgroup's
     * lanes (one register tile per invocation), each head's max and sum come from subgroup
     * shuffles right after its scores: no barrier and no serial scan over the chunk before the P·V.
     */
    readonly sgStats?: number;
    /**
     * Tiled: the scores' and the P·V's steps (over DK / 4 and over KC) in loops of this many steps
     * each (undefined: fully unrolled). Same sums in the same order; less code to fetch.
     */
    readonly unroll?: number;
    /**
     * Phase 'slc' with the wide block choice's slots and its window chunks (WideChoice.win):
     * workgroup NS of each KV head, which writes the sorted blocks, also folds the window chunks'
     * partials into split SMAX + 1 of its rows (windowFold), so that the merge reads NS + 2 splits.
     */
    readonly winFold?: { readonly SMAX: number; readonly KWIN: number };
  },
): string {
  const { e, G, DK, DV, KC, WG } = k;
  const cw = k.phase === 'cw';
  const choice = cw ? undefined : k.choice;
  const selWrite = (at: string, v: string) => `sel[${at}] = ${v}; if (wid.x == 0u) { blocks[out + ${at}] = ${v}; }`;
  const wide = choice?.wide;
  const qLoad = unrolled(G * (DK / 4), WG, `let g = x / DK4; let c = x % DK4; qs[g * QS + c] = vec4<f32>(q[(row0 + g) * DK4 + c]) * P.scale;`);
  const fused: { decls: string; body: string; pre?: string; after?: string } | undefined =
    choice && (wide ? blockChoiceMerge({ ...k, ...choice, WG, wide }, selWrite) : blockChoice({ ...k, ...choice, WG }, selWrite));
  const vec = `array<vec4<${e}>>`;
  const bindings = cw
    ? `@group(0) @binding(2) var<storage, read> kCmp: ${vec};
@group(0) @binding(3) var<storage, read> vCmp: ${vec};
@group(0) @binding(4) var<storage, read> kWin: ${vec};
@group(0) @binding(5) var<storage, read> vWin: ${vec};
@group(0) @binding(6) var<storage, read_write> part: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> stats: array<f32>;
@group(0) @binding(8) var<storage, read_write> ${k.cand ? 'cand' : 'scores'}: array<f32>;`
    : `@group(0) @binding(2) var<storage, read> kSlc: ${vec};
@group(0) @binding(3) var<storage, read> vSlc: ${vec};
@group(0) @binding(4) var<storage, ${choice ? 'read_write' : 'read'}> blocks: array<i32>;
@group(0) @binding(5) var<storage, read_write> part: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;${
        choice
          ? `
@group(0) @binding(7) var<storage, read> ${wide ? 'lists: array<vec2<f32>>' : `${choice.cand ? 'cand' : 'scores'}: array<f32>`};`
          : ''
      }`;
  // Which keys this workgroup takes: [lo, lo + count) of the compressed or raw rows, and its split.
  const chunk = cw
    ? cwChunk('KC')
    : `  let j = ${choice ? 'sel[wid.x / CPB]' : 'blocks[(b * H + h) * NSEL + wid.x / CPB]'};
  var lo = 0u;
  var count = 0u;
  if (j >= 0) {
    let start = u32(j) * SEL_BLOCK;
    lo = start + (wid.x % CPB) * KC;
    let hi = min(min(start + SEL_BLOCK, lo + KC), pos + 1u);
    count = select(0u, hi - lo, hi > lo);
  }
  let split = wid.x;`;
  const rawRow = (kk: string) => `((b * CAP + lo + ${kk}) * H + h)`;
  const cmpRow = (kk: string) => `((b * CCAP + lo + ${kk}) * H + h)`;
  // K and V of the chunk into workgroup memory. Every load is issued before any store and none
  // sits under its own branch (rows past count are clamped to a valid row, then zeroed), so the
  // loads of a thread overlap instead of waiting one after another.
  const loadTiles = (kBuf: string, vBuf: string, row: (kk: string) => string) => {
    const lines: string[] = [];
    const stores: string[] = [];
    for (const [D4, n, buf, dst] of [
      ['DK4', (KC * DK) / 4, kBuf, (kk: string, c: string) => `kt[${kk} * QS + ${c}]`],
      ['DV4', (KC * DV) / 4, vBuf, (kk: string, c: string) => `vt[${kk} * DV4 + ${c}]`],
    ] as const) {
      for (let r = 0; r * WG < n; r++) {
        const id = `${buf}${r}`;
        lines.push(`    let x${id} = lid + ${r * WG}u; let k${id} = x${id} / ${D4}; let c${id} = x${id} % ${D4};`);
        lines.push(`    let a${id} = ${buf}[${row(`min(k${id}, last)`)} * ${D4} + c${id}];`);
        const guard = (r + 1) * WG <= n ? '' : `if (x${id} < ${n}u) `;
        stores.push(`    ${guard}{ ${dst(`k${id}`, `c${id}`)} = select(vec4<f32>(0.0), vec4<f32>(a${id}), k${id} < count); }`);
      }
    }
    return [...lines, ...stores].join('\n');
  };
  const tiles = cw
    ? `  if (isCmp) {
${loadTiles('kCmp', 'vCmp', cmpRow)}
  } else {
${loadTiles('kWin', 'vWin', rawRow)}
  }`
    : `  {
${loadTiles('kSlc', 'vSlc', rawRow)}
  }`;
  /** `acc` = Σ_i term(i) for i < n, unrolled over two accumulators (no loop-carried wait on one). */
  const unrolledSum = (acc: string, n: number, term: (i: number) => string) => {
    const lines = [`    var ${acc}0 = vec4<f32>(0.0);`, `    var ${acc}1 = vec4<f32>(0.0);`];
    for (let i = 0; i < n; i++) lines.push(`    ${acc}${i % 2} = ${term(i)}${acc}${i % 2});`);
    lines.push(`    let ${acc} = ${acc}0 + ${acc}1;`);
    return lines.join('\n');
  };
  const keys = Array.from({ length: KC }, (_, i) => i);
  const scoreStore = (g: string, kk: string, sv: string) => `    { let ok = ${kk} < count;
      pr[${g} * PRS + ${kk}] = select(${NEG}, ${sv}, ok);${cw && !k.cand ? `
      if (ok && isCmp) { scores[(row0 + ${g}) * CCAP + lo + ${kk}] = ${sv}; }` : ''} }`;
  let scoresPhase: string;
  let outputPhase: string;
  // Subgroup statistics (sgStats): set where they replace the scan below.
  let sgStats = false;
  if (k.tiled) {
    // Register tiles: each invocation takes RH heads x RK keys of the scores and RH heads x RC
    // columns of the output, so every q, k and v vector read from workgroup memory serves RH or RK
    // products (the untiled phases read two vectors per product: workgroup memory bandwidth bounded
    // the attend passes).
    const { rh, rk } = registerTile(G, KC, WG);
    const { rh: oh, rk: oc } = registerTile(G, DV / 4, WG);
    const KG = KC / rk;
    const CG = DV / 4 / oc;
    const hs = Array.from({ length: rh }, (_, a) => a);
    const ks = Array.from({ length: rk }, (_, b) => b);
    const ohs = Array.from({ length: oh }, (_, a) => a);
    const ocs = Array.from({ length: oc }, (_, r) => r);
    // n steps of body(index expression): unrolled, or in a loop of k.unroll steps an iteration.
    const U = k.unroll;
    const steps = (n: number, body: (i: string) => string) =>
      U === undefined || U >= n || n % U !== 0
        ? Array.from({ length: n }, (_, i) => body(`${i}u`)).join('\n')
        : `    for (var st = 0u; st < ${n}u; st += ${U}u) {
${Array.from({ length: U }, (_, u) => body(`(st + ${u}u)`).replace(/^(?=.)/gm, '  ')).join('\n')}
    }`;
    // A head's KG lanes are consecutive invocations, aligned (subgroups of consecutive invocations,
    // as the other subgroup kernels assume), so xor shuffles below KG stay within the head.
    sgStats = !cw && (k.sgStats ?? 0) >= KG && (KG & (KG - 1)) === 0 && (G / rh) * KG === WG;
    const masks = Array.from({ length: Math.log2(KG) }, (_, i) => 2 ** i);
    const statsInRegisters = hs
      .map(
        (a) => `${ks.map((b) => `    let v${a}_${b} = select(${NEG}, dot(a${a}_${b}, vec4<f32>(1.0)), kb + ${b * KG}u < count);`).join('\n')}
    var m${a} = max(${ks.map((b) => `v${a}_${b}`).reduce((x, y) => `max(${x}, ${y})`)}, ${NEG});
${masks.map((mk) => `    m${a} = max(m${a}, subgroupShuffleXor(m${a}, ${mk}u));`).join('\n')}
${ks.map((b) => `    let p${a}_${b} = select(0.0, exp(select(-100.0, v${a}_${b} - m${a}, v${a}_${b} > ${NEG_HALF})), v${a}_${b} > ${NEG_HALF});
    pr[(g0 + ${a}u) * PRS + kb + ${b * KG}u] = p${a}_${b};`).join('\n')}
    var l${a} = ${ks.map((b) => `p${a}_${b}`).join(' + ')};
${masks.map((mk) => `    l${a} += subgroupShuffleXor(l${a}, ${mk}u);`).join('\n')}
    if (kb == 0u) { let at = (split * ROWS + row0 + g0 + ${a}u) * 2u; stats[at] = m${a}; stats[at + 1u] = l${a}; }`,
      )
      .join('\n');
    scoresPhase = `  // Scores: invocation x takes heads (x / ${KG}) * ${rh} + a and keys kb + ${KG} * b, kb = x % ${KG}.
${unrolled(
  (G / rh) * KG,
  WG,
  `let g0 = (x / ${KG}u) * ${rh}u; let kb = x % ${KG}u;
${hs.flatMap((a) => ks.map((b) => `    var a${a}_${b} = vec4<f32>(0.0);`)).join('\n')}
${steps(
  DK / 4,
  (c) => `    {
${ks.map((b) => `      let k${b} = kt[(kb + ${b * KG}u) * QS + ${c}];`).join('\n')}
${hs.map((a) => `      let q${a} = qs[(g0 + ${a}u) * QS + ${c}];`).join('\n')}
${hs.flatMap((a) => ks.map((b) => `      a${a}_${b} = fma(q${a}, k${b}, a${a}_${b});`)).join('\n')}
    }`,
)}
${sgStats ? `    // Each head's max and sum over the chunk's keys (its KG lanes); probabilities replace the scores.
${statsInRegisters}` : hs.flatMap((a) => ks.map((b) => scoreStore(`(g0 + ${a}u)`, `(kb + ${b * KG}u)`, `dot(a${a}_${b}, vec4<f32>(1.0))`))).join('\n')}`,
)}
`;
    outputPhase = `  // Unnormalised partial output: invocation x takes heads (x / ${CG}) * ${oh} + a and columns x % ${CG} + ${CG} * r.
${unrolled(
  (G / oh) * CG,
  WG,
  `let g0 = (x / ${CG}u) * ${oh}u; let c0 = x % ${CG}u;
${ohs.flatMap((a) => ocs.map((r) => `    var o${a}_${r} = vec4<f32>(0.0);`)).join('\n')}
${steps(
  KC,
  (kk) => `    {
${ocs.map((r) => `      let v${r} = vt[${kk} * DV4 + c0 + ${r * CG}u];`).join('\n')}
${ohs.map((a) => `      let p${a} = vec4<f32>(pr[(g0 + ${a}u) * PRS + ${kk}]);`).join('\n')}
${ohs.flatMap((a) => ocs.map((r) => `      o${a}_${r} = fma(p${a}, v${r}, o${a}_${r});`)).join('\n')}
    }`,
)}
${ohs.flatMap((a) => ocs.map((r) => `    part[(split * ROWS + row0 + g0 + ${a}u) * DV4 + c0 + ${r * CG}u] = o${a}_${r};`)).join('\n')}`,
)}
`;
  } else {
    scoresPhase = `  // Scores: invocation x takes head x / KC and key x % KC.
${unrolled(
  G * KC,
  WG,
  `let g = x / KC; let kk = x % KC;
${unrolledSum('a', DK / 4, (c) => `fma4(qs[g * QS + ${c}u], kt[kk * QS + ${c}u], `)}
    let s = dot(a, vec4<f32>(1.0));
    let ok = kk < count;
    pr[g * PRS + kk] = select(${NEG}, s, ok);${cw ? `
    if (ok && isCmp) { scores[(row0 + g) * CCAP + lo + kk] = s; }` : ''}`,
)}`;
    outputPhase = `  // Unnormalised partial output: invocation x takes head x / DV4 and column x % DV4.
${unrolled(
  G * (DV / 4),
  WG,
  `let g = x / DV4; let c = x % DV4;
${unrolledSum('o', KC, (kk) => `fma4(vec4<f32>(pr[g * PRS + ${kk}u]), vt[${kk}u * DV4 + c], `)}
    part[(split * ROWS + row0 + g) * DV4 + c] = o;`,
)}`;
  }
  return `${enableF16(e)}${choice?.subgroups || sgStats ? 'enable subgroups;\n' : ''}${paramsStruct()}
@group(0) @binding(1) var<storage, read> q: ${vec};
${bindings}
${constants(k, WG)}${cw && k.cand ? candidateConstants(k) : ''}${
    fused
      ? `${fused.decls}// The sorted block list of the workgroup's KV head.
var<workgroup> sel: array<i32, ${k.nSel}>;
`
      : ''
  }
// Row stride of the score tile: one word of padding, so the per-head scans are conflict-free.
const PRS = ${KC + 1}u;
var<workgroup> qs: array<vec4<f32>, ${G * (DK / 4 + 1)}>;
var<workgroup> kt: array<vec4<f32>, ${KC * (DK / 4 + 1)}>;
var<workgroup> vt: array<vec4<f32>, ${KC * (DV / 4)}>;
// Scores, then probabilities, [G, PRS].
var<workgroup> pr: array<f32, ${G * (KC + 1)}>;

fn fma4(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>) -> vec4<f32> {
  return fma(a, b, c);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${choice?.subgroups ? SUBGROUP_BUILTINS : ''}) {
  let pos = P.qRowLo;
  let b = wid.y / H;
  let h = wid.y % H;
  let row0 = b * HQ + h * G;
${
  fused
    ? `${fused.pre ?? ''}${wide ? `  // The group's queries first: their loads overlap the block choice's.\n${qLoad}\n` : ''}  // The KV head's block choice (the same in each of its workgroups), sorted into sel.
  {
${fused.body.replace(/^(?=.)/gm, '  ')}  }
  workgroupBarrier();
${k.winFold && fused.after ? windowFold(k, k.winFold) : ''}${fused.after ?? ''}`
    : ''
}${chunk}
  // Last key of the chunk that loads may touch (a valid row even when count is 0).
  let last = max(count, 1u) - 1u;
  // The group's queries (scaled) and the chunk's keys and values; keys past count are zero.
${wide ? '' : `${qLoad}\n`}${tiles}
  workgroupBarrier();
${scoresPhase}${sgStats ? '' : `
  workgroupBarrier();
  // Each head's max and sum over the chunk; probabilities replace the scores (0 for masked keys).
  for (var g = lid; g < G; g += WG) {
${keys.map((i) => `    let s${i} = pr[g * PRS + ${i}u];`).join('\n')}
    let m = max(${keys.map((i) => `s${i}`).reduce((acc, x) => `max(${acc}, ${x})`)}, ${NEG});
${keys.map((i) => `    let p${i} = select(0.0, exp(select(-100.0, s${i} - m, s${i} > ${NEG_HALF})), s${i} > ${NEG_HALF});\n    pr[g * PRS + ${i}u] = p${i};`).join('\n')}
    let l = ${keys.map((i) => `p${i}`).join(' + ')};
    let at = (split * ROWS + row0 + g) * 2u;
    stats[at] = m;
    stats[at + 1u] = l;
  }`}
  workgroupBarrier();
${outputPhase}${cw && k.cand ? candidateSums(k, 'KC') : ''}
}
`;
}

/**
 * WGSL: which keys an attend 'cw' workgroup takes, compressed chunks first, then the window's, each
 * of `keys` keys: [lo, lo + count) of the compressed or raw rows, and its split (after the NS
 * selected ones). `chunk`: the chunk's index (the workgroup's, or a loop variable).
 */
export function cwChunk(keys: string, chunk = 'wid.x'): string {
  return `  let nC = compressedChunks(pos);
  let isCmp = ${chunk} < nC;
  var lo = 0u;
  var count = 0u;
  if (isCmp) {
    lo = ${chunk} * ${keys};
    count = min(${keys}, visibleCompressed(pos) - lo);
  } else {
    lo = windowLo(pos) + (${chunk} - nC) * ${keys};
    count = min(${keys}, pos + 1u - lo);
  }
  let split = NS + ${chunk};`;
}

/**
 * WGSL of an attend 'cw' workgroup's last step on a compressed chunk of `keys` keys (lo ..): its
 * candidate sums cand[row, chunk, t] = Σ_i overlap(i, jLo + t) p[i], p relative to the chunk's max
 * (stats, in workgroup array pr), so that the block choice scales them by exp(max - lse) and does
 * not read every compressed score again. `chunk`: the chunk's index, as in cwChunk.
 */
export function candidateSums(k: Pick<DecodeStepShape, 'selBlock' | 'cmpBlock' | 'cmpStride'>, keys: string, chunk = 'wid.x'): string {
  return `
  // Candidate sums of a compressed chunk (candidateSums).
  if (isCmp) {
    let jLo = lo / PER_SEL;
    for (var x = lid; x < G * NJ; x += WG) {
      let g = x / NJ;
      let t = x % NJ;
      let j = jLo + t;
      var a = 0.0;
${Array.from({ length: (k.selBlock + k.cmpBlock) / k.cmpStride - 1 }, (_, r) => `      { let ii = j * PER_SEL + ${r + 1}u; let i = ii - PER_CMP; if (ii >= PER_CMP && i >= lo && i < lo + ${keys}) { a += overlap(i, j) * pr[g * PRS + i - lo]; } }`).join('\n')}
      cand[((row0 + g) * NCH + ${chunk}) * NJ + t] = a;
    }
  }`;
}

/** The candidate-score loop over heads (s += the overlap-weighted probabilities of j's compressed blocks), unrolled over GU heads. */
function candidateTerms(gu: number, span: number): string {
  return `    for (var g0 = 0u; g0 < G; g0 += GU) {
${Array.from({ length: gu }, (_, gi) => `      let lg${gi} = lse[g0 + ${gi}u];
      let base${gi} = (row0 + g0 + ${gi}u) * CCAP;`).join('\n')}
${Array.from({ length: span }, (_, r) => `      let in${r} = iBase + ${r}u >= PER_CMP && iBase + ${r}u - PER_CMP < nVis;
      let i${r} = select(0u, iBase + ${r}u - PER_CMP, in${r});
      let w${r} = overlap(i${r}, j);`).join('\n')}
${Array.from({ length: gu }, (_, gi) =>
  Array.from({ length: span }, (_, r) => `      let x${gi}_${r} = scores[base${gi} + i${r}];`).join('\n'),
).join('\n')}
${Array.from({ length: gu }, (_, gi) =>
  Array.from(
    { length: span },
    (_, r) => `      { let ok = in${r} && lg${gi} > ${NEG_HALF}; s += select(0.0, w${r} * exp(select(-100.0, x${gi}_${r} - lg${gi}, ok)), ok); }`,
  ).join('\n'),
).join('\n')}
    }`;
}

/**
 * Workgroup memory of the block choice (bytes); `minSubgroup` bounds its subgroup count (0: no
 * subgroups), `chunks` is NCH with candidate sums (their factor table), else 0.
 */
export function selectSharedBytes(
  k: { readonly G: number; readonly WG: number; readonly NSMAX: number; readonly nSel: number; readonly lanes?: number },
  minSubgroup: number,
  chunks: number,
): number {
  const lists = minSubgroup > 0 ? 2 * Math.ceil(k.WG / minSubgroup) * k.nSel : 2 * k.WG;
  return 4 * (2 * Math.max(k.WG, k.G * (k.lanes ?? 0)) + k.G + k.NSMAX + lists + k.nSel + k.G * chunks);
}

/**
 * Block choice for one (sequence, KV head): lse of each head from the compressed chunks' stats,
 * candidate scores S[j] = Σ_heads Σ_i overlap(i, j) exp(score[i] - lse) from the stored raw scores,
 * the forced blocks, then top-n (ties to the lower index), written ascending with -1 padding.
 * Few workgroup barriers, since one workgroup per KV head makes this pass a chain of latencies: the
 * lse merges the chunks' (max, sum) online in one pass; with subgroups every subgroup takes its own
 * top-n in rounds of subgroup operations (no barrier), and a candidate of these lists is chosen when
 * fewer than the free places' count of list entries are ahead of it (the global top-n is in the
 * union of the subgroups' top-n); the chosen blocks are sorted by counting.
 */
export function decodeSelectShader(k: BlockChoiceKernel): string {
  const { decls, body } = blockChoice(k, (at, v) => `blocks[out + ${at}] = ${v};`);
  return `${k.subgroups ? 'enable subgroups;\n' : ''}${paramsStruct()}
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> ${k.cand ? 'cand' : 'scores'}: array<f32>;
@group(0) @binding(3) var<storage, read_write> blocks: array<i32>;
${constants(k, k.WG)}
${decls}
@compute @workgroup_size(${k.WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${k.subgroups ? SUBGROUP_BUILTINS : ''}) {
  let pos = P.qRowLo;
  let b = wid.x / H;
  let h = wid.x % H;
  let row0 = b * HQ + h * G;
${body}}
`;
}

const SUBGROUP_BUILTINS = ', @builtin(subgroup_size) sgSize: u32, @builtin(subgroup_invocation_id) sgLane: u32';

/** Block choice kernel settings (decodeSelectShader, and the fused selected attend). */
export interface BlockChoiceKernel extends DecodeStepShape {
  readonly WG: number;
  readonly NSMAX: number;
  readonly initialBlocks: number;
  readonly localBlocks: number;
  readonly subgroups: boolean;
  /** The adapter's smallest subgroup (sizes the subgroup lists). */
  readonly minSubgroup: number;
  /** Scores from the attend pass's candidate sums (else from the raw compressed scores). */
  readonly cand?: boolean;
  /**
   * Invocations per head of the lse merge (default min(64, WG / G)); more than WG / G (the fused
   * kernel, whose workgroup is smaller than the block choice's) loops, so the lse and with it the
   * chosen blocks are bit-identical to a block choice of another workgroup size.
   */
  readonly lanes?: number;
  /**
   * The wide block choice (decodeChoiceWideShader): CPW candidates per workgroup, at most PMAX
   * workgroups per KV head. In the selected attend (`choice`), the final top-n from their lists.
   */
  readonly wide?: WideChoice;
}

/**
 * The wide block choice's geometry: CPW candidates per workgroup, at most PMAX workgroups per KV head.
 * slots: the selected attend's workgroups take their blocks in the order of the ranking, not sorted
 * (blockChoiceMerge; one extra workgroup per KV head writes the sorted list). sub: the block choice
 * kernel reduces through subgroups of at least this size (choiceWideSubgroups; 0: workgroup memory).
 */
export interface WideChoice {
  readonly CPW: number;
  readonly PMAX: number;
  readonly slots?: boolean;
  readonly sub?: number;
  /** With slots: the final top-n's binary-search steps in a loop (not unrolled). */
  readonly searchLoop?: boolean;
  /** With sub: the block choice's rank comparisons in a loop (not unrolled; the same counts). */
  readonly rankLoop?: boolean;
  /**
   * With sub: G more workgroups per KV head fold each query head's compressed and window chunk
   * partials into two (foldBody), so that the merge (its `fold`) reads NS + 2 splits, not NS + all
   * of dispatch 1's chunks. Needs foldSharedBytes more workgroup memory. The value: the splits at
   * capacity (the merge's SMAX), after which the two folded splits of each row are stored.
   */
  readonly fold?: number;
  /**
   * With fold: the window's chunks run here, in workgroups past the fold's (one per window chunk of
   * each KV head), on this kernel of dispatch 1 (WideAttendKernel with windowOnly set by the block
   * choice), while dispatch 1 takes the compressed chunks only (its noWindow). The fold then takes the
   * compressed chunks only; the selected attend's extra workgroup folds the window chunks' splits
   * (its winFold) or the merge reads them (its `win`). The window workgroups' tiles are the block
   * choice's and the fold's workgroup memory too (winAliases).
   */
  readonly win?: WideAttendKernel;
}

/**
 * Workgroup memory the block choice and the fold add to the window attend's (WideChoice.win), with
 * their arrays in its tiles where `alias` says (bytes): the fold's two subgroup-sum arrays, and the
 * arrays that do not fit the tiles.
 */
export function winChoiceExtraBytes(k: { readonly WG: number; readonly minSubgroup: number; readonly CPW: number; readonly foldSplits: number }, alias: WinAliases): number {
  return 2 * 8 * Math.ceil(k.WG / Math.max(1, k.minSubgroup)) + (alias.score ? 0 : 4 * k.CPW) + (alias.fW ? 0 : 4 * k.foldSplits) + (alias.acc ? 0 : 2 * 16 * k.WG);
}

/** Workgroup memory of the wide block choice's kernel (bytes). */
export function wideChoiceSharedBytes(k: { readonly G: number; readonly WG: number; readonly lanes: number; readonly CPW: number; readonly NCJ: number }): number {
  return 4 * (2 * Math.max(k.WG, k.G * k.lanes) + k.G + k.CPW * k.G * k.NCJ + k.CPW);
}

/**
 * The compressed chunks' P·V in the wide block choice's dispatch (its `split`): each invocation takes
 * oh heads x one vec4 column of a chunk's KCW keys; S invocations share a (heads, column) tile,
 * each over KCW / S keys, and add up through workgroup memory (bytes: the S - 1 partial tiles).
 */
export function splitPV(k: { readonly G: number; readonly DV: number; readonly KCW: number; readonly WG: number }): { oh: number; T: number; S: number; bytes: number } {
  const oh = k.G % 2 === 0 ? 2 : 1;
  const T = (k.G / oh) * (k.DV / 4);
  const S = T < k.WG ? Math.min(2 ** Math.floor(Math.log2(k.WG / T)), k.KCW) : 1;
  return { oh, T, S, bytes: 16 * (S - 1) * T * oh };
}

/** Workgroup memory the final top-n from the wide block choice's lists adds to the selected attend (bytes). */
export function wideMergeSharedBytes(k: { readonly nSel: number; readonly PMAX: number }): number {
  return 4 * (2 * k.PMAX * k.nSel + 2 * k.nSel);
}

/**
 * The wide block choice, part 1 (replaces decodeSelectShader's one workgroup per KV head, a chain
 * of latencies): workgroup (p, sequence x KV head) takes candidates [p * CPW, (p + 1) * CPW). It
 * loads its candidate sums and their chunks' stats first, merges each head's lse like
 * decodeSelectShader (same lanes and order, so the same bits), scores its candidates (same sums in
 * the same order) and writes its best nFree free ones, best first, as (score, index) to
 * lists[(sequence x KV head) * PMAX + p][rank] (score -1: none). The selected attend's workgroups
 * take the final top-n from these lists (blockChoiceMerge). Candidate sums only (cand).
 */
export function decodeChoiceWideShader(k: BlockChoiceKernel & { readonly wide: WideChoice; readonly split?: boolean }): string {
  if (k.wide.sub && !k.split && k.wide.CPW <= k.WG) return choiceWideSubgroups(k, k.wide.sub);
  const { G, WG } = k;
  const pv = k.split ? splitPV({ G, DV: k.DV, KCW: k.KCW ?? k.KC, WG }) : undefined;
  const { CPW, PMAX } = k.wide;
  const lanes = k.lanes ?? Math.min(64, Math.max(1, Math.floor(WG / G)));
  const { NCJ, NCH } = candidateGeometry(k);
  const pairs = G * CPW;
  const rounds = Array.from({ length: Math.ceil(pairs / WG) }, (_, r) => r);
  const cu = Array.from({ length: NCJ }, (_, u) => u);
  const prefetch = rounds
    .map(
      (r) => `  let x${r} = lid + ${r * WG}u;
  let ok${r} = ${(r + 1) * WG <= pairs ? 'true' : `x${r} < ${pairs}u`};
  let g${r} = min(x${r} / CPW, G - 1u);
  let i${r} = x${r} % CPW;
  let j${r} = jLo + i${r};
  let cA${r} = (max(j${r} * PER_SEL + 1u, PER_CMP) - PER_CMP) / KCW;
  let cLast${r} = (j${r} * PER_SEL + PER_SEL - 1u) / KCW;
${cu
  .map(
    (u) => `  let in${r}_${u} = ok${r} && j${r} < nCand && cA${r} + ${u}u < nC && cA${r} + ${u}u <= cLast${r};
  let c${r}_${u} = select(0u, cA${r} + ${u}u, in${r}_${u});
  let a${r}_${u} = cand[((row0 + g${r}) * NCH + c${r}_${u}) * NJ + select(0u, j${r} - (c${r}_${u} * KCW) / PER_SEL, in${r}_${u})];
  let at${r}_${u} = ((NS + c${r}_${u}) * ROWS + row0 + g${r}) * 2u;
  let m${r}_${u} = stats[at${r}_${u}];
  let l${r}_${u} = stats[at${r}_${u} + 1u];`,
  )
  .join('\n')}`,
    )
    .join('\n');
  const terms = rounds
    .map(
      (r) => `  if (ok${r}) {
    let lg = lse[g${r}];
${cu
  .map(
    (u) => `    { let live = l${r}_${u} > 0.0 && lg > ${NEG_HALF};
      let f = select(0.0, exp(select(-100.0, m${r}_${u} - lg, live)), live);
      term[(g${r} * NCJ + ${u}u) * CPW + i${r}] = select(0.0, f * a${r}_${u}, in${r}_${u}); }`,
  )
  .join('\n')}
  }`,
    )
    .join('\n');
  return `${pv ? enableF16(k.e) : ''}${paramsStruct()}
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> cand: array<f32>;
@group(0) @binding(3) var<storage, read_write> lists: array<vec2<f32>>;${
    pv
      ? `
@group(0) @binding(4) var<storage, read> probs: array<f32>;
@group(0) @binding(5) var<storage, read> vCmp: array<vec4<${k.e}>>;
@group(0) @binding(6) var<storage, read_write> part: array<vec4<f32>>;`
      : ''
  }
${constants(k, WG)}${candidateConstants(k)}const LANES = ${lanes}u;
const CPW = ${CPW}u;
const PMAX = ${PMAX}u;
const INITIAL = ${k.initialBlocks}u;
const LOCAL = ${k.localBlocks}u;
var<workgroup> redM: array<f32, ${Math.max(WG, G * lanes)}>;
var<workgroup> redL: array<f32, ${Math.max(WG, G * lanes)}>;
var<workgroup> lse: array<f32, ${G}>;
// Candidate i's scaled sum over its chunk u for head g, [G, NCJ, CPW] (candidates adjacent: no bank conflicts).
var<workgroup> term: array<f32, ${CPW * G * NCJ}>;
var<workgroup> score: array<f32, ${CPW}>;${pv && pv.S > 1 ? `
// The P·V invocations' partial tiles, [S - 1, T, oh].
var<workgroup> pvRed: array<vec4<f32>, ${(pv.S - 1) * pv.T * pv.oh}>;` : ''}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let pos = P.qRowLo;
  let bh = wid.y;
  let b = bh / H;
  let h = bh % H;
  let row0 = b * HQ + h * G;
${pv ? splitPVBody(pv, k.KCW ?? k.KC) : ''}  let jLo = wid.x * CPW;
  let nC = compressedChunks(pos);
  let cur = pos / SEL_BLOCK;
  let nCand = cur + 1u;
  // (head, candidate) pairs: the candidate sums of the (at most NCJ) chunks the candidate's compressed
  // blocks lie in, and those chunks' (max, sum), loaded before the lse (their loads overlap its own).
${prefetch}
${lseMerge(G, WG, lanes, Math.min(8, Math.ceil(NCH / lanes)))}${FORCED}  // The pairs' terms: candidate sum x exp(chunk max - lse), as decodeSelectShader's factor table.
${terms}
  workgroupBarrier();
  // Scores summed over heads and chunks in decodeSelectShader's order; forced blocks and
  // candidates past the query's block score -1.
  for (var i = lid; i < CPW; i += WG) {
    let j = jLo + i;
    var s = 0.0;
${Array.from({ length: G * NCJ }, (_, n) => `    s += term[${n}u * CPW + i];`).join('\n')}
    let isForced = j < INITIAL || (LOCAL > 0u && j >= localLo);
    score[i] = select(s, -1.0, isForced || j >= nCand);
  }
  workgroupBarrier();
  // Rank in (score descending, index ascending): the first nFree go to this workgroup's list.
  for (var i = lid; i < CPW; i += WG) {
    let v = score[i];
    var rank = 0u;
${Array.from({ length: CPW }, (_, y) => `    { let v2 = score[${y}u]; rank += select(0u, 1u, v2 > v || (v2 == v && ${y}u < i)); }`).join('\n')}
    if (rank < nFree) { lists[(bh * PMAX + wid.x) * NSEL + rank] = vec2<f32>(v, f32(jLo + i)); }
  }
}
`;
}

/**
 * The wide block choice through subgroups (WideChoice.sub = the adapter's smallest subgroup, SG): the
 * same lists as decodeChoiceWideShader in two workgroup barriers instead of four and without its
 * serial loops. LL invocations per head merge the chunk stats into the lse (each its every LL-th
 * chunk, then a butterfly of subgroup shuffles); HL invocations per candidate each take every HL-th
 * head (their candidate sums and stats loaded first), their sums added by a butterfly; then the same
 * HL invocations rank the candidate, each against every HL-th other. LL and HL are powers of two of
 * at most SG, so every butterfly stays in one subgroup (subgroups of consecutive invocations, as the
 * other subgroup kernels assume). The lse and the scores are summed in another order than the
 * single block choice's: the same bits in every workgroup of a KV head, not the same as there.
 */
function choiceWideSubgroups(k: BlockChoiceKernel & { readonly wide: WideChoice }, SG: number): string {
  const { G, WG } = k;
  const { CPW, PMAX } = k.wide;
  const pow2 = (x: number) => 2 ** Math.floor(Math.log2(Math.max(1, x)));
  const LL = Math.min(pow2(WG / G), SG, 64);
  const HL = Math.min(pow2(WG / CPW), SG);
  const GH = Math.ceil(G / HL);
  const RC = Math.ceil(CPW / HL);
  const { NCJ, NCH } = candidateGeometry(k);
  // Chunks of a lse lane loaded before they are merged (in order, so the bits do not depend on it).
  const U = Math.max(1, Math.min(8, Math.ceil(NCH / LL)));
  const ts = Array.from({ length: GH }, (_, t) => t);
  const cu = Array.from({ length: NCJ }, (_, u) => u);
  const us = Array.from({ length: U }, (_, u) => u);
  const butterfly = (n: number, step: (mask: number) => string) => Array.from({ length: Math.log2(n) }, (_, i) => step(2 ** i)).join('\n');
  const mergeInto = (m: string, l: string, m2: string, l2: string) => `{ let mn = max(${m}, ${m2}); ${l} = ${l} * exp(${m} - mn) + ${l2} * exp(${m2} - mn); ${m} = mn; }`;
  const fold = (k.wide.fold ?? 0) > 0;
  // win: the window chunks' attend (in workgroups past the fold's); its tiles hold lse, score and
  // the fold's arrays in the block choice's and the fold's workgroups.
  // (Window chunk wid.x - winBase: the workgroups past the block choice's and the fold's.)
  const win = fold && k.wide.win ? wideAttendParts({ ...k.wide.win, windowOnly: '(wid.x - winBase)' }) : undefined;
  const alias = win && winAliases(k.wide.win!, CPW, k.wide.fold! - k.nSel * chunksPerBlock(k));
  const names: ArrayNames = alias
    ? {
        lse: 'redM',
        score: alias.score ? 'redL' : 'score',
        fW: alias.fW ? 'pr' : 'fW',
        accC: alias.acc ? (i) => `kt[${i}]` : OWN_ARRAYS.accC,
        accW: alias.acc ? (i) => `kt[WG + ${i}]` : OWN_ARRAYS.accW,
        subSums: Math.ceil(WG / SG),
      }
    : OWN_ARRAYS;
  // One rank comparison against candidate hl + y (an unrolled step, or a loop's body).
  const rankStep = (y: string) => `{ let y = hl + ${y}; let v2 = ${names.score}[min(y, CPW - 1u)]; rank += select(0u, 1u, y < CPW && (v2 > v || (v2 == v && y < i))); }`;
  const vec = `array<vec4<${k.e}>>`;
  return `${win ? enableF16(k.e) : ''}enable subgroups;
${paramsStruct()}
@group(0) @binding(1) var<storage, ${fold ? 'read_write' : 'read'}> stats: array<f32>;
@group(0) @binding(2) var<storage, read> cand: array<f32>;
@group(0) @binding(3) var<storage, read_write> lists: array<vec2<f32>>;${fold ? `
@group(0) @binding(4) var<storage, read_write> part: array<vec4<f32>>;` : ''}${
    win
      ? `
@group(0) @binding(5) var<storage, read> q: ${vec};
@group(0) @binding(6) var<storage, read> kWin: ${vec};
@group(0) @binding(7) var<storage, read> vWin: ${vec};`
      : ''
  }
${constants(k, WG)}${candidateConstants(k)}${fold ? foldDecls(k, k.wide.fold!, names) : ''}${win ? win.decls : ''}const CPW = ${CPW}u;
const PMAX = ${PMAX}u;
const INITIAL = ${k.initialBlocks}u;
const LOCAL = ${k.localBlocks}u;
// Invocations per head of the lse, per candidate of the scores and ranks.
const LL = ${LL}u;
const HL = ${HL}u;${
    names.lse === 'lse'
      ? `
var<workgroup> lse: array<f32, ${G}>;`
      : ''
  }${
    names.score === 'score'
      ? `
var<workgroup> score: array<f32, ${CPW}>;`
      : ''
  }

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${fold ? SUBGROUP_BUILTINS : ''}) {${
    win
      ? `
  // The window chunks (win): the workgroups past the fold's.
  let winBase = (P.qRowLo / SEL_BLOCK + CPW) / CPW + G;
  if (wid.x >= winBase) {
${win.main}    return;
  }`
      : ''
  }
  let pos = P.qRowLo;
  let bh = wid.y;
  let b = bh / H;
  let h = bh % H;
  let row0 = b * HQ + h * G;
${fold ? foldBody(k.DV, WG, names, !!win) : ''}  let jLo = wid.x * CPW;
  let nC = compressedChunks(pos);
  let cur = pos / SEL_BLOCK;
  let nCand = cur + 1u;
  // Candidate i = lid / HL, heads hl + HL * t: the candidate sums of the (at most NCJ) chunks its
  // compressed blocks lie in and those chunks' (max, sum), loaded first (they overlap the lse's loads).
  let i = lid / HL;
  let hl = lid % HL;
  let okI = i < CPW;
  let j = jLo + i;
  let cA = (max(j * PER_SEL + 1u, PER_CMP) - PER_CMP) / KCW;
  let cLast = (j * PER_SEL + PER_SEL - 1u) / KCW;
${ts
  .map(
    (t) => `  let g${t} = hl + ${t * HL}u;
  let gc${t} = min(g${t}, G - 1u);
${cu
  .map(
    (u) => `  let in${t}_${u} = okI && g${t} < G && j < nCand && cA + ${u}u < nC && cA + ${u}u <= cLast;
  let c${t}_${u} = select(0u, cA + ${u}u, in${t}_${u});
  let a${t}_${u} = cand[((row0 + gc${t}) * NCH + c${t}_${u}) * NJ + select(0u, j - (c${t}_${u} * KCW) / PER_SEL, in${t}_${u})];
  let at${t}_${u} = ((NS + c${t}_${u}) * ROWS + row0 + gc${t}) * 2u;
  let m${t}_${u} = stats[at${t}_${u}];
  let l${t}_${u} = stats[at${t}_${u} + 1u];`,
  )
  .join('\n')}`,
  )
  .join('\n')}
  // lse of head gl = lid / LL: its lane merges every LL-th chunk's (max, sum) online, then the lanes'.
  let gl = lid / LL;
  let lane = lid % LL;
  let okL = gl < G;
  var mL = ${NEG};
  var lL = 0.0;
  for (var c0 = lane; c0 < nC && okL; c0 += ${U * LL}u) {
${us.map((u) => `    let sa${u} = ((NS + min(c0 + ${u * LL}u, nC - 1u)) * ROWS + row0 + gl) * 2u;
    let sm${u} = stats[sa${u}];
    let sl${u} = select(0.0, stats[sa${u} + 1u], c0 + ${u * LL}u < nC);`).join('\n')}
${us.map((u) => `    if (sl${u} > 0.0) ${mergeInto('mL', 'lL', `sm${u}`, `sl${u}`)}`).join('\n')}
  }
${butterfly(LL, (mask) => `  { let m2 = subgroupShuffleXor(mL, ${mask}u); let l2 = subgroupShuffleXor(lL, ${mask}u); ${mergeInto('mL', 'lL', 'm2', 'l2')} }`)}
  if (okL && lane == 0u) { ${names.lse}[gl] = select(${NEG}, mL + log(max(lL, 1.0e-30)), lL > 0.0 && mL > ${NEG_HALF}); }
${FORCED}  workgroupBarrier();
  // The candidate's score: its lanes' terms (candidate sum x exp(chunk max - lse)), then their sum.
  var s = 0.0;
${ts
  .map(
    (t) => `  {
    let lg = ${names.lse}[gc${t}];
${cu
  .map(
    (u) => `    { let live = l${t}_${u} > 0.0 && lg > ${NEG_HALF};
      let f = select(0.0, exp(select(-100.0, m${t}_${u} - lg, live)), live);
      s += select(0.0, f * a${t}_${u}, in${t}_${u}); }`,
  )
  .join('\n')}
  }`,
  )
  .join('\n')}
${butterfly(HL, (mask) => `  s += subgroupShuffleXor(s, ${mask}u);`)}
  // Forced blocks and candidates past the query's block score -1.
  let isForced = j < INITIAL || (LOCAL > 0u && j >= localLo);
  if (okI && hl == 0u) { ${names.score}[i] = select(s, -1.0, isForced || j >= nCand); }
  workgroupBarrier();
  // Rank in (score descending, index ascending), lane hl against candidates hl + HL * r; the first
  // nFree go to this workgroup's list.
  let v = ${names.score}[min(i, CPW - 1u)];
  var rank = 0u;
${
  k.wide.rankLoop
    ? `  for (var r = 0u; r < ${RC}u; r++) ${rankStep('r * HL')}`
    : Array.from({ length: RC }, (_, r) => `  ${rankStep(`${r * HL}u`)}`).join('\n')
}
${butterfly(HL, (mask) => `  rank += subgroupShuffleXor(rank, ${mask}u);`)}
  if (okI && hl == 0u && rank < nFree) { lists[(bh * PMAX + wid.x) * NSEL + rank] = vec2<f32>(v, f32(j)); }
}
`;
}

/** Workgroup memory the fold (WideChoice.fold) adds to the block choice's workgroup (bytes). */
export function foldSharedBytes(k: { readonly WG: number; readonly SMAX: number; readonly NS: number }): number {
  return 4 * 2 * 2 * k.WG + 4 * (k.SMAX - k.NS) + 16 * 2 * k.WG;
}

/** Where the fold and the subgroup block choice keep their workgroup arrays (names or accessors). */
interface ArrayNames {
  readonly lse: string;
  readonly score: string;
  readonly fW: string;
  readonly accC: (i: string) => string;
  readonly accW: (i: string) => string;
  /** Entries of fRed and fSum (one per subgroup); undefined: WG. */
  readonly subSums?: number;
}

/** Each its own array (without the window chunks' tiles to share). */
const OWN_ARRAYS: ArrayNames = { lse: 'lse', score: 'score', fW: 'fW', accC: (i) => `fAccC[${i}]`, accW: (i) => `fAccW[${i}]` };

/** Module declarations of the fold (after constants(); SMAX: dispatch 1's splits end there). */
function foldDecls(k: DecodeStepShape & { readonly WG: number }, smax: number, names: ArrayNames = OWN_ARRAYS): string {
  return `// The fold's two splits of each row (compressed, window) follow dispatch 1's: SMAX, SMAX + 1.
const SMAX = ${smax}u;
var<workgroup> fRed: array<vec2<f32>, ${names.subSums ?? k.WG}>;
var<workgroup> fSum: array<vec2<f32>, ${names.subSums ?? k.WG}>;
${names.fW === 'fW' ? `var<workgroup> fW: array<f32, ${smax - k.nSel * chunksPerBlock(k)}>;\n` : ''}${
    names.accC === OWN_ARRAYS.accC
      ? `var<workgroup> fAccC: array<vec4<f32>, ${k.WG}>;
var<workgroup> fAccW: array<vec4<f32>, ${k.WG}>;
`
      : ''
  }`;
}

/**
 * The fold workgroups (x >= the block choice's nP, one per query head of the KV head): the row's
 * compressed chunks' partials and (max, sum) merged into split SMAX, the window chunks' into SMAX + 1,
 * as the merge would weight them (per-branch max, exp(m - max) weights); the merge then reads those.
 * noWindow (WideChoice.win): the window's chunks run in this dispatch too, so only the compressed
 * ones are folded; `names` says where the workgroup arrays are (the window attend's tiles then).
 */
function foldBody(DV: number, WG: number, names: ArrayNames = OWN_ARRAYS, noWindow = false): string {
  const CW = DV / 4;
  const LN = Math.max(1, Math.floor(WG / CW));
  // Each lane's first R partials loaded before the weights (as the merge's `ahead`).
  const R = 8;
  const rs = Array.from({ length: R }, (_, i) => i);
  return `  // Fold: the workgroups past the block choice's.
  let nPw = (pos / SEL_BLOCK + CPW) / CPW;
  if (wid.x >= nPw) {
    let row = row0 + wid.x - nPw;
    let nCc = compressedChunks(pos);
    let nT = nCc${noWindow ? '' : ' + windowChunks(pos)'};
    let c = lid % ${CW}u;
    let ln = lid / ${CW}u;
${rs.map((i) => `    let fs${i} = ln + ${i * LN}u;
    let fp${i} = part[((NS + min(fs${i}, nT - 1u)) * ROWS + row) * DV4 + c];`).join('\n')}
    // Each branch's max (x: compressed, y: window) over the chunks that saw keys.
    var mx = vec2<f32>(${NEG});
    for (var s = lid; s < nT; s += WG) {
      let at = ((NS + s) * ROWS + row) * 2u;
      if (stats[at + 1u] > 0.0) {
        let m = stats[at];
        mx = max(mx, select(vec2<f32>(${NEG}, m), vec2<f32>(m, ${NEG}), s < nCc));
      }
    }
    let nsg = (WG + sgSize - 1u) / sgSize;
    let smx = subgroupMax(mx);
    if (sgLane == 0u) { fRed[lid / sgSize] = smx; }
    workgroupBarrier();
    var M = vec2<f32>(${NEG});
    for (var i = 0u; i < nsg; i++) { M = max(M, fRed[i]); }
    // Chunk weights exp(m - M) and each branch's sum.
    var sum = vec2<f32>(0.0);
    for (var s = lid; s < nT; s += WG) {
      let at = ((NS + s) * ROWS + row) * 2u;
      let l = stats[at + 1u];
      let isC = s < nCc;
      let w = select(0.0, exp(select(-100.0, stats[at] - select(M.y, M.x, isC), l > 0.0)), l > 0.0);
      ${names.fW}[s] = w;
      sum += select(vec2<f32>(0.0, w * l), vec2<f32>(w * l, 0.0), isC);
    }
    let ssum = subgroupAdd(sum);
    if (sgLane == 0u) { fSum[lid / sgSize] = ssum; }
    workgroupBarrier();
    var L = vec2<f32>(0.0);
    for (var i = 0u; i < nsg; i++) { L += fSum[i]; }
    // Column c, lane ln: every ${LN}-th chunk, weighted, into the compressed or the window sum.
    var oC = vec4<f32>(0.0);
    var oW = vec4<f32>(0.0);
    if (ln < ${LN}u) {
${rs.map((i) => `      { let w = vec4<f32>(select(0.0, ${names.fW}[min(fs${i}, nT - 1u)], fs${i} < nT)); if (fs${i} < nCc) { oC = fma(fp${i}, w, oC); } else { oW = fma(fp${i}, w, oW); } }`).join('\n')}
      for (var s = ln + ${R * LN}u; s < nT; s += ${LN}u) {
        let w = vec4<f32>(${names.fW}[s]);
        let p = part[((NS + s) * ROWS + row) * DV4 + c];
        if (s < nCc) { oC = fma(p, w, oC); } else { oW = fma(p, w, oW); }
      }
    }
    ${names.accC('lid')} = oC;
    ${names.accW('lid')} = oW;
    workgroupBarrier();
    if (lid < ${CW}u) {
      var rC = vec4<f32>(0.0);
      var rW = vec4<f32>(0.0);
      for (var i = 0u; i < ${LN}u; i++) { rC += ${names.accC(`i * ${CW}u + lid`)}; rW += ${names.accW(`i * ${CW}u + lid`)}; }
      part[(SMAX * ROWS + row) * DV4 + lid] = rC;${noWindow ? '' : `
      part[((SMAX + 1u) * ROWS + row) * DV4 + lid] = rW;`}
    }
    if (lid == 0u) {
      stats[(SMAX * ROWS + row) * 2u] = M.x;
      stats[(SMAX * ROWS + row) * 2u + 1u] = L.x;${
        noWindow
          ? ''
          : `
      stats[((SMAX + 1u) * ROWS + row) * 2u] = M.y;
      stats[((SMAX + 1u) * ROWS + row) * 2u + 1u] = L.y;`
      }
    }
    return;
  }
`;
}

/**
 * The workgroups past the block choice's (x >= its nP): compressed chunk x - nP's P·V from the
 * probabilities and values (dispatch 1 wrote its stats), into the same split of part.
 */
function splitPVBody(pv: { oh: number; T: number; S: number }, KCW: number): string {
  const { oh, T, S } = pv;
  const KPS = KCW / S;
  const hs = Array.from({ length: oh }, (_, a) => a);
  // Keys k0 + i, i < KPS (unrolled: the loads overlap); rows past count clamped, weighted 0.
  const acc = (k0: string) => `${hs.map((a) => `      var o${a} = vec4<f32>(0.0);`).join('\n')}
${Array.from(
  { length: KPS },
  (_, i) => `      { let kk = ${k0} + ${i}u; let r = min(kk, last); let v = vec4<f32>(vCmp[((b * CCAP + lo + r) * H + h) * DV4 + col]);
${hs.map((a) => `        o${a} = fma(vec4<f32>(select(0.0, probs[(row0 + g0 + ${a}u) * CCAP + lo + r], kk < count)), v, o${a});`).join('\n')} }`,
).join('\n')}`;
  const write = hs.map((a) => `part[((NS + c) * ROWS + row0 + g0 + ${a}u) * DV4 + col] = o${a};`).join(' ');
  return `  // Compressed chunks' P·V (split): the workgroups past the block choice's.
  let nPw = (pos / SEL_BLOCK + CPW) / CPW;
  if (wid.x >= nPw) {
    let c = wid.x - nPw;
    let lo = c * KCW;
    let vis = visibleCompressed(pos);
    let count = select(0u, min(KCW, vis - lo), lo < vis);
    let last = max(count, 1u) - 1u;
${
  S === 1
    ? `    for (var t = lid; t < ${T}u; t += WG) {
      let g0 = (t / DV4) * ${oh}u;
      let col = t % DV4;
${acc('0u')}
      ${write}
    }`
    : `    let t = lid % ${T}u;
    let s = min(lid / ${T}u, ${S - 1}u);
    let busy = lid < ${S * T}u;
    let g0 = (t / DV4) * ${oh}u;
    let col = t % DV4;
    {
${acc(`s * ${KPS}u`)}
      if (busy && s > 0u) {
${hs.map((a) => `        pvRed[((s - 1u) * ${T}u + t) * ${oh}u + ${a}u] = o${a};`).join('\n')}
      }
      workgroupBarrier();
      if (busy && s == 0u) {
${Array.from({ length: S - 1 }, (_, s1) => hs.map((a) => `        o${a} += pvRed[(${s1 * T}u + t) * ${oh}u + ${a}u];`).join('\n')).join('\n')}
        ${write}
      }
    }`
}
    return;
  }
`;
}

/**
 * WGSL: workgroup NS of the selected attend (decodeAttendShader's winFold) folds its KV head's rows'
 * window chunks (KWIN keys each, after the compressed chunks' splits) into split SMAX + 1 as the
 * fold's window branch: the max over the chunks that saw keys, weights exp(m - max), their sums.
 * Every (max, sum) and partial an invocation needs is loaded before any is used (one latency).
 */
function windowFold(k: DecodeStepShape & { readonly WG: number }, w: { readonly SMAX: number; readonly KWIN: number }): string {
  const WC = Math.ceil(k.window / w.KWIN);
  const n = k.G * (k.DV / 4);
  const rs = Array.from({ length: Math.ceil(n / k.WG) }, (_, r) => r);
  const cs = Array.from({ length: WC }, (_, i) => i);
  const out = `${w.SMAX + 1}u`;
  return `  if (wid.x == NS) {
    // The window chunks' partials of this KV head's rows, folded into split ${w.SMAX + 1} (winFold).
    let nW = ${windowChunksOf(w.KWIN)};
    let base = NS + compressedChunks(pos);
${rs
  .map(
    (r) => `    let x${r} = min(lid + ${r * k.WG}u, ${n - 1}u);
    let row${r} = row0 + x${r} / DV4;
    let c${r} = x${r} % DV4;
${cs
  .map(
    (i) => `    let s${r}_${i} = base + min(${i}u, nW - 1u);
    let m${r}_${i} = stats[(s${r}_${i} * ROWS + row${r}) * 2u];
    let l${r}_${i} = select(0.0, stats[(s${r}_${i} * ROWS + row${r}) * 2u + 1u], ${i}u < nW);
    let p${r}_${i} = part[(s${r}_${i} * ROWS + row${r}) * DV4 + c${r}];`,
  )
  .join('\n')}`,
  )
  .join('\n')}
${rs
  .map(
    (r) => `    if (lid + ${r * k.WG}u < ${n}u) {
      let mx = max(${cs.map((i) => `select(${NEG}, m${r}_${i}, l${r}_${i} > 0.0)`).reduce((a, b) => `max(${a}, ${b})`)}, ${NEG});
${cs.map((i) => `      let w${i} = select(0.0, exp(select(-100.0, m${r}_${i} - mx, l${r}_${i} > 0.0)), l${r}_${i} > 0.0);`).join('\n')}
      part[(${out} * ROWS + row${r}) * DV4 + c${r}] = ${cs.map((i) => `vec4<f32>(w${i}) * p${r}_${i}`).join(' + ')};
      if (c${r} == 0u) {
        stats[(${out} * ROWS + row${r}) * 2u] = mx;
        stats[(${out} * ROWS + row${r}) * 2u + 1u] = ${cs.map((i) => `w${i} * l${r}_${i}`).join(' + ')};
      }
    }`,
  )
  .join('\n')}
  }
`;
}

/**
 * The wide block choice, part 2 (in the selected attend's workgroups, BlockChoiceKernel.wide):
 * the final top-n from the lists of decodeChoiceWideShader, then the forced blocks and the sorted
 * write as blockChoice. The global top-nFree is in the union of the lists (each holds its
 * workgroup's top-nFree), so an entry is chosen when fewer than nFree entries are ahead of it.
 */
function blockChoiceMerge(
  k: BlockChoiceKernel & { readonly wide: WideChoice },
  write: (at: string, v: string) => string,
): { decls: string; body: string; pre?: string; after?: string } {
  const { CPW, PMAX } = k.wide;
  // Binary-search steps over a list: halving from the largest power of two whose steps sum to >= nSel.
  const steps: number[] = [];
  for (let st = 2 ** Math.ceil(Math.log2((k.nSel + 1) / 2)); st >= 1; st /= 2) steps.push(st);
  const search = Array.from(
    { length: PMAX },
    (_, l) => `      {
        var c = 0u;
${steps.map((st) => `        { let p = c + ${st}u; let a = lst[${l * k.nSel}u + min(p, NSEL) - 1u]; c = select(c, p, p <= nFree && ahead(a, me)); }`).join('\n')}
        rank += select(0u, c, ${l}u < nP);
      }`,
  ).join('\n');
  // slots: the same searches step by step across the lists (each step's PMAX loads are independent
  // and in flight together: one shared-memory latency per step, not per step and list).
  const ls = Array.from({ length: PMAX }, (_, l) => l);
  // (searchLoop: the steps in a loop, the lists unrolled in it: less code to fetch, the same latencies,
  // and no step past nFree.)
  const stepCode = (st: string, sfx: string) => `${ls.map((l) => `      let a${l}${sfx} = lst[${l * k.nSel}u + min(c${l} + ${st}, NSEL) - 1u];`).join('\n')}
${ls.map((l) => `      c${l} = select(c${l}, c${l} + ${st}, c${l} + ${st} <= nFree && ahead(a${l}${sfx}, me));`).join('\n')}`;
  const searchByStep = `${ls.map((l) => `      var c${l} = 0u;`).join('\n')}
${
  k.wide.searchLoop
    ? `      // From the largest power of two up to nFree (a count below its double).
      for (var st = 1u << firstLeadingBit(max(nFree, 1u)); st > 0u; st >>= 1u) {
${stepCode('st', '').replace(/^(?=.)/gm, '  ')}
      }`
    : steps.map((st) => stepCode(`${st}u`, `_${st}`)).join('\n')
}
      let rank = ${ls.map((l) => `select(0u, c${l}, ${l}u < nP)`).join(' + ')};`;
  const decls = `const CPW = ${CPW}u;
const PMAX = ${PMAX}u;
const INITIAL = ${k.initialBlocks}u;
const LOCAL = ${k.localBlocks}u;
// The wide block choice's lists of this KV head, [list, NSEL] of (score, index); score -1: none.
var<workgroup> lst: array<vec2<f32>, ${PMAX * k.nSel}>;
var<workgroup> chosen: array<i32, ${k.nSel}>;

// Whether entry a is ahead of entry b (score descending, index ascending).
fn ahead(a: vec2<f32>, b: vec2<f32>) -> bool {
  return a.x > b.x || (a.x == b.x && a.y < b.y);
}
`;
  const head = `  let cur = pos / SEL_BLOCK;
  let nCand = cur + 1u;
${FORCED}  let nP = (nCand + CPW - 1u) / CPW;
  let list0 = (b * H + h) * PMAX * NSEL;
`;
  const forcedChosen = `  for (var x = lid; x < min(forced, NSEL); x += WG) { chosen[x] = i32(select(localLo + x - nInit, x, x < nInit)); }`;
  if (!k.wide.slots) {
    const body = `${head}  for (var x = lid; x < nP * nFree; x += WG) {
    let e = (x / nFree) * NSEL + x % nFree;
    lst[e] = lists[list0 + e];
  }
${forcedChosen}
  workgroupBarrier();
  // An entry is chosen when fewer than nFree entries of all lists are ahead of it: each sorted list's
  // count by binary search over its first nFree, the lists unrolled (no divergent scans).
  for (var x = lid; x < nP * nFree; x += WG) {
    let me = lst[(x / nFree) * NSEL + x % nFree];
    if (me.x > -0.5) {
      var rank = 0u;
${search}
      if (rank < nFree) { chosen[forced + rank] = i32(me.y); }
    }
  }
  workgroupBarrier();
${sortedWrite(write)}`;
    return { decls, body };
  }
  // slots: the lists' entries are loaded before the queries (one memory latency for both), and the
  // workgroups of selected place s take chosen[s] (forced places first, then the free ones by rank)
  // instead of the sorted list's entry s: no sort before the gathers. Workgroup x = NS (one extra
  // per KV head, no keys) writes the sorted list to blocks.
  const n = PMAX * k.nSel;
  const rounds = Array.from({ length: Math.ceil(n / k.WG) }, (_, r) => r);
  const pre = `  // The block lists' entries of this KV head, loaded ahead (entry x of the lists' first nFree each).
${head}  let nF1 = max(nFree, 1u);
${rounds.map((r) => `  let lsX${r} = lid + ${r * k.WG}u;
  let lsE${r} = lists[list0 + min((lsX${r} / nF1) * NSEL + lsX${r} % nF1, ${n - 1}u)];`).join('\n')}
`;
  const body = `${rounds.map((r) => `  if (lsX${r} < nP * nFree) { lst[(lsX${r} / nF1) * NSEL + lsX${r} % nF1] = lsE${r}; }`).join('\n')}
${forcedChosen}
  // This workgroup's place: a forced block's now, a free one's from the ranking below (-1 past total).
  let slot = wid.x / CPB;
  if (lid == 0u && slot < NSEL) { sel[slot] = select(-1, i32(select(localLo + slot - nInit, slot, slot < nInit)), slot < forced); }
  workgroupBarrier();
  // An entry is chosen when fewer than nFree entries of all lists are ahead of it: each sorted list's
  // count by binary search over its first nFree, the lists unrolled (no divergent scans).
  // (Each invocation ranks the entries it loaded.)
${rounds
  .map(
    (r) => `  {
    let me = lsE${r};
    if (lsX${r} < nP * nFree && me.x > -0.5) {
${searchByStep}
      if (rank < nFree) {
        chosen[forced + rank] = i32(me.y);
        if (forced + rank == slot) { sel[slot] = i32(me.y); }
      }
    }
  }`,
  )
  .join('\n')}
`;
  const after = `  if (wid.x == NS) {
${sortedWrite((at, v) => `blocks[out + ${at}] = ${v};`).replace(/^(?=.)/gm, '  ')}    return;
  }
`;
  return { decls, body, pre, after };
}

/**
 * The block choice's WGSL (decodeSelectShader says what it does): module declarations that follow
 * constants(), and main's statements after pos, b, h and row0; `write(at, v)` stores the sorted
 * block list's entry at (with \`out\` its row's start in blocks).
 */
function blockChoice(k: BlockChoiceKernel, write: (at: string, v: string) => string): { decls: string; body: string } {
  const { G, WG } = k;
  const perCmp = k.cmpBlock / k.cmpStride;
  const perSel = k.selBlock / k.cmpStride;
  const gu = [16, 8, 4, 2, 1].find((u) => G % u === 0 && u * (perSel + perCmp - 1) <= 96) ?? 1;
  const lanes = k.lanes ?? Math.min(64, Math.max(1, Math.floor(WG / G)));
  const nLists = Math.ceil(WG / Math.max(1, k.minSubgroup));
  const rawScores = `  // Candidate scores: the overlap-weighted probabilities of the compressed blocks, summed over heads
  // (heads and overlapping blocks unrolled, so the loads of one candidate are all in flight).
  for (var j = lid; j < nCand; j += WG) {
    let iBase = j * PER_SEL + 1u;
    var s = 0.0;
${candidateTerms(gu, perSel + perCmp - 1)}`;
  const { NCJ } = candidateGeometry(k);
  const cu = Array.from({ length: NCJ }, (_, u) => u);
  const gc = [16, 8, 4, 2, 1].find((u) => G % u === 0 && u * NCJ <= 32) ?? 1;
  const gcs = Array.from({ length: gc }, (_, gi) => gi);
  const candScores = `  // Each head's chunk factors exp(max - lse) (0 for chunks without keys or heads without lse).
  for (var x = lid; x < G * nC; x += WG) {
    let g = x / nC;
    let c = x % nC;
    let at = ((NS + c) * ROWS + row0 + g) * 2u;
    let lg = lse[g];
    let live = stats[at + 1u] > 0.0 && lg > ${NEG_HALF};
    factor[g * NCH + c] = select(0.0, exp(select(-100.0, stats[at] - lg, live)), live);
  }
  workgroupBarrier();
  // Candidate scores: the chunks' candidate sums scaled by their factors, summed over the (at most
  // NCJ) chunks the block's compressed blocks lie in and over heads, ${gc} heads unrolled.
  for (var j = lid; j < nCand; j += WG) {
    let cA = (max(j * PER_SEL + 1u, PER_CMP) - PER_CMP) / KCW;
    let cLast = (j * PER_SEL + PER_SEL - 1u) / KCW;
${cu.map((u) => `    let in${u} = cA + ${u}u < nC && cA + ${u}u <= cLast;
    let c${u} = select(0u, cA + ${u}u, in${u});
    let t${u} = select(0u, j - (c${u} * KCW) / PER_SEL, in${u});`).join('\n')}
    var s = 0.0;
    for (var g0 = 0u; g0 < G; g0 += ${gc}u) {
${gcs.flatMap((gi) => cu.map((u) => `      let a${gi}_${u} = cand[((row0 + g0 + ${gi}u) * NCH + c${u}) * NJ + t${u}];`)).join('\n')}
${gcs.flatMap((gi) => cu.map((u) => `      s += select(0.0, factor[(g0 + ${gi}u) * NCH + c${u}] * a${gi}_${u}, in${u});`)).join('\n')}
    }`;
  const topN = k.subgroups
    ? `  // Each subgroup's own top-nFree: every invocation keeps the best of its candidates that is worse
  // than the last one it gave up (no marks, no barrier), the subgroup takes the best of those.
  let sg = lid / sgSize;
  var own = ownBest(lid, nCand, 1.0e30, 0u);
  for (var r = 0u; r < nFree; r++) {
    let m = subgroupMax(own.v);
    let wi = subgroupMin(select(NONE, own.i, own.v == m));
    if (sgLane == 0u) { listV[sg * NSEL + r] = m; listI[sg * NSEL + r] = wi; }
    if (wi != NONE && own.i == wi) { own = ownBest(lid, nCand, own.v, own.i); }
  }
  workgroupBarrier();
  // An entry is chosen when fewer than nFree entries of all lists are ahead of it (each list is
  // sorted, so its scan stops at the first entry not ahead, and the count stops at nFree: the
  // entries far behind would otherwise scan most lists whole).
  let nsg = (WG + sgSize - 1u) / sgSize;
${rankLists('nsg')}`
    : TOP_N_ROUNDS_TREE;
  const decls = `const NSMAX = ${k.NSMAX}u;
const LANES = ${lanes}u;
${
  k.cand
    ? candidateConstants(k)
    : `const PER_CMP = ${perCmp}u;
const PER_SEL = ${perSel}u;
`
}const GU = ${gu}u;
const INITIAL = ${k.initialBlocks}u;
const LOCAL = ${k.localBlocks}u;
const NONE = 0xffffffffu;
var<workgroup> redM: array<f32, ${Math.max(WG, G * lanes)}>;
var<workgroup> redL: array<f32, ${Math.max(WG, G * lanes)}>;
var<workgroup> lse: array<f32, ${G}>;
var<workgroup> score: array<f32, ${k.NSMAX}>;${
  k.cand
    ? `
// exp(max - lse) of each head's compressed chunks, [G, NCH] (0 for chunks without keys).
var<workgroup> factor: array<f32, ${G * candidateGeometry(k).NCH}>;`
    : ''
}
${
  k.subgroups
    ? `// Each subgroup's top-nFree, best first, [subgroup, NSEL].
var<workgroup> listV: array<f32, ${nLists * k.nSel}>;
var<workgroup> listI: array<u32, ${nLists * k.nSel}>;`
    : `var<workgroup> redV: array<f32, ${WG}>;
var<workgroup> redI: array<u32, ${WG}>;`
}
var<workgroup> chosen: array<i32, ${k.nSel}>;

${k.cand ? '' : `// Sub-blocks shared by compressed block i and selection block j.
fn overlap(i: u32, j: u32) -> f32 {
  let lo = max(i, j * PER_SEL);
  let hi = min(i + PER_CMP, (j + 1u) * PER_SEL);
  return select(0.0, f32(hi - lo), hi > lo);
}
`}
struct Best { v: f32, i: u32 }

// The best free candidate j = lid + r * WG (score > -0.5) behind (lastV, lastI) in the order
// (score descending, index ascending); v = -0.5 and i = NONE when there is none.
fn ownBest(lid: u32, nCand: u32, lastV: f32, lastI: u32) -> Best {
  var best = Best(-0.5, NONE);
  for (var j = lid; j < nCand; j += WG) {
    let s = score[j];
    if (s > best.v && (s < lastV || (s == lastV && j > lastI))) { best = Best(s, j); }
  }
  return best;
}
`;
  const body = `  let nVis = visibleCompressed(pos);
  let nC = compressedChunks(pos);
  let cur = pos / SEL_BLOCK;
  let nCand = cur + 1u;
${lseMerge(G, WG, lanes)}${FORCED}${k.cand ? candScores : rawScores}
    let isInit = j < INITIAL;
    let isForced = isInit || (LOCAL > 0u && j >= localLo);
    let slot = select(nInit + j - localLo, j, isInit);
    if (isForced && slot < NSEL) { chosen[slot] = i32(j); }
    score[j] = select(s, -1.0, isForced);
  }
  workgroupBarrier();
${topN}
  workgroupBarrier();
${sortedWrite(write)}`;
  return { decls, body };
}

/**
 * Each head's compression lse into lse[G] (then a barrier): LANES invocations per head merge every
 * LANES-th compressed chunk's (max, sum) online, then one invocation per head merges its lanes.
 * Needs nC, and redM and redL [max(WG, G * LANES)]. `unroll` > 1 loads that many chunks of a lane
 * before merging them (in the same order, so the lse is the same bits).
 */
function lseMerge(G: number, WG: number, lanes: number, unroll = 1): string {
  // The lse's (head, lane) pairs outnumber the invocations: each invocation takes several.
  const loop = G * lanes > WG;
  const laneIdx = Array.from({ length: lanes }, (_, i) => i);
  const us = Array.from({ length: unroll }, (_, u) => u);
  const chunkLoop =
    unroll > 1
      ? `  for (var c0 = lane; c0 < nC && ok; c0 += ${unroll}u * LANES) {
${us.map((u) => `    let at${u} = ((NS + min(c0 + ${u}u * LANES, nC - 1u)) * ROWS + row0 + gl) * 2u;
    let mc${u} = stats[at${u}];
    let lc${u} = select(0.0, stats[at${u} + 1u], c0 + ${u}u * LANES < nC);`).join('\n')}
${us.map((u) => `    if (lc${u} > 0.0) {
      let mn = max(mLoc, mc${u});
      lLoc = lLoc * exp(mLoc - mn) + lc${u} * exp(mc${u} - mn);
      mLoc = mn;
    }`).join('\n')}
  }`
      : `  for (var c = lane; c < nC && ok; c += LANES) {
    let at = ((NS + c) * ROWS + row0 + gl) * 2u;
    let mc = stats[at];
    let lc = stats[at + 1u];
    if (lc > 0.0) {
      let mn = max(mLoc, mc);
      lLoc = lLoc * exp(mLoc - mn) + lc * exp(mc - mn);
      mLoc = mn;
    }
  }`;
  return `  // lse of each head: LANES invocations per head merge every LANES-th chunk's (max, sum) online.
${loop ? `  for (var v = lid; v < G * LANES; v += WG) {\n  let gl = v / LANES;\n  let lane = v % LANES;` : `  let gl = lid / LANES;
  let lane = lid % LANES;`}
  let ok = gl < G;
  var mLoc = ${NEG};
  var lLoc = 0.0;
${chunkLoop}
  redM[${loop ? 'v' : 'lid'}] = mLoc;
  redL[${loop ? 'v' : 'lid'}] = lLoc;
${loop ? '  }\n' : ''}  workgroupBarrier();
  ${loop ? 'for (var gl = lid; gl < G; gl += WG) {' : 'if (ok && lane == 0u) {'}
${laneIdx.map((i) => `    let m${i} = redM[gl * LANES + ${i}u];`).join('\n')}
    let m = max(${laneIdx.map((i) => `m${i}`).reduce((a, x) => `max(${a}, ${x})`)}, ${NEG});
    let l = ${laneIdx.map((i) => `redL[gl * LANES + ${i}u] * exp(m${i} - m)`).join(' + ')};
    lse[gl] = select(${NEG}, m + log(max(l, 1.0e-30)), l > 0.0 && m > ${NEG_HALF});
  }
  workgroupBarrier();
`;
}

/** The forced blocks' counts and the free places (after lseMerge's cur and nCand). */
const FORCED = `  // The forced blocks: the first INITIAL and the LOCAL ending at the query's block, at fixed places
  // of chosen (the order does not matter: chosen is sorted at the end). A score of -1 excludes them.
  let nInit = min(INITIAL, nCand);
  let localLo = max(select(0u, cur + 1u - LOCAL, cur + 1u > LOCAL), INITIAL);
  let nLocal = select(0u, cur + 1u - localLo, LOCAL > 0u && cur + 1u > localLo);
  let forced = nInit + nLocal;
  let total = min(NSEL, nCand);
  let nFree = select(0u, total - forced, total > forced);
`;

/**
 * An entry of the sorted lists listV / listI [list, NSEL] (index NONE: empty) is chosen when fewer
 * than nFree entries of all lists are ahead of it; it goes to chosen[forced + rank].
 */
function rankLists(nLists: string): string {
  return `  for (var x = lid; x < ${nLists} * nFree; x += WG) {
    let e = (x / nFree) * NSEL + x % nFree;
    let v = listV[e];
    let i = listI[e];
    if (i != NONE) {
      var rank = 0u;
      for (var l = 0u; l < ${nLists} && rank < nFree; l++) {
        for (var r = 0u; r < nFree; r++) {
          let v2 = listV[l * NSEL + r];
          let i2 = listI[l * NSEL + r];
          if (!(v2 > v || (v2 == v && i2 < i))) { break; }
          rank++;
        }
      }
      if (rank < nFree) { chosen[forced + rank] = i32(i); }
    }
  }`;
}

/** chosen[0 .. total) sorted ascending by counting, then -1 padding, stored through `write`. */
function sortedWrite(write: (at: string, v: string) => string): string {
  return `  // chosen[0 .. total) ascending by counting, then -1 padding.
  let out = (b * H + h) * NSEL;
  for (var x = lid; x < NSEL; x += WG) {
    if (x < total) {
      let v = chosen[x];
      var rank = 0u;
      for (var y = 0u; y < total; y++) { rank += select(0u, 1u, chosen[y] < v); }
      ${write('rank', 'v')}
    } else {
      ${write('x', '-1')}
    }
  }
`;
}

/**
 * The previous block choice (env NSA_WEBGPU_DECODE_SELECT=previous): lse in two passes over the
 * stats, forced blocks and the final insertion sort by one invocation, top-n rounds with a
 * workgroup barrier each. Same results as decodeSelectShader.
 */
export function decodeSelectShaderPrevious(
  k: DecodeStepShape & { readonly WG: number; readonly NSMAX: number; readonly initialBlocks: number; readonly localBlocks: number; readonly subgroups: boolean },
): string {
  const { G, WG } = k;
  const perCmp = k.cmpBlock / k.cmpStride;
  const perSel = k.selBlock / k.cmpStride;
  // Unroll the candidate scores over up to 16 heads at a time (a divisor of G).
  const gu = [16, 8, 4, 2, 1].find((u) => G % u === 0 && u * (perSel + perCmp - 1) <= 96) ?? 1;
  // Invocations per head merging the compressed chunks' stats (their scans below are unrolled).
  const lanes = Math.min(64, Math.max(1, Math.floor(WG / G)));
  const laneIdx = Array.from({ length: lanes }, (_, i) => i);
  const roundsSubgroup = topNRoundsSubgroup(
    `    // Every subgroup reduces the winners itself, its lanes reading the slots in parallel.
    var bv = -0.5;
    var bi = 0xffffffffu;
    for (var s = sgLane; s < nsg; s += sgSize) {
      let v2 = redV[base + s];
      let i2 = redI[base + s];
      if (v2 > bv || (v2 == bv && i2 < bi)) { bv = v2; bi = i2; }
    }
    let wv = subgroupMax(bv);
    let wi = subgroupMin(select(0xffffffffu, bi, bv == wv));`,
    'wi',
  );
  return `${k.subgroups ? 'enable subgroups;\n' : ''}${paramsStruct()}
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> scores: array<f32>;
@group(0) @binding(3) var<storage, read_write> blocks: array<i32>;
${constants(k, WG)}
const NSMAX = ${k.NSMAX}u;
const LANES = ${lanes}u;
const PER_CMP = ${perCmp}u;
const PER_SEL = ${perSel}u;
// Compressed blocks that can overlap one selection block.
const SPAN = ${perSel + perCmp - 1}u;
// Heads per unrolled step of the candidate scores (divides G).
const GU = ${gu}u;
const INITIAL = ${k.initialBlocks}u;
const LOCAL = ${k.localBlocks}u;
var<workgroup> red: array<f32, ${WG}>;
var<workgroup> lse: array<f32, ${G}>;
var<workgroup> score: array<f32, ${k.NSMAX}>;
var<workgroup> redV: array<f32, ${2 * WG}>;
var<workgroup> redI: array<u32, ${2 * WG}>;
var<workgroup> chosen: array<i32, ${k.nSel}>;
var<workgroup> nChosen: u32;

// Sub-blocks shared by compressed block i and selection block j.
fn overlap(i: u32, j: u32) -> f32 {
  let lo = max(i, j * PER_SEL);
  let hi = min(i + PER_CMP, (j + 1u) * PER_SEL);
  return select(0.0, f32(hi - lo), hi > lo);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${k.subgroups ? ', @builtin(subgroup_size) sgSize: u32, @builtin(subgroup_invocation_id) sgLane: u32' : ''}) {
  let pos = P.qRowLo;
  let b = wid.x / H;
  let h = wid.x % H;
  let row0 = b * HQ + h * G;
  let nVis = visibleCompressed(pos);
  let nC = compressedChunks(pos);
  let cur = pos / SEL_BLOCK;
  let nCand = cur + 1u;
  // lse of each head: LANES invocations per head merge every LANES-th chunk's (max, sum).
  let gl = lid / LANES;
  let lane = lid % LANES;
  let ok = gl < G;
  var mLoc = ${NEG};
  for (var c = lane; c < nC && ok; c += LANES) {
    let at = ((NS + c) * ROWS + row0 + gl) * 2u;
    if (stats[at + 1u] > 0.0) { mLoc = max(mLoc, stats[at]); }
  }
  red[lid] = mLoc;
  workgroupBarrier();
  var m = ${NEG};
  if (ok) {
${laneIdx.map((i) => `    let r${i} = red[gl * LANES + ${i}u];`).join('\n')}
    m = max(m, ${laneIdx.map((i) => `r${i}`).reduce((a, x) => `max(${a}, ${x})`)});
  }
  var lLoc = 0.0;
  for (var c = lane; c < nC && ok; c += LANES) {
    let at = ((NS + c) * ROWS + row0 + gl) * 2u;
    let l = stats[at + 1u];
    if (l > 0.0) { lLoc += l * exp(stats[at] - m); }
  }
  workgroupBarrier();
  red[lid] = lLoc;
  workgroupBarrier();
  if (ok && lane == 0u) {
    let l = ${laneIdx.map((i) => `red[gl * LANES + ${i}u]`).join(' + ')};
    lse[gl] = select(${NEG}, m + log(max(l, 1.0e-30)), l > 0.0 && m > ${NEG_HALF});
  }
  workgroupBarrier();
  // Candidate scores: the overlap-weighted probabilities of the compressed blocks, summed over heads
  // (heads and overlapping blocks unrolled, so the loads of one candidate are all in flight).
  for (var j = lid; j < nCand; j += WG) {
    let iBase = j * PER_SEL + 1u;
    var s = 0.0;
${candidateTerms(gu, perSel + perCmp - 1)}
    score[j] = s;
  }
  workgroupBarrier();
  // Forced blocks first; a score of -1 marks a block as taken.
  if (lid == 0u) {
    var n = 0u;
    for (var j = 0u; j < min(INITIAL, nCand); j++) { chosen[n] = i32(j); score[j] = -1.0; n++; }
    let localLo = select(0u, cur + 1u - LOCAL, cur + 1u > LOCAL);
    for (var j = max(localLo, INITIAL); j <= cur && LOCAL > 0u; j++) { chosen[n] = i32(j); score[j] = -1.0; n++; }
    nChosen = n;
  }
  let forced = workgroupUniformLoad(&nChosen);
  let total = min(NSEL, nCand);
${k.subgroups ? roundsSubgroup : TOP_N_ROUNDS_TREE}
  if (lid == 0u) {
    // Insertion sort of at most n entries, then -1 padding.
    for (var a = 1u; a < total; a++) {
      let v = chosen[a];
      var c = a;
      while (c > 0u && chosen[c - 1u] > v) { chosen[c] = chosen[c - 1u]; c--; }
      chosen[c] = v;
    }
    let out = (b * H + h) * NSEL;
    for (var s = 0u; s < NSEL; s++) { blocks[out + s] = select(-1, chosen[s], s < total); }
  }
}
`;
}

/**
 * out[row] = Σ_branch gate · (Σ_split exp(m_s - M) part_s) / (Σ_split exp(m_s - M) l_s): one
 * workgroup per output row; per-branch max and sum by tree reductions, then LN lanes per column.
 */
export function decodeMergeShader(
  k: DecodeStepShape & { readonly WG: number; readonly SMAX: number; readonly subgroups?: boolean; readonly ahead?: boolean; readonly cols?: number; readonly fold?: boolean; readonly win?: number },
): string {
  const { e, DV, WG } = k;
  // fold (WideChoice.fold): the compressed and window branches are one split each, at SMAX and
  // SMAX + 1: split s < NS + 2 of the loops below is stored at splitAt(s). With win (WideChoice.win)
  // the window's chunks (of win keys) were not folded: split NS is the compressed one at SMAX, splits
  // NS + 1 .. are the window chunks' own (after the compressed chunks' in dispatch 1's layout).
  const win = k.fold === true && (k.win ?? 0) > 0 ? k.win! : 0;
  const at = (sv: string) => (k.fold ? `splitAt(${sv})` : sv);
  // cols > 1: workgroup (row, slice) writes CW = DV / 4 / cols vec4 columns of its row (each repeats
  // the row's weights, the same bits): a row's partials are read by cols workgroups, not one.
  const cols = k.cols ?? 1;
  const CW = DV / 4 / cols;
  const LN = Math.max(1, Math.floor(WG / CW));
  const col0 = cols > 1 ? `wid.y * ${CW}u + ` : '';
  const UNROLL = 4;
  // ahead: each lane's first R partials are loaded before the weights (their latency hides under
  // the stats' reductions; clamped to a valid split, weighted 0 past total).
  // (With fold, at most NS + 2 splits.)
  const R = k.ahead ? Math.min(16, Math.ceil((k.fold ? k.nSel * chunksPerBlock(k) + 1 + (win ? Math.ceil(k.window / win) : 1) : k.SMAX) / LN)) : 0;
  const rs = Array.from({ length: R }, (_, i) => i);
  // Weight of split s as the output loop reads it (ahead: scaled there, one barrier fewer).
  const wAt = (sv: string) => (R ? `weight[min(${sv}, total - 1u)] * pick(coef, branchOf(min(${sv}, total - 1u), nC))` : `weight[min(${sv}, total - 1u)]`);
  // Branch of split s as an index into vec4 lanes: 1 = selected, 0 = compressed, 2 = window (gate order).
  return `${enableF16(e)}${k.subgroups ? 'enable subgroups;\n' : ''}${paramsStruct()}
@group(0) @binding(1) var<storage, read> part: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> gates: array<${e}>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<${e}>>;
${constants(k, WG)}
const SMAX = ${k.SMAX}u;
const LN = ${LN}u;
var<workgroup> red: array<vec4<f32>, ${WG}>;
var<workgroup> weight: array<f32, ${k.SMAX}>;
var<workgroup> acc: array<vec4<f32>, ${WG}>;${
    R && k.subgroups
      ? `
// The subgroups' branch sums (acc is written while they may still be read).
var<workgroup> sums: array<vec4<f32>, ${WG}>;`
      : ''
  }

${
  k.fold
    ? `fn splitAt(s: u32) -> u32 {
  return ${win ? 'select(select(s - 1u + compressedChunks(P.qRowLo), SMAX, s == NS), s, s < NS)' : 'select(SMAX + s - NS, s, s < NS)'};
}

`
    : ''
}fn branchOf(s: u32, nC: u32) -> u32 {
  return select(select(2u, 0u, s < NS + nC), 1u, s < NS);
}

fn pick(v: vec4<f32>, i: u32) -> f32 {
  return select(select(v.z, v.y, i == 1u), v.x, i == 0u);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${k.subgroups ? ', @builtin(subgroup_size) sgSize: u32, @builtin(subgroup_invocation_id) sgLane: u32' : ''}) {
  let pos = P.qRowLo;
  let row = wid.x;
${
    k.fold
      ? `  // The folded branches: one compressed split, ${win ? "the window's chunks" : 'one window split'}.
  let nC = 1u;
  let total = NS + ${win ? `1u + ${windowChunksOf(win)}` : '2u'};`
      : `  let nC = compressedChunks(pos);
  let total = NS + nC + windowChunks(pos);`
  }${
    R
      ? `
  let c = ${col0}lid % ${CW}u;
  let ln = lid / ${CW}u;
${rs.map((i) => `  let sa${i} = ln + ${i * LN}u;
  let pa${i} = part[(${at(`min(sa${i}, total - 1u)`)} * ROWS + row) * DV4 + c];`).join('\n')}`
      : ''
  }
  // Per-branch max over the splits that saw keys.
  var mx = vec4<f32>(${NEG});
  for (var s = lid; s < total; s += WG) {
    let at = (${at('s')} * ROWS + row) * 2u;
    if (stats[at + 1u] > 0.0) {
      let bi = branchOf(s, nC);
      let m = stats[at];
      mx = max(mx, select(vec4<f32>(${NEG}), vec4<f32>(m), vec4<u32>(0u, 1u, 2u, 3u) == vec4<u32>(bi)));
    }
  }
${
  k.subgroups
    ? `  // Subgroup maxima, then every invocation reads the subgroups' (two barriers fewer than log2 WG).
  let nsg = (WG + sgSize - 1u) / sgSize;
  let smx = subgroupMax(mx);
  if (sgLane == 0u) { red[lid / sgSize] = smx; }
  workgroupBarrier();
  var M = vec4<f32>(${NEG});
  for (var i = 0u; i < nsg; i++) { M = max(M, red[i]); }`
    : `  red[lid] = mx;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { red[lid] = max(red[lid], red[lid + stride]); }
    workgroupBarrier();
  }
  let M = red[0];
  workgroupBarrier();`
}
  // Split weights exp(m - M) and each branch's sum.
  var sum = vec4<f32>(0.0);
  for (var s = lid; s < total; s += WG) {
    let at = (${at('s')} * ROWS + row) * 2u;
    let l = stats[at + 1u];
    let bi = branchOf(s, nC);
    let w = select(0.0, exp(select(-100.0, stats[at] - pick(M, bi), l > 0.0)), l > 0.0);
    weight[s] = w;
    sum += select(vec4<f32>(0.0), vec4<f32>(w * l), vec4<u32>(0u, 1u, 2u, 3u) == vec4<u32>(bi));
  }
${
  k.subgroups
    ? `  let ssum = subgroupAdd(sum);
  if (sgLane == 0u) { ${R ? 'sums' : 'acc'}[lid / sgSize] = ssum; }
  workgroupBarrier();
  var L = vec4<f32>(0.0);
  for (var i = 0u; i < nsg; i++) { L += ${R ? 'sums' : 'acc'}[i]; }${
    R
      ? ''
      : `
  // acc is written again below, after the barrier that publishes the weights.`
  }`
    : `  red[lid] = sum;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { red[lid] = red[lid] + red[lid + stride]; }
    workgroupBarrier();
  }
  let L = red[0];`
}
  let gate = vec4<f32>(f32(gates[row * 3u]), f32(gates[row * 3u + 1u]), f32(gates[row * 3u + 2u]), 0.0);
  let coef = select(vec4<f32>(0.0), gate / max(L, vec4<f32>(1.0e-30)), L > vec4<f32>(0.0));
${
    R
      ? `  // The weights (published by the barrier above) are scaled by their branch's coefficient where they are read.
`
      : `  // Each invocation scales its own weights (no barrier needed before), then all read them.
  for (var s = lid; s < total; s += WG) { weight[s] *= pick(coef, branchOf(s, nC)); }
  workgroupBarrier();
`
  }  // Column c, lane ln: every LN-th split, ${UNROLL} loads in flight.${
    R
      ? ''
      : `
  let c = ${col0}lid % ${CW}u;
  let ln = lid / ${CW}u;`
  }
  var o = vec4<f32>(0.0);
  if (ln < LN) {
${rs.map((i) => `    o = fma(pa${i}, vec4<f32>(select(0.0, ${wAt(`sa${i}`)}, sa${i} < total)), o);`).join('\n')}${R ? '\n' : ''}    for (var s0 = ln + ${R * LN}u; s0 < total; s0 += ${UNROLL}u * LN) {
${Array.from({ length: UNROLL }, (_, u) => `      let s${u} = s0 + ${u}u * LN;
      let p${u} = select(vec4<f32>(0.0), part[(${at(`min(s${u}, total - 1u)`)} * ROWS + row) * DV4 + c], s${u} < total);`).join('\n')}
${Array.from({ length: UNROLL }, (_, u) => `      o = fma(p${u}, vec4<f32>(select(0.0, ${wAt(`s${u}`)}, s${u} < total)), o);`).join('\n')}
    }
  }
  acc[lid] = o;
  workgroupBarrier();
  if (lid < ${CW}u) {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < LN; i++) { r += acc[i * ${CW}u + lid]; }
    out[row * DV4 + ${col0}lid] = vec4<${e}>(r);
  }
}
`;
}
