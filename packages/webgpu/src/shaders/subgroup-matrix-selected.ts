// Selected-branch attention forward on subgroup matrices ('chromium-experimental-subgroup-matrix':
// f16 16x16x16 products accumulated in f32), float16 storage only (f32 when emulated, tests).
// One workgroup per (query token, KV head, chunk of 16 heads of its GQA group): the 16 heads see
// the same selected blocks, so they are one 16-row matrix tile. Every token chooses its own blocks,
// so no key tile is shared between tokens; instead the NSG = KT / 16 subgroups of the workgroup
// share one token's tile of KT keys:
//   S = Q K^T   subgroup s computes the scores of keys 16s..16s+15 (one 16 x 16 result tile)
//   softmax     LPR = 2 NSG invocations per row, KT / LPR keys each, lazily rescaled as in
//               subgroup-matrix-forward.ts (a row's reference maximum rises only past TAU)
//   O += P V    subgroup s holds the output column tiles s, s + NSG, ...
// The token's tiles (blocks cut into KT keys, clipped at its position) are listed in workgroup
// memory first; each tile's keys load into registers during the previous tile's P V and its
// values during S = Q K^T (as `prefetch` of the range kernel).
import { ITEM_STRUCT, NEG, NEG_HALF, type ElementType } from './common.js';
import { MATRIX_SUBGROUP, matrixAttentionHead, matrixOps, tileTransfers } from './subgroup-matrix.js';

export interface MatrixSelectedKernel {
  /** Storage type of q, k, v: f16 (f32 only when emulated). */
  readonly e: ElementType;
  readonly G: number;
  readonly DK: number;
  readonly DV: number;
  /** Keys per tile: 16, 32 or 64 (one 16-key score tile per subgroup). */
  readonly KT: number;
  /** Selected blocks per token and their size (compile-time: they size the tile list). */
  readonly nSel: number;
  readonly selBlock: number;
  /** Raise a row's reference maximum when a tile passes it by more than this (0: every time). */
  readonly TAU: number;
  readonly emulate: boolean;
}

const DIM = 16;
const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const pad4 = (n: number) => Math.ceil(n / 4) * 4;

function layout(k: Pick<MatrixSelectedKernel, 'KT' | 'DK' | 'DV' | 'nSel' | 'selBlock'>) {
  const NSG = k.KT / DIM;
  // Padded strides (16-byte multiples; rows of S 8 floats apart mod 32 banks): keys staged as rows
  // (KS), values transposed (VS), f32 scores (SS), f16 probabilities (PS).
  const KS = k.DK + 8;
  const VS = k.KT + 8;
  const SS = k.KT + 8;
  const PS = k.KT + 8;
  const KVN = Math.max(k.KT * KS, k.DV * VS, DIM * KS);
  const MAXT = k.nSel * Math.ceil(k.selBlock / k.KT);
  return { NSG, WG: NSG * MATRIX_SUBGROUP, KS, VS, SS, PS, KVN, MAXT };
}

/** Whether the kernel covers these shapes (otherwise the tiled kernel runs). */
export function matrixSelectedFits(G: number, DK: number, DV: number): boolean {
  return G % DIM === 0 && DK % DIM === 0 && DV % DIM === 0;
}

/** Workgroup-memory bytes the kernel declares. */
export function matrixSelectedSharedBytes(k: Pick<MatrixSelectedKernel, 'KT' | 'DK' | 'DV' | 'nSel' | 'selBlock' | 'e'>): number {
  const { SS, PS, KVN, MAXT } = layout(k);
  const es = k.e === 'f16' ? 2 : 4;
  return DIM * SS * 4 + DIM * PS * es + KVN * es + DIM * 4 + 2 * pad4(MAXT) * 4 + pad4(k.nSel) * 4 + 16 + 32;
}

export function matrixSelectedShader(k: MatrixSelectedKernel): string {
  const { KT, DK, DV } = k;
  if (![16, 32, 64].includes(KT) || !matrixSelectedFits(k.G, DK, DV)) throw new Error(`matrix selected: KT ${KT} must be 16, 32 or 64 and G ${k.G}, DK ${DK}, DV ${DV} multiples of 16`);
  if (k.e !== 'f16' && !k.emulate) throw new Error('matrix selected: subgroup matrices take f16 operands');
  const { NSG, WG, KS, VS, SS, PS, KVN, MAXT } = layout(k);
  const E = k.e;
  const toP = (x: string) => (E === 'f16' ? `f16(${x})` : `unpack2x16float(pack2x16float(vec2<f32>(${x}, 0.0))).x`);
  const LPR = WG / DIM;
  const KPL = KT / LPR;
  const D = range(DK / DIM);
  const J = range(KT / DIM);
  const NC = DV / DIM;
  // Output column tiles of this subgroup: o{i} is tile sg + i NSG (where that is < NC).
  const NO = Math.ceil(NC / NSG);
  const O = range(NO);
  const ownsAll = NC % NSG === 0;
  const owns = (i: number, body: string) => (ownsAll ? body : `if (sg + ${i * NSG}u < ${NC}u) { ${body} }`);
  const qs = D.map((d) => `q${d}`);
  const os = O.map((i) => `o${i}`);
  const ps = J.map((j) => `p${j}`);
  const op = matrixOps(k.emulate, [...qs, ...os, ...ps, 'acc'], { kv: 'KVN', sbuf: 'SBUF', pbuf: 'PBUF' }, ['sbuf']);
  const masks: number[] = [];
  for (let m = 1; m < LPR; m *= 2) masks.push(m);
  // Each invocation's share of a tile, in registers (layout: tileTransfers).
  const nK = Math.ceil((KT * DK) / 4 / WG);
  const nV = Math.ceil((KT * DV) / 4 / WG);
  const keyRow = (kp: string) => `((it.keyBase + ${kp} - P.keyRowBase) * P.H + kvh)`;
  const { loadK, storeK, loadV, storeV } = tileTransfers(E, WG, nK, nV, keyRow);
  // This subgroup's 16 x 16 scratch tile: columns 16 sg.. of sbuf; rows (lid % 32) / 2, 8 columns per invocation.
  const scratchPass = (body: string) => `    {
      let sr = (lid % 32u) / 2u;
      let c0 = (lid % 2u) * 8u;
      for (var c = c0; c < c0 + 8u; c++) { ${body} }
    }`;
  const scratch = 'sg * 16u';

  const tile = `${storeK}
    workgroupBarrier();
    // This tile's values: loads out now, stored after the softmax.
${loadV}
    // S = Q K^T for this subgroup's 16 keys (K^T: column-major view of the staged key rows).
    ${op.zero('acc')}
${D.map((d) => `    ${op.mmaFrom(`q${d}`, 'kv', `sg * 16u * KS + ${d * 16}u`, true, 'KS', 'acc')}`).join('\n')}
    ${op.store('sbuf', scratch, 'acc', 'SS')}
    workgroupBarrier();
    // Softmax: keys lane, lane + LPR, ... of row r (consecutive lanes read consecutive keys).
    {
      let n = kEnd - kp0;
      var tmax = NEG;
      for (var i = 0u; i < KPL; i++) {
        let kk = lane + i * LPR;
        tmax = max(tmax, select(NEG, sbuf[r * SS + kk] * P.scale, kk < n));
      }
${masks.map((m) => `      tmax = max(tmax, subgroupShuffleXor(tmax, ${m}u));`).join('\n')}
      var alpha = 1.0;
      if (m <= NEG_HALF) {
        m = tmax;
      } else if (tmax > m + TAU) {
        // O holds sums against the old reference: scale them (below) and the partial sum.
        alpha = exp(m - tmax);
        m = tmax;
        l = l * alpha;
        flags[0] = 1u;
      }
      if (lane == 0u) { alphaRow[r] = alpha; }
      for (var i = 0u; i < KPL; i++) {
        let kk = lane + i * LPR;
        let ok = kk < n;
        let e = select(0.0, exp(select(-100.0, sbuf[r * SS + kk] * P.scale - m, ok)), ok);
        l += e;
        pbuf[r * PS + kk] = ${toP('e')};
      }
    }
${storeV}
    // The next tile's keys load during P V.
    if (t + 1u < ntiles) {
      let nlo = tileLo[t + 1u];
      let nhi = tileHi[t + 1u];
${loadK('nlo', 'nhi').replace(/^/gm, '  ')}
    }
    workgroupBarrier();
    if (workgroupUniformLoad(&flags[0]) != 0u) {
${O.map(
  (i) => `      ${owns(i, op.store('sbuf', scratch, `o${i}`, 'SS'))}
      workgroupBarrier();
${scratchPass(`sbuf[sr * SS + ${scratch} + c] *= alphaRow[sr];`)}
      workgroupBarrier();
      ${owns(i, op.load(`o${i}`, 'result', 'sbuf', scratch, 'SS'))}
      workgroupBarrier();`,
).join('\n')}
      if (lid == 0u) { flags[0] = 0u; }
    }
    // O += P V for this subgroup's column tiles.
${J.map((j) => `    ${op.load(`p${j}`, 'left', 'pbuf', `${j * 16}u`, 'PS')}`).join('\n')}
${O.map((i) => `    ${owns(i, J.map((j) => op.mmaFrom(`p${j}`, 'kv', `(sg + ${i * NSG}u) * 16u * VS + ${j * 16}u`, true, 'VS', `o${i}`)).join(' '))}`).join('\n')}
    workgroupBarrier();`;

  const epilogue = `${masks.map((m) => `  l += subgroupShuffleXor(l, ${m}u);`).join('\n')}
  if (lane == 0u) {
    stats[qrow0 + r] = select(NEG, m + log(max(l, 1.0e-30)), l > 0.0);
    alphaRow[r] = select(0.0, 1.0 / max(l, 1.0e-30), l > 0.0);
  }
${O.map(
  (i) => `  ${owns(i, op.store('sbuf', scratch, `o${i}`, 'SS'))}
  workgroupBarrier();
  if (sg + ${i * NSG}u < ${NC}u) {
${scratchPass(`out[(qrow0 + sr) * DV + (sg + ${i * NSG}u) * 16u + c] = sbuf[sr * SS + ${scratch} + c] * alphaRow[sr];`)}
  }
  workgroupBarrier();`,
).join('\n')}`;

  return `${matrixAttentionHead(E, k.emulate)}
@group(0) @binding(7) var<storage, read> blocks: array<i32>;
const G = ${k.G}u;
const DK = ${DK}u;
const DV = ${DV}u;
const KT = ${KT}u;
const KB = ${KT / DIM}u;
const NSEL = ${k.nSel}u;
const NSELP = ${pad4(k.nSel)}u;
const MAXTP = ${pad4(MAXT)}u;
const LPR = ${LPR}u;
const KPL = ${KPL}u;
const SS = ${SS}u;
const PS = ${PS}u;
const KS = ${KS}u;
const VS = ${VS}u;
const KVN = ${KVN}u;
const SBUF = ${DIM * SS}u;
const PBUF = ${DIM * PS}u;
const DK4 = ${DK / 4}u;
const DV4 = ${DV / 4}u;
const TAU = ${k.TAU.toFixed(1)};
const NEG = ${NEG};
const NEG_HALF = ${NEG_HALF};

${ITEM_STRUCT}
var<workgroup> sbuf: array<f32, SBUF>;
var<workgroup> pbuf: array<${E}, PBUF>;
var<workgroup> kv: array<${E}, KVN>;
// Per row: the tile's rescale factor, at the end 1 / l.
var<workgroup> alphaRow: array<f32, 16>;
// The token's tiles [tileLo, tileHi) of keys, and its blocks. Every workgroup variable takes a
// multiple of 16 bytes: the cooperative-matrix loads and stores need 16-byte aligned bases.
var<workgroup> tileLo: array<u32, MAXTP>;
var<workgroup> tileHi: array<u32, MAXTP>;
var<workgroup> chosen: array<i32, NSELP>;
// [0]: some row raised its reference maximum this tile; [1]: tiles.
var<workgroup> flags: array<u32, 4>;
${op.decls}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let it = loadItem(P.itemBase + wid.x, lid);
  let nhc = G / 16u;
  let kvh = wid.y / nhc;
  let hc = wid.y % nhc;
  let sg = lid / ${MATRIX_SUBGROUP}u;
${k.emulate ? `  emuOn = lid % ${MATRIX_SUBGROUP}u == 0u;\n` : ''}  let p = it.pos0;
  // Query rows of the 16 heads (staged through kv) and the token's blocks.
  let qrow0 = (it.row0 - P.rowBase) * P.HQ + kvh * G + hc * 16u;
  for (var x = lid; x < 16u * DK4; x += ${WG}u) {
    let v = q[(qrow0 + x / DK4) * DK4 + x % DK4];
    let w = (x / DK4) * KS + (x % DK4) * 4u;
    kv[w] = v.x; kv[w + 1u] = v.y; kv[w + 2u] = v.z; kv[w + 3u] = v.w;
  }
  if (lid < NSEL) { chosen[lid] = blocks[((it.row0 - P.rowBase) * P.H + kvh) * NSEL + lid]; }
  if (lid == 0u) { flags[0] = 0u; }
  workgroupBarrier();
  if (lid == 0u) {
    var n = 0u;
    for (var s = 0u; s < NSEL; s++) {
      let j = chosen[s];
      if (j < 0) { continue; }
      let b0 = u32(j) * P.selBlock;
      let b1 = min(b0 + P.selBlock, p + 1u);
      for (var kp = b0; kp < b1; kp += KT) {
        tileLo[n] = kp;
        tileHi[n] = min(kp + KT, b1);
        n++;
      }
    }
    flags[1] = n;
  }
${qs.map((n) => `  ${op.declare(n, 'left')}`).join('\n')}
${ps.map((n) => `  ${op.declare(n, 'left')}`).join('\n')}
  ${op.declare('acc', 'result')}
${D.map((d) => `  ${op.load(`q${d}`, 'left', 'kv', `${d * 16}u`, 'KS')}`).join('\n')}
  let ntiles = workgroupUniformLoad(&flags[1]);
  // This invocation's row r and its keys lane, lane + LPR, ... of each tile.
  let r = lid / LPR;
  let lane = lid % LPR;
  var m = NEG;
  var l = 0.0;
${os.map((n) => `  ${op.declare(n, 'result')}`).join('\n')}
${k.emulate ? os.map((n) => `  ${op.zero(n)}`).join('\n') : ''}
${range(nK).map((i) => `  var kr${i}: vec4<${E}>;`).join('\n')}
${range(nV).map((i) => `  var vr${i}: vec4<${E}>;`).join('\n')}
  if (ntiles > 0u) {
    let nlo = tileLo[0];
    let nhi = tileHi[0];
${loadK('nlo', 'nhi')}
  }
  for (var t = 0u; t < ntiles; t++) {
    let kp0 = tileLo[t];
    let kEnd = tileHi[t];
${tile}
  }
${epilogue}
}
`;
}
