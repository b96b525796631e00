// Key-centric backward of one branch: a workgroup owns a tile of keys (raw tokens or compressed
// blocks) of one KV head and walks every query that sees them, accumulating dK and dV in
// registers (no float atomics in WGSL, and none needed). In selected mode the queries are
// the tokens whose block list holds this tile's block, compacted with a workgroup prefix sum.
import { ITEM_STRUCT, enableF16, keyRangeFns, load4, paramsStruct, store4, type ElementType, type Mode } from './common.js';

export interface DkDvKernel {
  readonly mode: Mode;
  readonly e: ElementType;
  readonly G: number;
  readonly GC: number;
  /** Query tokens per inner tile. */
  readonly TQB: number;
  readonly DK: number;
  readonly DV: number;
  /** Keys per workgroup. */
  readonly KT: number;
  readonly WG: number;
}

export function dkdvSharedBytes(k: Omit<DkDvKernel, 'mode' | 'e'>): number {
  const R = k.TQB * k.GC;
  const dk4 = Math.ceil(k.DK / 4);
  const dv4 = Math.ceil(k.DV / 4);
  return 16 * (R * (dk4 + 1) + R * (dv4 + 1) + k.KT * dk4 + k.KT * dv4) + 4 * (2 * k.KT * R + 4 * R + k.TQB + 2 * k.WG) + 64;
}

export function dkdvShader(k: DkDvKernel): string {
  const R = k.TQB * k.GC;
  const DK4 = Math.ceil(k.DK / 4);
  const DV4 = Math.ceil(k.DV / 4);
  const CK = Math.ceil((k.KT * DK4) / k.WG);
  const CV = Math.ceil((k.KT * DV4) / k.WG);
  const E = k.e;
  const selected = k.mode === 'selected';
  return `${enableF16(E)}${paramsStruct()}
@group(0) @binding(1) var<storage, read> items: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<${E}>;
@group(0) @binding(3) var<storage, read> kbuf: array<${E}>;
@group(0) @binding(4) var<storage, read> vbuf: array<${E}>;
@group(0) @binding(5) var<storage, read> dout: array<${E}>;
@group(0) @binding(6) var<storage, read> rowgd: array<f32>;
@group(0) @binding(7) var<storage, read> lse: array<f32>;
@group(0) @binding(8) var<storage, read_write> dk: array<f32>;
@group(0) @binding(9) var<storage, read_write> dv: array<f32>;
${selected ? '@group(0) @binding(10) var<storage, read> blocks: array<i32>;' : ''}
const G = ${k.G}u;
const GC = ${k.GC}u;
const TQB = ${k.TQB}u;
const R = ${R}u;
const DK = ${k.DK}u;
const DV = ${k.DV}u;
const DK4 = ${DK4}u;
const DV4 = ${DV4}u;
const KT = ${k.KT}u;
// Padded row strides of the query and dO tiles (neighbouring threads read different rows).
const QS = ${DK4 + 1}u;
const OS = ${DV4 + 1}u;
const WG = ${k.WG}u;
const CK = ${CK}u;
const CV = ${CV}u;

${ITEM_STRUCT}
${keyRangeFns(k.mode)}
${load4('loadQ', 'q', k.DK)}
${load4('loadK', 'kbuf', k.DK)}
${load4('loadV', 'vbuf', k.DV)}
${load4('loadDO', 'dout', k.DV)}

var<workgroup> qs: array<vec4<f32>, ${R * (DK4 + 1)}>;
var<workgroup> dos: array<vec4<f32>, ${R * (DV4 + 1)}>;
var<workgroup> ks: array<vec4<f32>, ${k.KT * DK4}>;
var<workgroup> vs: array<vec4<f32>, ${k.KT * DV4}>;
var<workgroup> ps: array<f32, ${k.KT * R}>;
var<workgroup> dss: array<f32, ${k.KT * R}>;
var<workgroup> lrow: array<f32, ${R}>;
var<workgroup> drow: array<f32, ${R}>;
var<workgroup> posr: array<u32, ${R}>;
var<workgroup> list: array<u32, ${k.TQB + k.WG}>;
var<workgroup> scan: array<u32, ${k.WG}>;
var<workgroup> listCount: u32;
// Each invocation's dK and dV cells.
var<private> accK: array<vec4<f32>, CK>;
var<private> accV: array<vec4<f32>, CV>;

// n query tokens (positions pStart.. or list[..]) x the heads of chunk hc against the key tile.
fn processQueries(pStart: u32, n: u32, useList: bool, hc: u32, it: Item, kvh: u32, lid: u32) {
  for (var r = lid; r < R; r += WG) {
    let ti = r / GC;
    let g = hc * GC + r % GC;
    var p = 0xffffffffu;
    var l = 0.0;
    var d = 0.0;
    if (ti < n && g < G) {
      p = select(pStart + ti, list[ti], useList);
      let row = (it.qBase + (p - it.qFirst) - P.rowBase) * P.HQ + kvh * G + g;
      l = lse[row];
      d = rowgd[row * 2u + 1u];
    }
    posr[r] = p;
    lrow[r] = l;
    drow[r] = d;
  }
  workgroupBarrier();
  for (var x = lid; x < R * DK4; x += WG) {
    let r = x / DK4;
    let p = posr[r];
    var val = vec4<f32>(0.0);
    if (p != 0xffffffffu) {
      let row = (it.qBase + (p - it.qFirst) - P.rowBase) * P.HQ + kvh * G + hc * GC + r % GC;
      val = loadQ(row * DK, x % DK4) * P.scale;
    }
    qs[r * QS + x % DK4] = val;
  }
  for (var x = lid; x < R * DV4; x += WG) {
    let r = x / DV4;
    let p = posr[r];
    var val = vec4<f32>(0.0);
    if (p != 0xffffffffu) {
      let row = (it.qBase + (p - it.qFirst) - P.rowBase) * P.HQ + kvh * G + hc * GC + r % GC;
      val = loadDO(row * DV, x % DV4) * rowgd[row * 2u];
    }
    dos[r * OS + x % DV4] = val;
  }
  workgroupBarrier();
  for (var x = lid; x < KT * R; x += WG) {
    let kk = x / R;
    let r = x % R;
    let kp = it.pos0 + kk;
    let p = posr[r];
    var pr = 0.0;
    var ds = 0.0;
    if (kk < it.count && p != 0xffffffffu && kp >= keyLo(p) && kp < keyHi(p)) {
      var s4 = vec4<f32>(0.0);
      for (var c = 0u; c < DK4; c++) { s4 += qs[r * QS + c] * ks[kk * DK4 + c]; }
      pr = exp(s4.x + s4.y + s4.z + s4.w - lrow[r]);
      var d4 = vec4<f32>(0.0);
      for (var c = 0u; c < DV4; c++) { d4 += dos[r * OS + c] * vs[kk * DV4 + c]; }
      ds = pr * (d4.x + d4.y + d4.z + d4.w - drow[r]);
    }
    ps[x] = pr;
    dss[x] = ds;
  }
  workgroupBarrier();
  for (var i = 0u; i < CV; i++) {
    let x = lid + i * WG;
    if (x < KT * DV4) {
      let kk = x / DV4;
      let c = x % DV4;
      var a = accV[i];
      for (var r = 0u; r < R; r++) { a += ps[kk * R + r] * dos[r * OS + c]; }
      accV[i] = a;
    }
  }
  for (var i = 0u; i < CK; i++) {
    let x = lid + i * WG;
    if (x < KT * DK4) {
      let kk = x / DK4;
      let c = x % DK4;
      var a = accK[i];
      for (var r = 0u; r < R; r++) { a += dss[kk * R + r] * qs[r * QS + c]; }
      accK[i] = a;
    }
  }
  workgroupBarrier();
}

@compute @workgroup_size(${k.WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let it = loadItem(P.itemBase + wid.x, lid);
  let kvh = wid.y;
  let nhc = (G + GC - 1u) / GC;
  for (var x = lid; x < KT * DK4; x += WG) {
    var val = vec4<f32>(0.0);
    if (x / DK4 < it.count) { val = loadK(((it.row0 + x / DK4) * P.H + kvh) * DK, x % DK4); }
    ks[x] = val;
  }
  for (var x = lid; x < KT * DV4; x += WG) {
    var val = vec4<f32>(0.0);
    if (x / DV4 < it.count) { val = loadV(((it.row0 + x / DV4) * P.H + kvh) * DV, x % DV4); }
    vs[x] = val;
  }
  // Queries that can see the tile, clipped to the rows bound in this dispatch.
  ${queryRange(k.mode)}
  let chunkLo = it.qFirst + select(0u, P.qRowLo - it.qBase, P.qRowLo > it.qBase);
  let chunkHi = it.qFirst + select(0u, P.qRowHi - it.qBase, P.qRowHi > it.qBase);
  let pLo = max(max(pFirst, it.qFirst), chunkLo);
  let pHi = min(pEnd, chunkHi);
  workgroupBarrier();
${
  selected
    ? `  let j = i32(it.pos0 / P.selBlock);
  if (lid == 0u) { listCount = 0u; }
  var cursor = pLo;
  loop {
    if (cursor >= pHi) { break; }
    let p = cursor + lid;
    var f = 0u;
    if (p < pHi) {
      let base = ((it.qBase + (p - it.qFirst) - P.rowBase) * P.H + kvh) * P.nSel;
      for (var s = 0u; s < P.nSel; s++) { if (blocks[base + s] == j) { f = 1u; } }
    }
    scan[lid] = f;
    workgroupBarrier();
    for (var off = 1u; off < WG; off <<= 1u) {
      let add = select(0u, scan[lid - off], lid >= off);
      workgroupBarrier();
      scan[lid] += add;
      workgroupBarrier();
    }
    let c0 = listCount;
    if (f == 1u) { list[c0 + scan[lid] - 1u] = p; }
    workgroupBarrier();
    if (lid == 0u) { listCount = c0 + scan[WG - 1u]; }
    cursor += WG;
    loop {
      let cnt = workgroupUniformLoad(&listCount);
      if (cnt < TQB) { break; }
      for (var hc = 0u; hc < nhc; hc++) { processQueries(0u, TQB, true, hc, it, kvh, lid); }
      let rest = cnt - TQB;
      var moved = 0u;
      if (lid < rest) { moved = list[lid + TQB]; }
      workgroupBarrier();
      if (lid < rest) { list[lid] = moved; }
      if (lid == 0u) { listCount = rest; }
      workgroupBarrier();
    }
  }
  let cnt = workgroupUniformLoad(&listCount);
  if (cnt > 0u) {
    for (var hc = 0u; hc < nhc; hc++) { processQueries(0u, cnt, true, hc, it, kvh, lid); }
  }`
    : `  for (var p0 = pLo; p0 < pHi; p0 += TQB) {
    let n = min(TQB, pHi - p0);
    for (var hc = 0u; hc < nhc; hc++) { processQueries(p0, n, false, hc, it, kvh, lid); }
  }`
}
  for (var i = 0u; i < CK; i++) {
    let x = lid + i * WG;
    if (x < KT * DK4 && x / DK4 < it.count) {
      let e = ((it.row0 + x / DK4) * P.H + kvh) * DK;
      let c = x % DK4;
      var val = accK[i];
      if (P.accum != 0u) { for (var j2 = 0u; j2 < 4u; j2++) { if (c * 4u + j2 < DK) { val[j2] += dk[e + c * 4u + j2]; } } }
      ${store4('dk', 'e', 'c', 'val', k.DK, 'f32')}
    }
  }
  for (var i = 0u; i < CV; i++) {
    let x = lid + i * WG;
    if (x < KT * DV4 && x / DV4 < it.count) {
      let e = ((it.row0 + x / DV4) * P.H + kvh) * DV;
      let c = x % DV4;
      var val = accV[i];
      if (P.accum != 0u) { for (var j2 = 0u; j2 < 4u; j2++) { if (c * 4u + j2 < DV) { val[j2] += dv[e + c * 4u + j2]; } } }
      ${store4('dv', 'e', 'c', 'val', k.DV, 'f32')}
    }
  }
}
`;
}

function queryRange(mode: Mode): string {
  switch (mode) {
    case 'window':
      return 'let pFirst = it.pos0;\n  let pEnd = min(it.pos0 + it.count - 1u + P.window, it.seqLen);';
    case 'causal':
    case 'selected':
      return 'let pFirst = it.pos0;\n  let pEnd = it.seqLen;';
    case 'compressed':
      return 'let pFirst = it.pos0 * P.cmpStride + P.cmpBlock - 1u;\n  let pEnd = it.seqLen;';
  }
}
