// Selection scores and top-n (NSA-SPEC.md, branch 2): one workgroup per (query token, KV head).
// p = softmax over the visible compressed blocks (from the compression branch's lse), summed
// over the group's heads, mapped to selection blocks by sub-block overlap, then the forced
// blocks plus the highest remaining scores (ties to the lower index), written ascending.
import { ITEM_STRUCT, enableF16, load4, paramsStruct, type ElementType } from './common.js';

export interface SelectionKernel {
  readonly e: ElementType;
  readonly G: number;
  readonly GC: number;
  readonly DK: number;
  /** Compressed blocks per chunk. */
  readonly CB: number;
  readonly WG: number;
  /** Most candidate selection blocks a query may have (shared-memory score array). */
  readonly NSMAX: number;
  readonly nSel: number;
  readonly initialBlocks: number;
  readonly localBlocks: number;
  /** l/d and l'/d. */
  readonly perCmp: number;
  readonly perSel: number;
  /**
   * 'fused': scores and top-n in one workgroup per (token, KV head). For few tokens (decoding) the
   * work is split in two passes: 'scores' (workgroups over chunks of compressed blocks write the
   * group-summed probability of each block to `imp`) and 'topn' (reads them back, maps them to
   * selection blocks and chooses).
   */
  readonly phase: 'fused' | 'scores' | 'topn';
}

export function selectionSharedBytes(k: Omit<SelectionKernel, 'e' | 'phase'>): number {
  const dk4 = Math.ceil(k.DK / 4);
  return 16 * (k.GC * dk4 + k.CB * (dk4 + 1)) + 4 * (k.GC * k.CB + k.CB + k.NSMAX + 2 * k.WG + k.GC + k.nSel) + 64;
}

export function selectionShader(k: SelectionKernel): string {
  const phase = k.phase;
  const DK4 = Math.ceil(k.DK / 4);
  if (k.CB % 4 !== 0 || k.WG % (k.CB / 4) !== 0) throw new Error(`selection: CB ${k.CB} must be a multiple of 4 dividing 4 * WG ${k.WG}`);
  // WGSL pieces of the three phases.
  const scoreChunk = `    for (var x = lid; x < CB * DK4; x += WG) {
      let i = i0 + x / DK4;
      var val = vec4<f32>(0.0);
      if (i < nVis) { val = loadK(((it.cmpBase + i - P.keyRowBase) * P.H + kvh) * DK, x % DK4); }
      ks[(x / DK4) * KS + x % DK4] = val;
    }
    for (var x = lid; x < CB; x += WG) { psum[x] = 0.0; }
    for (var hc = 0u; hc < nhc; hc++) {
      for (var x = lid; x < GC * DK4; x += WG) {
        let g = hc * GC + x / DK4;
        var val = vec4<f32>(0.0);
        if (g < G) { val = loadQ((rowBase + g) * DK, x % DK4) * P.scale; }
        qs[x] = val;
      }
      for (var x = lid; x < GC; x += WG) {
        let g = hc * GC + x;
        lq[x] = select(0.0, lse[rowBase + g], g < G);
      }
      workgroupBarrier();
      // Register tile: an invocation scores one head against 4 blocks (ii0 + b * NB), so each
      // query load feeds 4 products and neighbouring invocations read neighbouring key rows.
      for (var gl = lid / NB; gl < GC; gl += WG / NB) {
        let ii0 = lid % NB;
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        for (var c = 0u; c < DK4; c++) {
          let qv = qs[gl * DK4 + c];
          a0 = fma(qv, ks[ii0 * KS + c], a0);
          a1 = fma(qv, ks[(ii0 + NB) * KS + c], a1);
          a2 = fma(qv, ks[(ii0 + 2u * NB) * KS + c], a2);
          a3 = fma(qv, ks[(ii0 + 3u * NB) * KS + c], a3);
        }
        let ok = hc * GC + gl < G;
        let one = vec4<f32>(1.0);
        prob[gl * CB + ii0] = guardedExp(dot(a0, one) - lq[gl], ok && i0 + ii0 < nVis);
        prob[gl * CB + ii0 + NB] = guardedExp(dot(a1, one) - lq[gl], ok && i0 + ii0 + NB < nVis);
        prob[gl * CB + ii0 + 2u * NB] = guardedExp(dot(a2, one) - lq[gl], ok && i0 + ii0 + 2u * NB < nVis);
        prob[gl * CB + ii0 + 3u * NB] = guardedExp(dot(a3, one) - lq[gl], ok && i0 + ii0 + 3u * NB < nVis);
      }
      workgroupBarrier();
      for (var ii = lid; ii < CB; ii += WG) {
        var s = psum[ii];
        for (var gl = 0u; gl < GC; gl++) { s += prob[gl * CB + ii]; }
        psum[ii] = s;
      }
      workgroupBarrier();
    }`;
  const mapChunk = `    // Each selection block that this chunk's compressed blocks overlap, one thread per block.
    let iEnd = min(i0 + CB, nVis);
    let jLo = i0 / PER_SEL;
    let jHi = min((iEnd - 1u + PER_CMP - 1u) / PER_SEL + 1u, nCand);
    for (var j = jLo + lid; j < jHi; j += WG) {
      let a = max(i0, select(0u, j * PER_SEL + 1u - PER_CMP, j * PER_SEL + 1u > PER_CMP));
      let b = min(iEnd, (j + 1u) * PER_SEL);
      var s = score[j];
      for (var i = a; i < b; i++) { s += psum[i - i0] * overlap(i, j); }
      score[j] = s;
    }
    workgroupBarrier();`;
  const chunkLoop = `  // Chunks of CB compressed blocks; a 'scores' workgroup takes perSplit of them.
  let c0 = ${phase === 'scores' ? 'wid.z * P.perSplit * CB' : '0u'};
  let c1 = ${phase === 'scores' ? 'min(nVis, c0 + P.perSplit * CB)' : 'nVis'};
  for (var i0 = c0; i0 < c1; i0 += CB) {
${scoreChunk}
${
  phase === 'scores'
    ? `    for (var ii = lid; ii < CB; ii += WG) { if (i0 + ii < nVis) { imp[impRow + i0 + ii] = psum[ii]; } }
    workgroupBarrier();`
    : mapChunk
}
  }`;
  const candidatesFromImp = `  workgroupBarrier();
  // Each candidate block: the overlap-weighted sum of the compressed blocks' probabilities.
  for (var j = lid; j < nCand; j += WG) {
    let a = select(0u, j * PER_SEL + 1u - PER_CMP, j * PER_SEL + 1u > PER_CMP);
    let b = min(nVis, (j + 1u) * PER_SEL);
    var s = 0.0;
    for (var i = a; i < b; i++) { s += imp[impRow + i] * overlap(i, j); }
    score[j] = s;
  }
  workgroupBarrier();`;
  const topN = `  // Forced blocks first; a score of -1 marks a block as taken.
  if (lid == 0u) {
    var n = 0u;
    for (var j = 0u; j < min(INITIAL, nCand); j++) { chosen[n] = i32(j); score[j] = -1.0; n++; }
    let localLo = select(0u, cur + 1u - LOCAL, cur + 1u > LOCAL);
    for (var j = max(localLo, INITIAL); j <= cur && LOCAL > 0u; j++) { chosen[n] = i32(j); score[j] = -1.0; n++; }
    nChosen = n;
  }
  let forced = workgroupUniformLoad(&nChosen);
  let total = min(NSEL, nCand);
  for (var round = forced; round < total; round++) {
    var best = -0.5;
    var bestI = 0xffffffffu;
    for (var j = lid; j < nCand; j += WG) {
      let s = score[j];
      if (s > best) { best = s; bestI = j; }
    }
    redV[lid] = best;
    redI[lid] = bestI;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
      if (lid < stride) {
        let v2 = redV[lid + stride];
        let i2 = redI[lid + stride];
        if (v2 > redV[lid] || (v2 == redV[lid] && i2 < redI[lid])) {
          redV[lid] = v2;
          redI[lid] = i2;
        }
      }
      workgroupBarrier();
    }
    if (lid == 0u) {
      let j = redI[0];
      chosen[round] = i32(j);
      score[j] = -1.0;
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    // Insertion sort of at most n entries, then -1 padding.
    for (var a = 1u; a < total; a++) {
      let v = chosen[a];
      var b = a;
      while (b > 0u && chosen[b - 1u] > v) { chosen[b] = chosen[b - 1u]; b--; }
      chosen[b] = v;
    }
    let out = ((it.row0 - P.rowBase) * P.H + kvh) * NSEL;
    for (var s = 0u; s < NSEL; s++) { blocks[out + s] = select(-1, chosen[s], s < total); }
  }`;
  return `${enableF16(k.e)}${paramsStruct()}
@group(0) @binding(1) var<storage, read> items: array<u32>;
${
  phase === 'topn'
    ? `@group(0) @binding(2) var<storage, read> imp: array<f32>;
@group(0) @binding(3) var<storage, read_write> blocks: array<i32>;`
    : `@group(0) @binding(2) var<storage, read> q: array<${k.e}>;
@group(0) @binding(3) var<storage, read> kcmp: array<${k.e}>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read_write> ${phase === 'scores' ? 'imp: array<f32>' : 'blocks: array<i32>'};`
}
const G = ${k.G}u;
const GC = ${k.GC}u;
const DK = ${k.DK}u;
const DK4 = ${DK4}u;
const CB = ${k.CB}u;
// Invocations per head row of the score tile (4 blocks each).
const NB = ${k.CB / 4}u;
const KS = ${DK4 + 1}u;
const WG = ${k.WG}u;
const NSEL = ${k.nSel}u;
const PER_CMP = ${k.perCmp}u;
const PER_SEL = ${k.perSel}u;
const INITIAL = ${k.initialBlocks}u;
const LOCAL = ${k.localBlocks}u;

${ITEM_STRUCT}
${phase === 'topn' ? '' : `${load4('loadQ', 'q', k.DK)}
${load4('loadK', 'kcmp', k.DK)}`}

var<workgroup> qs: array<vec4<f32>, ${k.GC * DK4}>;
var<workgroup> ks: array<vec4<f32>, ${k.CB * (DK4 + 1)}>;
var<workgroup> prob: array<f32, ${k.GC * k.CB}>;
var<workgroup> psum: array<f32, ${k.CB}>;
var<workgroup> score: array<f32, ${k.NSMAX}>;
var<workgroup> redV: array<f32, ${k.WG}>;
var<workgroup> redI: array<u32, ${k.WG}>;
var<workgroup> lq: array<f32, ${k.GC}>;
var<workgroup> chosen: array<i32, ${k.nSel}>;
var<workgroup> nChosen: u32;

// exp(x) where ok, else 0; a masked lane never evaluates exp of a large argument (no inf).
fn guardedExp(x: f32, ok: bool) -> f32 {
  return select(0.0, exp(select(-100.0, x, ok)), ok);
}

// Sub-blocks shared by compressed block i and selection block j.
fn overlap(i: u32, j: u32) -> f32 {
  let lo = max(i, j * PER_SEL);
  let hi = min(i + PER_CMP, (j + 1u) * PER_SEL);
  return select(0.0, f32(hi - lo), hi > lo);
}

@compute @workgroup_size(${k.WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let it = loadItem(P.itemBase + wid.x, lid);
  let kvh = wid.y;
  let p = it.pos0;
  let cur = p / P.selBlock;
  let nCand = cur + 1u;
  let nVis = select(0u, (p + 1u - P.cmpBlock) / P.cmpStride + 1u, p + 1u >= P.cmpBlock);
  let rowBase = (it.row0 - P.rowBase) * P.HQ + kvh * G;
  for (var j = lid; j < nCand; j += WG) { score[j] = 0.0; }
  let nhc = (G + GC - 1u) / GC;
  let impRow = ((it.row0 - P.rowBase) * P.H + kvh) * P.impStride;
${phase === 'topn' ? candidatesFromImp : chunkLoop}
${phase === 'scores' ? '' : topN}
}
`;
}
