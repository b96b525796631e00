// Dispatch 1 of the one-query decode step (shaders/decode-step.ts) on wide chunks: each workgroup
// takes KCW compressed or window keys (64 where they fit and leave enough workgroups) for the G
// heads of one KV head, so there are fewer partials for the block choice and the merge to read.
//
// All global loads of the workgroup (its queries, keys and values) are issued first. Where the key
// and value tiles do not both fit workgroup memory, the values wait in registers and take the key
// tile's place once the scores are done (the scores and softmax overlap the values' loads). The
// scores and P·V run on register tiles (2 heads x 1 key or column by default: larger tiles leave
// too few invocations busy), and each head's softmax statistics are reduced by L lanes instead of
// one invocation per head. By default (regPV) the P·V runs on the values' registers instead of a
// value tile, and (loop) fewer workgroups each take several chunks in turn. Where the adapter has
// one subgroup size (regScores) the scores come from the keys' registers: no key tile, the lanes of
// a key row sum their partial dot products by subgroup shuffles.
import { NEG, NEG_HALF, enableF16, paramsStruct } from './common.js';
import { candidateConstants, candidateSums, constants, cwChunk, unrolled, type DecodeStepShape } from './decode-step.js';

/** Register tiles: scores rh heads x rk keys, P·V oh heads x oc vec4 columns per invocation. */
export interface WideTile {
  readonly rh: number;
  readonly rk: number;
  readonly oh: number;
  readonly oc: number;
}

export interface WideAttendKernel extends DecodeStepShape {
  readonly KCW: number;
  readonly WG: number;
  /** Write candidate sums (candidateGeometry) instead of the raw compressed scores. */
  readonly cand: boolean;
  readonly tile: WideTile;
  /** The values wait in registers and take the keys' tile (wideAttendShared). */
  readonly shared: boolean;
  /**
   * Compressed chunks read their keys only and write their probabilities (relative to the chunk's
   * max) to probs [rows, CCAP] (binding 3, in vCmp's place); their P·V runs in the wide block
   * choice's dispatch (decodeChoiceWideShader's `split`). Window chunks as before.
   */
  readonly split?: boolean;
  /**
   * P·V on the values' registers (regPVLayout, where it fits): no value tile; each invocation's
   * partial sums over its keys meet in the keys' tile, HR heads at a time.
   */
  readonly regPV?: boolean;
  /**
   * Workgroups per (sequence, KV head): each takes chunks wid.x, wid.x + loop, ... in turn (the
   * queries loaded once) instead of one chunk per workgroup. Unset: one chunk each.
   */
  readonly loop?: number;
  /**
   * Scores from the keys' registers (regScoreLayout), given the adapter's one subgroup size (and
   * regPV): no key tile and no barrier before the scores; each subgroup's lanes hold the columns of
   * its keys, the queries come from workgroup memory and the lanes' partial dot products meet by
   * subgroup shuffles (a butterfly that halves the values at each step).
   */
  readonly regScores?: number;
  /** Lanes per key row of the register scores (regScoreLayout; default 8). */
  readonly regScoreLanes?: number;
  /**
   * The compressed chunks only: the window's run in the wide block choice's dispatch instead
   * (decodeChoiceWideShader's `win`, which takes wideAttendParts with `windowOnly`).
   */
  readonly noWindow?: boolean;
  /**
   * Window chunk `windowOnly` (a WGSL expression, from 0) only: no compressed loads, no candidate
   * sums (wideAttendParts for the block choice's dispatch, which sets it).
   */
  readonly windowOnly?: string;
}

const pow2 = (n: number) => 2 ** Math.floor(Math.log2(Math.max(1, n)));

/** Lanes per head of the softmax statistics: a power of two, at most KCW and 16. */
function lanesOf(G: number, KCW: number, WG: number): number {
  return Math.min(pow2(WG / G), KCW, 16);
}

/**
 * The register tile, `given` where it divides: by default 2 heads (where G is even) x 1 key (column).
 * On the H100, 4 x 2 tiles took 1.5x as long (too few invocations busy), 1 x 1 tiles 1.2x.
 * The scores take 4 heads x 1 key where that still gives every one of the WG invocations a tile
 * (G = 16 and 64-key chunks: each key read from workgroup memory serves 4 heads; H100, 64k B = 1,
 * session 9 call ~03:27 UTC: dispatch 1 28.3 against 29.1 us, the step 0.0508 against 0.0514 ms;
 * 8 heads: 32.1 us, only half the invocations busy).
 */
export function wideTile(G: number, KCW: number, DV: number, given: Partial<WideTile> = {}, WG = Infinity): WideTile {
  const heads = G % 2 === 0 ? 2 : 1;
  const scoreHeads = G % 4 === 0 && (G / 4) * KCW >= WG ? 4 : heads;
  const ok = (r: number | undefined, n: number) => (r !== undefined && r >= 1 && n % r === 0 ? r : undefined);
  return {
    rh: ok(given.rh, G) ?? scoreHeads,
    rk: ok(given.rk, KCW) ?? 1,
    oh: ok(given.oh, G) ?? heads,
    oc: ok(given.oc, DV / 4) ?? 1,
  };
}

/**
 * Workgroup memory of a wide attend workgroup (bytes), and whether the values share the keys' tile
 * (when both tiles do not fit `limit`); undefined where neither fits.
 */
/** Workgroup memory of a wide attend workgroup with the values apart or in the keys' tile (bytes). */
export function wideAttendBytes(s: Pick<DecodeStepShape, 'G' | 'DK' | 'DV'> & { readonly KCW: number; readonly WG: number }, shared: boolean): number {
  const QS = s.DK / 4 + 1;
  const DV4 = s.DV / 4;
  const L = lanesOf(s.G, s.KCW, s.WG);
  // (And 16 bytes of subgroup ids, with the register scores.)
  return 16 * s.G * QS + 4 * s.G * (s.KCW + 1) + 8 * s.G * L + 16 * s.KCW * (shared ? Math.max(QS, DV4) : QS + DV4) + 16;
}

export function wideAttendShared(s: Pick<DecodeStepShape, 'G' | 'DK' | 'DV'> & { readonly KCW: number; readonly WG: number }, limit: number): { bytes: number; shared: boolean } | undefined {
  const QS = s.DK / 4 + 1;
  const DV4 = s.DV / 4;
  const L = lanesOf(s.G, s.KCW, s.WG);
  const rest = 16 * s.G * QS + 4 * s.G * (s.KCW + 1) + 8 * s.G * L;
  const apart = rest + 16 * s.KCW * (QS + DV4);
  if (apart <= limit) return { bytes: apart, shared: false };
  const shared = rest + 16 * s.KCW * Math.max(QS, DV4);
  return shared <= limit ? { bytes: shared, shared: true } : undefined;
}

/** Which of the block choice's and the fold's arrays the window attend's tiles hold (WideChoice.win). */
export interface WinAliases {
  /** lse in redM (always: G <= G * L), score in redL. */
  readonly score: boolean;
  /** The fold's chunk weights in pr. */
  readonly fW: boolean;
  /** The fold's two column sums a lane in kt. */
  readonly acc: boolean;
}

/** WinAliases where they fit the attend's tiles at this WG (cpw candidates, foldSplits chunk weights). */
export function winAliases(s: Pick<DecodeStepShape, 'G' | 'DK' | 'DV'> & { readonly KCW: number; readonly WG: number; readonly shared: boolean }, cpw: number, foldSplits: number): WinAliases {
  const L = lanesOf(s.G, s.KCW, s.WG);
  const ktLen = s.KCW * (s.shared ? Math.max(s.DK / 4 + 1, s.DV / 4) : s.DK / 4 + 1);
  return { score: cpw <= s.G * L, fW: foldSplits <= s.G * (s.KCW + 1), acc: 2 * s.WG <= ktLen };
}

/**
 * The register P·V's layout (WideAttendKernel.regPV): invocation x < NKG * DV4 holds value column
 * x % DV4 of keys x / DV4 + NKG * r (r < R); the partial sums of HR heads at a time fill the keys' tile
 * [NKG, HR, DV4] (HR the largest divisor of G that fits). Undefined where not even one head fits.
 */
export function regPVLayout(s: Pick<DecodeStepShape, 'G' | 'DK' | 'DV'> & { readonly KCW: number; readonly WG: number; readonly shared: boolean }): { NKG: number; R: number; HR: number } | undefined {
  const DV4 = s.DV / 4;
  const NKG = Math.min(Math.floor(s.WG / DV4), s.KCW);
  if (NKG < 1) return undefined;
  const ktLen = s.KCW * (s.shared ? Math.max(s.DK / 4 + 1, DV4) : s.DK / 4 + 1);
  let HR = 0;
  for (let d = 1; d <= s.G; d++) if (s.G % d === 0 && NKG * d * DV4 <= ktLen) HR = d;
  return HR > 0 ? { NKG, R: Math.ceil(s.KCW / NKG), HR } : undefined;
}

/** The register scores' layout (regScoreLayout). */
export interface RegScoreLayout {
  /** Subgroup size, subgroups a workgroup. */
  readonly S: number;
  readonly NSG: number;
  /** Lanes per key row, key rows a subgroup holds at a time (S / LR). */
  readonly LR: number;
  readonly KQ: number;
  /** Key slots a lane (keys kgS + NSG (kq + KQ kl)), vec4 columns a lane (cl + LR t). */
  readonly KL: number;
  readonly CPL: number;
  /** Heads a round (HPR x KL values a lane, a multiple of LR). */
  readonly HPR: number;
}

/**
 * The register scores' layout (WideAttendKernel.regScores) for subgroups of S invocations (a power of
 * two): NSG = WG / S subgroups; lane kq * LR + cl of a subgroup holds KL keys (kq + KQ kl of the
 * subgroup's KCW / NSG) in CPL vec4 columns each (cl + LR t); the LR lanes of a key row sum their
 * partial dot products by shuffles. Fewer lanes a row (LR < S): fewer shuffles (log2 LR steps) but
 * more query reads. Undefined where the shape does not split so.
 */
export function regScoreLayout(s: { readonly G: number; readonly DK: number; readonly KCW: number; readonly WG: number }, S: number, lanesPerRow = 8): RegScoreLayout | undefined {
  const LR = Math.min(S, lanesPerRow);
  const NSG = Math.floor(s.WG / S);
  const DK4 = s.DK / 4;
  const pow = (n: number) => n >= 1 && (n & (n - 1)) === 0;
  if (!pow(S) || !pow(LR) || S < 2 || NSG < 1 || s.WG % S !== 0 || s.KCW % NSG !== 0 || DK4 % LR !== 0) return undefined;
  const KQ = S / LR;
  const KPS = s.KCW / NSG;
  if (KPS % KQ !== 0) return undefined;
  const KL = KPS / KQ;
  // Heads a round: the most (dividing G) whose values a lane stay within max(LR, 32), a multiple of LR.
  let HPR = 0;
  for (let d = 1; d <= s.G; d++) if (s.G % d === 0 && d * KL <= Math.max(LR, 32) && (d * KL) % LR === 0) HPR = d;
  return HPR > 0 ? { S, NSG, LR, KQ, KL, CPL: DK4 / LR, HPR } : undefined;
}

/**
 * Attention over KCW compressed or window keys (by workgroup_id.x: the compressed chunks, then the
 * window's) for the G heads of one KV head: the chunk's unnormalised partial output, its (max, sum)
 * per head, and the compressed chunks' candidate sums (or raw scores), as decodeAttendShader's 'cw'
 * phase with KC = KCW.
 */
export function decodeAttendWideShader(k: WideAttendKernel): string {
  const p = wideAttendParts(k);
  return `${enableF16(k.e)}${p.subgroups ? 'enable subgroups;\n' : ''}${paramsStruct()}
${p.bindings}
${constants(k, k.WG)}${k.cand ? candidateConstants(k) : ''}
${p.decls}
@compute @workgroup_size(${k.WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${p.subgroups ? ', @builtin(subgroup_invocation_id) sgLane: u32' : ''}) {
${p.main}}
`;
}

/**
 * The wide attend's WGSL in pieces, so that another kernel can run its window chunks
 * (decodeChoiceWideShader's `win`): the bindings it reads by name, its module declarations (after
 * constants() and, with cand, candidateConstants()), and main's body, which reads wid, lid and (with
 * `subgroups`) sgLane. With windowOnly the body takes that window chunk and needs q, kWin, vWin, part
 * and stats only.
 */
export function wideAttendParts(k: WideAttendKernel): { subgroups: boolean; bindings: string; decls: string; main: string } {
  const { e, G, DK, DV, KCW, WG } = k;
  const winOnly = k.windowOnly !== undefined;
  const { rh, rk, oh, oc } = k.tile;
  const apart = !k.shared;
  const split = k.split === true;
  const reg = k.regPV && !split ? regPVLayout({ G, DK, DV, KCW, WG, shared: k.shared }) : undefined;
  const rs = k.regScores && reg ? regScoreLayout({ G, DK, KCW, WG }, k.regScores, k.regScoreLanes) : undefined;
  const L = lanesOf(G, KCW, WG);
  const KPL = KCW / L;
  const DK4 = DK / 4;
  const DV4 = DV / 4;
  const vec = `array<vec4<${e}>>`;
  const vRow = apart ? 'vt' : 'kt';
  // The key and value loads: count, compressed and window buffer, row width (vec4), workgroup store.
  const loadSets = [
    { id: 'K', n: KCW * DK4, cmp: 'kCmp', win: 'kWin', D4: 'DK4', dst: (kk: string, c: string) => `kt[${kk} * QS + ${c}]` },
    { id: 'V', n: KCW * DV4, cmp: 'vCmp', win: 'vWin', D4: 'DV4', dst: (kk: string, c: string) => `${vRow}[${kk} * DV4 + ${c}]` },
  ];
  const decl: string[] = [];
  const cmpLoads: string[] = [];
  const winLoads: string[] = [];
  const stores: Record<string, string[]> = { K: [], V: [] };
  // Register P·V: invocation lid holds column cV of keys kgV + NKG * r (loaded after the keys).
  const regLoads = { cmp: [] as string[], win: [] as string[] };
  if (reg) {
    decl.push(`  let kgV = lid / DV4; let cV = lid % DV4;`);
    for (let r = 0; r < reg.R; r++) {
      decl.push(`  let kV${r} = kgV + ${r * reg.NKG}u; let mV${r} = min(kV${r}, last); var aV${r}: vec4<f32>;`);
      regLoads.cmp.push(`    aV${r} = vec4<f32>(vCmp[((b * CCAP + lo + mV${r}) * H + h) * DV4 + cV]);`);
      regLoads.win.push(`    aV${r} = vec4<f32>(vWin[((b * CAP + lo + mV${r}) * H + h) * DV4 + cV]);`);
    }
  }
  if (rs) {
    // Register scores: lane kq * LR + cl of subgroup kgS holds keys kgS + NSG (kq + KQ kl), columns cl + LR t.
    decl.push(`  let kqS = sgLane / ${rs.LR}u; let clS = sgLane % ${rs.LR}u;`);
    for (let r = 0; r < rs.KL; r++) {
      decl.push(`  let kS${r} = kgS + ${rs.NSG}u * (kqS + ${r * rs.KQ}u); let mS${r} = min(kS${r}, last);`);
      for (let t = 0; t < rs.CPL; t++) {
        decl.push(`  var aS${r}_${t}: vec4<f32>;`);
        cmpLoads.push(`    aS${r}_${t} = vec4<f32>(kCmp[((b * CCAP + lo + mS${r}) * H + h) * DK4 + clS + ${rs.LR * t}u]);`);
        winLoads.push(`    aS${r}_${t} = vec4<f32>(kWin[((b * CAP + lo + mS${r}) * H + h) * DK4 + clS + ${rs.LR * t}u]);`);
      }
    }
  }
  for (const set of rs ? [] : reg ? loadSets.slice(0, 1) : loadSets) {
    for (let r = 0; r * WG < set.n; r++) {
      const id = `${set.id}${r}`;
      decl.push(`  let x${id} = lid + ${r * WG}u; let k${id} = x${id} / ${set.D4}; let c${id} = x${id} % ${set.D4}; let m${id} = min(k${id}, last);`);
      decl.push(`  var a${id}: vec4<f32>;`);
      if (!(split && set.id === 'V')) cmpLoads.push(`    a${id} = vec4<f32>(${set.cmp}[((b * CCAP + lo + m${id}) * H + h) * ${set.D4} + c${id}]);`);
      winLoads.push(`    a${id} = vec4<f32>(${set.win}[((b * CAP + lo + m${id}) * H + h) * ${set.D4} + c${id}]);`);
      // (Split: a compressed chunk has no values to store.)
      const vGuard = split && set.id === 'V' ? '!isCmp && ' : '';
      const cond = `${vGuard}${(r + 1) * WG <= set.n ? '' : `x${id} < ${set.n}u`}`.replace(/ && $/, '');
      stores[set.id].push(`  ${cond ? `if (${cond}) ` : ''}{ ${set.dst(`k${id}`, `c${id}`)} = select(vec4<f32>(0.0), a${id}, k${id} < count); }`);
    }
  }
  cmpLoads.push(...regLoads.cmp);
  winLoads.push(...regLoads.win);
  // The queries' loads (into registers; stored with the keys).
  const qLoads: string[] = [];
  const qStores: string[] = [];
  for (let r = 0; r * WG < G * DK4; r++) {
    const n = G * DK4;
    qLoads.push(`  let xQ${r} = min(lid + ${r * WG}u, ${n - 1}u); let aQ${r} = q[(row0 + xQ${r} / DK4) * DK4 + xQ${r} % DK4];`);
    const guard = (r + 1) * WG <= n ? '' : `if (lid + ${r * WG}u < ${n}u) `;
    qStores.push(`  ${guard}{ qs[(xQ${r} / DK4) * QS + xQ${r} % DK4] = vec4<f32>(aQ${r}) * P.scale; }`);
  }
  const KG = KCW / rk;
  const CG = DV4 / oc;
  const hs = Array.from({ length: rh }, (_, a) => a);
  const ks = Array.from({ length: rk }, (_, b) => b);
  const ohs = Array.from({ length: oh }, (_, a) => a);
  const ocs = Array.from({ length: oc }, (_, r) => r);
  const keys = Array.from({ length: KCW }, (_, i) => i);
  const scoreStore = (g: string, kk: string, sv: string) => `    { let s = ${sv}; let ok = ${kk} < count;
      pr[${g} * PRS + ${kk}] = select(${NEG}, s, ok);${k.cand ? '' : `
      if (ok && isCmp) { scores[(row0 + ${g}) * CCAP + lo + ${kk}] = s; }`} }`;
  const lanes = Array.from({ length: L }, (_, i) => i);
  const laneKeys = Array.from({ length: KPL }, (_, i) => i);
  // The chunk: the workgroup's, or (loop) each of its chunks in turn, the queries loaded once before.
  const chunk = winOnly ? `(compressedChunks(pos) + ${k.windowOnly})` : k.loop ? 'cx' : 'wid.x';
  const bindings = `@group(0) @binding(1) var<storage, read> q: ${vec};
@group(0) @binding(2) var<storage, read> kCmp: ${vec};
${split ? '@group(0) @binding(3) var<storage, read_write> probs: array<f32>;' : `@group(0) @binding(3) var<storage, read> vCmp: ${vec};`}
@group(0) @binding(4) var<storage, read> kWin: ${vec};
@group(0) @binding(5) var<storage, read> vWin: ${vec};
@group(0) @binding(6) var<storage, read_write> part: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> stats: array<f32>;
@group(0) @binding(8) var<storage, read_write> ${k.cand ? 'cand' : 'scores'}: array<f32>;`;
  const decls = `// Row stride of the score tile: one word of padding, so the per-head scans are conflict-free.
const PRS = ${KCW + 1}u;
// Lanes per head of the softmax statistics.
const L = ${L}u;
var<workgroup> qs: array<vec4<f32>, ${G * (DK4 + 1)}>;
// Keys [KCW, QS]${apart ? '' : ', then values [KCW, DV4]'}.
var<workgroup> kt: array<vec4<f32>, ${KCW * (apart ? DK4 + 1 : Math.max(DK4 + 1, DV4))}>;${
    apart && !reg
      ? `
var<workgroup> vt: array<vec4<f32>, ${KCW * DV4}>;`
      : ''
  }
// Scores, then probabilities, [G, PRS].
var<workgroup> pr: array<f32, ${G * (KCW + 1)}>;
// Per-lane maxima and sums of the softmax statistics, [G, L].
var<workgroup> redM: array<f32, ${G * L}>;
var<workgroup> redL: array<f32, ${G * L}>;${
    rs
      ? `
// The next subgroup id (register scores; 16 bytes).
var<workgroup> sgNext: array<atomic<u32>, 4>;`
      : ''
  }
`;
  const head = `  let pos = P.qRowLo;
  let b = wid.y / H;
  let h = wid.y % H;
  let row0 = b * HQ + h * G;${
    rs
      ? `
  // This subgroup's id (0 .. ${rs.NSG - 1}): its keys are kgS + ${rs.NSG} r.
  var sgId = 0u;
  if (sgLane == 0u) { sgId = atomicAdd(&sgNext[0], 1u); }
  let kgS = subgroupMax(sgId);`
      : ''
  }
`;
  // (windowOnly: the window's chunks of this kernel's KCW keys, which may differ from the module's.)
  const body = `${cwChunk(winOnly ? `${KCW}u` : 'KCW', chunk)}
  // Last key of the chunk that loads may touch (a valid row even when count is 0).
  let last = max(count, 1u) - 1u;
  // Every global load first (rows past count clamped to a valid row, zeroed when stored).
${k.loop ? '' : qLoads.join('\n')}
${decl.join('\n')}${
    winOnly
      ? `
${winLoads.join('\n')}`
      : `
  if (isCmp) {
${cmpLoads.join('\n')}
  } else {
${winLoads.join('\n')}
  }`
  }
${k.loop ? '' : qStores.join('\n')}
${rs ? (k.loop ? '' : '  workgroupBarrier();\n') + regScoreCode(rs, G, scoreStore) : `${stores.K.join('\n')}${apart && !reg ? `\n${stores.V.join('\n')}` : ''}
  workgroupBarrier();
  // Scores: invocation x takes heads (x / ${KG}) * ${rh} + a and keys kb + ${KG} * b, kb = x % ${KG}.
${unrolled(
  (G / rh) * KG,
  WG,
  `let g0 = (x / ${KG}u) * ${rh}u; let kb = x % ${KG}u;
${hs.flatMap((a) => ks.map((bb) => `    var a${a}_${bb} = vec4<f32>(0.0);`)).join('\n')}
${Array.from(
  { length: DK4 },
  (_, c) => `    {
${ks.map((bb) => `      let k${bb} = kt[(kb + ${bb * KG}u) * QS + ${c}u];`).join('\n')}
${hs.map((a) => `      let q${a} = qs[(g0 + ${a}u) * QS + ${c}u];`).join('\n')}
${hs.flatMap((a) => ks.map((bb) => `      a${a}_${bb} = fma(q${a}, k${bb}, a${a}_${bb});`)).join('\n')}
    }`,
).join('\n')}
${hs.flatMap((a) => ks.map((bb) => scoreStore(`(g0 + ${a}u)`, `(kb + ${bb * KG}u)`, `dot(a${a}_${bb}, vec4<f32>(1.0))`))).join('\n')}`,
)}`}
  workgroupBarrier();
${apart || reg ? '' : `  // The values take the keys' place.\n${stores.V.join('\n')}\n`}  // Softmax statistics: lane l of head g takes keys l + L * i; first the lanes' maxima.
  let hg = lid / L;
  let lane = lid % L;
  if (hg < G) {
${laneKeys.map((i) => `    let s${i} = pr[hg * PRS + lane + ${i * L}u];`).join('\n')}
    redM[lid] = max(${laneKeys.map((i) => `s${i}`).reduce((acc, x) => `max(${acc}, ${x})`)}, ${NEG});
  }
  workgroupBarrier();
  // Each head's max; probabilities replace the scores (0 for masked keys), the lanes' sums.
  var m = ${NEG};
  if (hg < G) {
${lanes.map((i) => `    let m${i} = redM[hg * L + ${i}u];`).join('\n')}
    m = max(${lanes.map((i) => `m${i}`).reduce((acc, x) => `max(${acc}, ${x})`)}, ${NEG});
    var l = 0.0;
${laneKeys
  .map(
    (i) => `    { let at = hg * PRS + lane + ${i * L}u; let s = pr[at];
      let p = select(0.0, exp(select(-100.0, s - m, s > ${NEG_HALF})), s > ${NEG_HALF});
      pr[at] = p; l += p; }`,
  )
  .join('\n')}
    redL[lid] = l;
  }
  workgroupBarrier();
  if (hg < G && lane == 0u) {
    let at = (split * ROWS + row0 + hg) * 2u;
    stats[at] = m;
    stats[at + 1u] = ${lanes.map((i) => `redL[hg * L + ${i}u]`).join(' + ')};
  }
  // Unnormalised partial output: invocation x takes heads (x / ${CG}) * ${oh} + a and columns x % ${CG} + ${CG} * r.${
    split
      ? `
  // (Split: a compressed chunk's probabilities go to probs instead, its P·V runs in the block choice's dispatch.)
  if (isCmp) {
    for (var x = lid; x < G * KCW; x += WG) {
      let g = x / KCW;
      let kk = x % KCW;
      if (kk < count) { probs[(row0 + g) * CCAP + lo + kk] = pr[g * PRS + kk]; }
    }
  } else {`
      : ''
  }
${
  reg
    ? regPVCode(reg, G, KCW, WG, DV4)
    : unrolled(
        (G / oh) * CG,
        WG,
        `let g0 = (x / ${CG}u) * ${oh}u; let c0 = x % ${CG}u;
${ohs.flatMap((a) => ocs.map((r) => `    var o${a}_${r} = vec4<f32>(0.0);`)).join('\n')}
${keys
  .map(
    (kk) => `    {
${ocs.map((r) => `      let v${r} = ${vRow}[${kk}u * DV4 + c0 + ${r * CG}u];`).join('\n')}
${ohs.map((a) => `      let p${a} = vec4<f32>(pr[(g0 + ${a}u) * PRS + ${kk}u]);`).join('\n')}
${ohs.flatMap((a) => ocs.map((r) => `      o${a}_${r} = fma(p${a}, v${r}, o${a}_${r});`)).join('\n')}
    }`,
  )
  .join('\n')}
${ohs.flatMap((a) => ocs.map((r) => `    part[(split * ROWS + row0 + g0 + ${a}u) * DV4 + c0 + ${r * CG}u] = o${a}_${r};`)).join('\n')}`,
      )
}${split ? '\n  }' : ''}${k.cand && !winOnly ? candidateSums(k, 'KCW', chunk) : ''}`;
  const parts = { subgroups: rs !== undefined, bindings, decls };
  if (!k.loop || winOnly) return { ...parts, main: `${head}${body}\n` };
  // The chunk loop: the queries once, then each chunk's body after a barrier that protects the
  // previous chunk's tiles.
  // (noWindow: the compressed chunks only.)
  return {
    ...parts,
    main: `${head}${qLoads.join('\n')}
${qStores.join('\n')}
  let nAll = compressedChunks(pos)${k.noWindow ? '' : ' + (pos + 1u - windowLo(pos) + KCW - 1u) / KCW'};
  for (var cx = wid.x; cx < nAll; cx += ${k.loop}u) {
  workgroupBarrier();
${body}

  }
`,
  };
}

/**
 * The register scores (WideAttendKernel.regScores): per round, HPR heads x KL keys of partial dot
 * products a lane (V values); log2 LR butterfly steps each send half of a lane's values to the lane
 * across and add the half it keeps, so lane cl of a key row ends with the full sums of values
 * cl * V / LR + i (head j / KL, key slot j % KL).
 */
function regScoreCode(rs: RegScoreLayout, G: number, scoreStore: (g: string, kk: string, sv: string) => string): string {
  const { NSG, LR, KQ, KL, CPL, HPR } = rs;
  const V = HPR * KL;
  const steps = Math.log2(LR);
  const ts = Array.from({ length: CPL }, (_, t) => t);
  const out: string[] = [`  // Scores from the keys' registers, ${HPR} heads a round (regScoreCode).`];
  for (let u = 0; u < G / HPR; u++) {
    const body: string[] = [];
    for (let hl = 0; hl < HPR; hl++) {
      // (Each head's query columns next to their use: fewer live registers.)
      for (const t of ts) body.push(`    let q${hl}_${t} = qs[${u * HPR + hl}u * QS + clS + ${LR * t}u];`);
      for (let r = 0; r < KL; r++) {
        const acc = ts.reduce((a, t) => (a === '' ? `q${hl}_${t} * aS${r}_${t}` : `fma(q${hl}_${t}, aS${r}_${t}, ${a})`), '');
        body.push(`    let v${steps}_${hl * KL + r} = dot(${acc}, vec4<f32>(1.0));`);
      }
    }
    for (let step = steps - 1, n = V; step >= 0; step--, n /= 2) {
      const m = 2 ** step;
      body.push(`    let up${step} = (sgLane & ${m}u) != 0u;`);
      for (let i = 0; i < n / 2; i++)
        body.push(`    let v${step}_${i} = select(v${step + 1}_${i}, v${step + 1}_${i + n / 2}, up${step}) + subgroupShuffleXor(select(v${step + 1}_${i + n / 2}, v${step + 1}_${i}, up${step}), ${m}u);`);
    }
    for (let i = 0; i < V / LR; i++) {
      body.push(`    { let j = clS * ${V / LR}u + ${i}u; let kk = kgS + ${NSG}u * (kqS + ${KQ}u * (j % ${KL}u));`);
      body.push(scoreStore(`(${u * HPR}u + j / ${KL}u)`, 'kk', `v0_${i}`) + ' }');
    }
    out.push(`  {\n${body.join('\n')}\n  }`);
  }
  return out.join('\n');
}

/**
 * The register P·V (WideAttendKernel.regPV): each invocation sums its keys' values times the
 * probabilities of HR heads, the partial sums meet in the keys' tile and NKG of them make each
 * output. Rounds of HR heads, a barrier before a round reuses the tile.
 */
function regPVCode(reg: { NKG: number; R: number; HR: number }, G: number, KCW: number, WG: number, DV4: number): string {
  const { NKG, R, HR } = reg;
  const js = Array.from({ length: HR }, (_, j) => j);
  const rs = Array.from({ length: R }, (_, r) => r);
  const out: string[] = [`  // P·V on the values' registers: heads in rounds of ${HR}, partial sums [${NKG}, ${HR}, DV4] in kt.`];
  for (let h0 = 0; h0 < G; h0 += HR) {
    if (h0 > 0) out.push('  workgroupBarrier();');
    out.push(`  {
${js.map((j) => `    var o${j} = vec4<f32>(0.0);`).join('\n')}
${rs
  .map((r) => {
    // Keys past the chunk's tile (where NKG does not divide KCW) weigh 0.
    const p = (j: number) => (NKG * R > KCW ? `select(0.0, pr[${h0 + j}u * PRS + min(kV${r}, ${KCW - 1}u)], kV${r} < ${KCW}u)` : `pr[${h0 + j}u * PRS + kV${r}]`);
    return js.map((j) => `    o${j} = fma(vec4<f32>(${p(j)}), aV${r}, o${j});`).join('\n');
  })
  .join('\n')}
    ${NKG * DV4 < WG ? `if (kgV < ${NKG}u) ` : ''}{
${js.map((j) => `      kt[(kgV * ${HR}u + ${j}u) * DV4 + cV] = o${j};`).join('\n')}
    }
  }
  workgroupBarrier();
${unrolled(
  HR * DV4,
  WG,
  `let j = x / DV4; let c = x % DV4;
    var a = vec4<f32>(0.0);
    for (var g = 0u; g < ${NKG}u; g++) { a += kt[(g * ${HR}u + j) * DV4 + c]; }
    part[(split * ROWS + row0 + ${h0}u + j) * DV4 + c] = a;`,
)}`);
  }
  return out.join('\n');
}
