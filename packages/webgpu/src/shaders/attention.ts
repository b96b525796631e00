// Query-centric attention over one branch's keys: the forward pass (online softmax, one
// workgroup per tile of query tokens x a chunk of one GQA group's heads, so each key tile is
// loaded once for all of them) and the backward pass for dq (same loop, softmax known).
import { ITEM_STRUCT, NEG, NEG_HALF, enableF16, keyRangeFns, load4, paramsStruct, rowTileStart, store4, type ElementType, type Mode } from './common.js';

export interface AttentionKernel {
  readonly kind: 'forward' | 'dq';
  readonly mode: Mode;
  readonly e: ElementType;
  /** Heads of one GQA group. */
  readonly G: number;
  /** Heads per workgroup (a chunk of the group). */
  readonly GC: number;
  /** Query tokens per workgroup (1 in selected mode). */
  readonly TQB: number;
  readonly DK: number;
  readonly DV: number;
  /** Keys per shared-memory tile. */
  readonly KT: number;
  readonly WG: number;
  /** Forward only: write unnormalised partial results of one key split. */
  readonly split: boolean;
}

/** Shared-memory bytes the kernel declares. */
export function attentionSharedBytes(k: Omit<AttentionKernel, 'kind' | 'mode' | 'e' | 'split' | 'WG'> & { kind: 'forward' | 'dq' }): number {
  const R = k.TQB * k.GC;
  const dk4 = Math.ceil(k.DK / 4);
  const dv4 = Math.ceil(k.DV / 4);
  const vec = 16 * (R * dk4 + k.KT * (dk4 + 1) + k.KT * (dv4 + 1) + (k.kind === 'dq' ? R * dv4 : 0));
  const scalars = 4 * (R * k.KT + 5 * R) + 64;
  return vec + scalars;
}

export function attentionShader(k: AttentionKernel): string {
  const R = k.TQB * k.GC;
  const DK4 = Math.ceil(k.DK / 4);
  const DV4 = Math.ceil(k.DV / 4);
  const forward = k.kind === 'forward';
  const outW = forward ? DV4 : DK4;
  // Register blocking when the workgroup divides evenly: a thread owns one output column (vec4)
  // of several rows, and one key of several rows in the score tile, so each shared load feeds
  // several FMAs. Otherwise cells are dealt out round-robin.
  const colMode = k.WG % outW === 0;
  const RSTEP = colMode ? k.WG / outW : 0;
  const CELLS = colMode ? Math.ceil(R / RSTEP) : Math.ceil((R * outW) / k.WG);
  const rowMode = k.WG % k.KT === 0;
  const RS = rowMode ? k.WG / k.KT : 0;
  const PAIRS = rowMode ? Math.ceil(R / RS) : 0;
  const E = k.e;
  const selected = k.mode === 'selected';
  const bindings = [
    `@group(0) @binding(1) var<storage, read> items: array<u32>;`,
    `@group(0) @binding(2) var<storage, read> q: array<${E}>;`,
    `@group(0) @binding(3) var<storage, read> kbuf: array<${E}>;`,
    `@group(0) @binding(4) var<storage, read> vbuf: array<${E}>;`,
  ];
  if (forward) {
    // out: normalised branch output (or a split's partial sums); stats: lse (or m, l pairs).
    bindings.push(`@group(0) @binding(5) var<storage, read_write> out: array<f32>;`);
    bindings.push(`@group(0) @binding(6) var<storage, read_write> stats: array<f32>;`);
  } else {
    // dO, per-row (gate, D) of this branch, lse of this branch, dq accumulator.
    bindings.push(`@group(0) @binding(5) var<storage, read> dout: array<${E}>;`);
    bindings.push(`@group(0) @binding(6) var<storage, read> rowgd: array<f32>;`);
    bindings.push(`@group(0) @binding(7) var<storage, read> lse: array<f32>;`);
    bindings.push(`@group(0) @binding(8) var<storage, read_write> dq: array<f32>;`);
  }
  if (selected) bindings.push(`@group(0) @binding(${forward ? 7 : 9}) var<storage, read> blocks: array<i32>;`);

  const keyBaseExpr = k.mode === 'compressed' ? 'it.cmpBase' : 'it.keyBase';

  return `${enableF16(E)}${paramsStruct()}
${bindings.join('\n')}
const G = ${k.G}u;
const GC = ${k.GC}u;
const TQB = ${k.TQB}u;
const R = ${R}u;
const DK = ${k.DK}u;
const DV = ${k.DV}u;
const DK4 = ${DK4}u;
const DV4 = ${DV4}u;
const KT = ${k.KT}u;
// Padded row strides of the key/value tiles: rows read by neighbouring threads fall in different banks.
const KS = ${DK4 + 1}u;
const VS = ${DV4 + 1}u;
const WG = ${k.WG}u;
const CELLS = ${CELLS}u;
const RSTEP = ${RSTEP}u;
const RS = ${RS}u;
const PAIRS = ${Math.max(1, PAIRS)}u;

// Output cell i of invocation lid: (row, vec4 column), and whether it exists.
fn cellRow(lid: u32, i: u32) -> u32 { return ${colMode ? 'lid / OUTW + i * RSTEP' : '(lid + i * WG) / OUTW'}; }
fn cellCol(lid: u32, i: u32) -> u32 { return ${colMode ? 'lid % OUTW' : '(lid + i * WG) % OUTW'}; }
fn cellValid(lid: u32, i: u32) -> bool { return ${colMode ? 'lid / OUTW + i * RSTEP < R' : 'lid + i * WG < R * OUTW'}; }
const OUTW = ${outW}u;
const NEG = ${NEG};
const NEG_HALF = ${NEG_HALF};

${ITEM_STRUCT}
${keyRangeFns(k.mode)}
${load4('loadQ', 'q', k.DK)}
${load4('loadK', 'kbuf', k.DK)}
${load4('loadV', 'vbuf', k.DV)}
${forward ? '' : load4('loadDO', 'dout', k.DV)}

var<workgroup> qs: array<vec4<f32>, ${R * DK4}>;
var<workgroup> ks: array<vec4<f32>, ${k.KT * (DK4 + 1)}>;
var<workgroup> vs: array<vec4<f32>, ${k.KT * (DV4 + 1)}>;
var<workgroup> ss: array<f32, ${R * k.KT}>;
var<workgroup> mrow: array<f32, ${R}>;
var<workgroup> lrow: array<f32, ${R}>;
var<workgroup> arow: array<f32, ${R}>;
var<workgroup> posr: array<u32, ${R}>;
// Each invocation's output cells (private: one copy per invocation).
var<private> acc: array<vec4<f32>, CELLS>;
${forward ? '' : `var<workgroup> dos: array<vec4<f32>, ${R * DV4}>;\nvar<workgroup> drow: array<f32, ${R}>;`}
${selected ? 'var<workgroup> slotShared: i32;' : ''}

// Row r of the tile: token r / GC, head (chunk * GC + r % GC) of the group.
fn rowValid(r: u32, it: Item, hc: u32) -> bool {
  return r / GC < it.count && hc * GC + r % GC < G;
}

// One tile of KT keys at positions kp0.. (global rows gbase + kp), keys at or past kEnd absent.
fn processTile(kp0: u32, kEnd: u32, gbase: u32, kvh: u32, lid: u32) {
  for (var x = lid; x < KT * DK4; x += WG) {
    let kp = kp0 + x / DK4;
    var val = vec4<f32>(0.0);
    if (kp < kEnd) { val = loadK(((gbase + kp - P.keyRowBase) * P.H + kvh) * DK, x % DK4); }
    ks[(x / DK4) * KS + x % DK4] = val;
  }
  for (var x = lid; x < KT * DV4; x += WG) {
    let kp = kp0 + x / DV4;
    var val = vec4<f32>(0.0);
    if (kp < kEnd) { val = loadV(((gbase + kp - P.keyRowBase) * P.H + kvh) * DV, x % DV4); }
    vs[(x / DV4) * VS + x % DV4] = val;
  }
  workgroupBarrier();
${rowMode ? blockedScores(forward) : old_scores_text(forward)}  workgroupBarrier();
${
  forward
    ? `  for (var r = lid; r < R; r += WG) {
    var tmax = NEG;
    for (var kk = 0u; kk < KT; kk++) { tmax = max(tmax, ss[r * KT + kk]); }
    let mold = mrow[r];
    if (tmax > NEG_HALF) {
      let mnew = max(mold, tmax);
      let alpha = select(0.0, exp(mold - mnew), mold > NEG_HALF);
      var sum = 0.0;
      for (var kk = 0u; kk < KT; kk++) {
        let s = ss[r * KT + kk];
        let pr = select(0.0, exp(s - mnew), s > NEG_HALF);
        ss[r * KT + kk] = pr;
        sum += pr;
      }
      lrow[r] = lrow[r] * alpha + sum;
      mrow[r] = mnew;
      arow[r] = alpha;
    } else {
      for (var kk = 0u; kk < KT; kk++) { ss[r * KT + kk] = 0.0; }
      arow[r] = 1.0;
    }
  }
  workgroupBarrier();
${accumulate('vs', 'VS', true, colMode)}`
    : accumulate('ks', 'KS', false, colMode)
}
  workgroupBarrier();
}

@compute @workgroup_size(${k.WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${rowTileStart('R', 'x')}
  for (var r = lid; r < R; r += WG) {
    posr[r] = select(0xffffffffu, it.pos0 + r / GC, rowValid(r, it, hc));
${
  forward
    ? `    mrow[r] = NEG;
    lrow[r] = 0.0;`
    : `    var lse_r = 0.0;
    var d_r = 0.0;
    if (rowValid(r, it, hc)) {
      let row = (it.row0 + r / GC - P.rowBase) * P.HQ + kvh * G + hc * GC + r % GC;
      lse_r = lse[row];
      d_r = rowgd[row * 2u + 1u];
    }
    mrow[r] = lse_r;
    drow[r] = d_r;`
}
  }
${
  forward
    ? ''
    : `  for (var x = lid; x < R * DV4; x += WG) {
    let r = x / DV4;
    var val = vec4<f32>(0.0);
    if (rowValid(r, it, hc)) {
      let row = (it.row0 + r / GC - P.rowBase) * P.HQ + kvh * G + hc * GC + r % GC;
      val = loadDO(row * DV, x % DV4) * rowgd[row * 2u];
    }
    dos[x] = val;
  }`
}
  workgroupBarrier();
${
  selected
    ? `  // The group's selected blocks for this token, split across workgroups by slot.
  let slot0 = split * P.perSplit;
  let slot1 = min(P.nSel, slot0 + P.perSplit);
  let p = it.pos0;
  for (var s = slot0; s < slot1; s++) {
    if (lid == 0u) { slotShared = blocks[((it.row0 - P.rowBase) * P.H + kvh) * P.nSel + s]; }
    let j = workgroupUniformLoad(&slotShared);
    if (j < 0) { continue; }
    let b0 = u32(j) * P.selBlock;
    let bEnd = min(b0 + P.selBlock, p + 1u);
    for (var t0 = b0; t0 < bEnd; t0 += KT) {
      processTile(t0, bEnd, ${keyBaseExpr}, kvh, lid);
    }
  }`
    : `  // Union of the tile's key ranges, cut into KT-key tiles; a split takes perSplit of them.
  let lo = keyLo(it.pos0);
  let hi = keyHi(it.pos0 + it.count - 1u);
  let ntiles = select(0u, (hi - lo + KT - 1u) / KT, hi > lo);
  let tile0 = select(0u, split * P.perSplit, P.splits > 1u);
  let tile1 = select(ntiles, min(ntiles, tile0 + P.perSplit), P.splits > 1u);
  for (var t = tile0; t < tile1; t++) {
    processTile(lo + t * KT, hi, ${keyBaseExpr}, kvh, lid);
  }`
}
${forward ? forwardEpilogue(k, DV4) : dqEpilogue(k, DK4)}
}
`;
}

function forwardEpilogue(k: AttentionKernel, DV4: number): string {
  const rowExpr = `(it.row0 + r / GC - P.rowBase) * P.HQ + kvh * G + hc * GC + r % GC`;
  if (k.split) {
    // Partial sums of split z: out[(z * tokRows + tokRow) * HQ + head] (bindings not chunked).
    return `  for (var i = 0u; i < CELLS; i++) {
    if (cellValid(lid, i)) {
      let r = cellRow(lid, i);
      let c = cellCol(lid, i);
      if (rowValid(r, it, hc)) {
        let row = split * P.tokRows * P.HQ + ${rowExpr};
        ${store4('out', 'row * DV', 'c', 'acc[i]', k.DV, 'f32')}
      }
    }
  }
  for (var r = lid; r < R; r += WG) {
    if (rowValid(r, it, hc)) {
      let row = split * P.tokRows * P.HQ + ${rowExpr};
      stats[row * 2u] = mrow[r];
      stats[row * 2u + 1u] = lrow[r];
    }
  }`;
  }
  void DV4;
  return `  for (var i = 0u; i < CELLS; i++) {
    if (cellValid(lid, i)) {
      let r = cellRow(lid, i);
      let c = cellCol(lid, i);
      if (rowValid(r, it, hc)) {
        let l = lrow[r];
        let inv = select(0.0, 1.0 / max(l, 1.0e-30), l > 0.0);
        let row = ${rowExpr};
        ${store4('out', 'row * DV', 'c', 'acc[i] * inv', k.DV, 'f32')}
      }
    }
  }
  for (var r = lid; r < R; r += WG) {
    if (rowValid(r, it, hc)) {
      let l = lrow[r];
      stats[${rowExpr}] = select(NEG, mrow[r] + log(max(l, 1.0e-30)), l > 0.0);
    }
  }`;
}

function dqEpilogue(k: AttentionKernel, DK4: number): string {
  void DK4;
  return `  for (var i = 0u; i < CELLS; i++) {
    if (cellValid(lid, i)) {
      let r = cellRow(lid, i);
      let c = cellCol(lid, i);
      if (rowValid(r, it, hc)) {
        let row = (it.row0 + r / GC - P.rowBase) * P.HQ + kvh * G + hc * GC + r % GC;
        var val = acc[i] * P.scale;
        if (P.accum != 0u) {
          for (var j = 0u; j < 4u; j++) { if (c * 4u + j < DK) { val[j] += dq[row * DK + c * 4u + j]; } }
        }
        ${store4('dq', 'row * DK', 'c', 'val', k.DK, 'f32')}
      }
    }
  }`;
}

/** Round-robin score pairs (any KT). */
function old_scores_text(forward: boolean): string {
  return `  for (var x = lid; x < R * KT; x += WG) {
    let r = x / KT;
    let kk = x % KT;
    let kp = kp0 + kk;
    let p = posr[r];
    var s = NEG;
    if (kp < kEnd && p != 0xffffffffu && kp >= keyLo(p) && kp < keyHi(p)) {
      var acc4 = vec4<f32>(0.0);
      for (var c = 0u; c < DK4; c++) { acc4 += qs[r * DK4 + c] * ks[kk * KS + c]; }
      s = acc4.x + acc4.y + acc4.z + acc4.w;
${
  forward
    ? ''
    : `      let pr = exp(s - mrow[r]);
      var dp4 = vec4<f32>(0.0);
      for (var c = 0u; c < DV4; c++) { dp4 += dos[r * DV4 + c] * vs[kk * VS + c]; }
      s = pr * (dp4.x + dp4.y + dp4.z + dp4.w - drow[r]);`
}
    }${forward ? '' : ' else { s = 0.0; }'}
    ss[x] = s;
  }
`;
}

/** Register-blocked scores: invocation lid owns key lid % KT for rows lid / KT + j * RS. */
function blockedScores(forward: boolean): string {
  return `  {
    let kk = lid % KT;
    let r0 = lid / KT;
    let kp = kp0 + kk;
    var sacc: array<vec4<f32>, PAIRS>;
${forward ? '' : '    var dacc: array<vec4<f32>, PAIRS>;'}
    if (kp < kEnd) {
      for (var c = 0u; c < DK4; c++) {
        let kv = ks[kk * KS + c];
        for (var j = 0u; j < PAIRS; j++) { sacc[j] += qs[min(r0 + j * RS, R - 1u) * DK4 + c] * kv; }
      }
${
  forward
    ? ''
    : `      for (var c = 0u; c < DV4; c++) {
        let vv = vs[kk * VS + c];
        for (var j = 0u; j < PAIRS; j++) { dacc[j] += dos[min(r0 + j * RS, R - 1u) * DV4 + c] * vv; }
      }`
}
    }
    for (var j = 0u; j < PAIRS; j++) {
      let r = r0 + j * RS;
      if (r < R) {
        let p = posr[r];
        let ok = kp < kEnd && p != 0xffffffffu && kp >= keyLo(p) && kp < keyHi(p);
        let sv = sacc[j].x + sacc[j].y + sacc[j].z + sacc[j].w;
${
  forward
    ? '        ss[r * KT + kk] = select(NEG, sv, ok);'
    : `        let dp = dacc[j].x + dacc[j].y + dacc[j].z + dacc[j].w;
        // The exponent is clamped where masked so no inf is ever produced, even in a discarded lane.
        let pr = exp(select(-100.0, sv - mrow[r], ok));
        ss[r * KT + kk] = select(0.0, pr * (dp - drow[r]), ok);`
}
      }
    }
  }
`;
}

/** acc += P (or dS) x tile, over the invocation's cells; forward first rescales by alpha. */
function accumulate(tile: string, stride: string, forward: boolean, colMode: boolean): string {
  if (colMode) {
    return `  {
    let c = lid % OUTW;
    let r0 = lid / OUTW;
${forward ? '    for (var i = 0u; i < CELLS; i++) { acc[i] *= arow[min(r0 + i * RSTEP, R - 1u)]; }' : ''}
    for (var kk = 0u; kk < KT; kk++) {
      let t = ${tile}[kk * ${stride} + c];
      for (var i = 0u; i < CELLS; i++) { acc[i] += ss[min(r0 + i * RSTEP, R - 1u) * KT + kk] * t; }
    }
  }`;
  }
  return `  for (var i = 0u; i < CELLS; i++) {
    let x = lid + i * WG;
    if (x < R * OUTW) {
      let r = x / OUTW;
      let c = x % OUTW;
      var a = acc[i]${forward ? ' * arow[r]' : ''};
      for (var kk = 0u; kk < KT; kk++) { a += ss[r * KT + kk] * ${tile}[kk * ${stride} + c]; }
      acc[i] = a;
    }
  }`;
}
