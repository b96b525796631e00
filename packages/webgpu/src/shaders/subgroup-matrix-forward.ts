// Attention forward of a range branch (compressed or window) on subgroup matrices
// ('chromium-experimental-subgroup-matrix': f16 16x16x16 products accumulated in f32), float16
// storage only. One workgroup per (NSG consecutive query tokens, KV head, chunk of 16 heads of its
// GQA group); subgroup s takes token s, so its 16 rows (one token's heads) are one 16-row matrix
// tile. Per tile of KT keys (K, then V, staged in workgroup memory, zero past the keys in use):
//   S = Q K^T   (subgroup matrices, stored to workgroup memory as f32)
//   softmax     (two invocations per row; P written back as f16)
//   O += P V    (O stays in subgroup matrices across tiles)
// O cannot be scaled row by row inside a matrix, so each row keeps a reference maximum that is
// raised only when a tile's maximum passes it by more than TAU (then P <= e^TAU fits f16): only
// then are the O tiles stored, scaled and reloaded. Matrix tiles are read from workgroup memory
// only: Dawn's robustness check on storage tiles zeroes tiles that end near a binding's end.
// `emulate` replaces the builtins by plain WGSL (see subgroup-matrix.ts) for tests; it also takes
// f32 storage (P still rounded to f16), since software adapters lack shader-f16.
import { ITEM_STRUCT, NEG, NEG_HALF, keyRangeFns, type ElementType } from './common.js';
import { MATRIX_SUBGROUP, matrixAttentionHead, matrixOps, tileTransfers } from './subgroup-matrix.js';

export interface MatrixForwardKernel {
  readonly mode: 'compressed' | 'window';
  /** Storage type of q, k, v: f16 (f32 only when emulated). */
  readonly e: ElementType;
  readonly G: number;
  readonly DK: number;
  readonly DV: number;
  /** Keys per tile (a multiple of 16). */
  readonly KT: number;
  /** Subgroups (= query tokens) per workgroup; subgroups hold 32 invocations. */
  readonly NSG: number;
  /** Raise a row's reference maximum when a tile passes it by more than this (0: every time). */
  readonly TAU: number;
  /**
   * Where O lives between key tiles. 'matrix': in result matrices, rescaled lazily (TAU).
   * 'rows': each tile's P V goes to a fresh result matrix, through workgroup memory, into f32
   * registers of the row's two invocations, rescaled exactly at every maximum increase (TAU unused).
   */
  readonly accumulate?: 'matrix' | 'rows';
  /**
   * How key and value tiles are staged and read as right matrices. 'column' (default): key rows
   * and transposed values, read column-major. 'row': transposed keys and value rows, read
   * row-major (a layout check for the H100 fault, run wmat2-1/2).
   */
  readonly rightMajor?: 'column' | 'row';
  /**
   * Global loads of a tile ahead of their use ('column' layout only): the values' loads go out
   * before S = Q K^T and land in workgroup memory after the softmax; the next tile's keys load
   * during P V. Values are read 16 keys x 2 vec4 columns per 32 invocations, so their transposed
   * stores hit distinct banks. false: load and store in place (the previous kernel).
   */
  readonly prefetch?: boolean;
  /** Softmax without per-key masks on tiles that every row of the workgroup sees whole. */
  readonly interior?: boolean;
  readonly emulate: boolean;
}

/** Matrix tiles are 16 x 16. */
export const MATRIX_DIM = 16;

/** Whether the kernel covers these shapes (otherwise the other forward kernels run). */
export function matrixForwardFits(G: number, DK: number, DV: number): boolean {
  return G % MATRIX_DIM === 0 && DK % MATRIX_DIM === 0 && DV % MATRIX_DIM === 0;
}

function strides(k: Pick<MatrixForwardKernel, 'KT' | 'NSG' | 'DK' | 'DV' | 'rightMajor'>): { SS: number; PS: number; KS: number; VS: number; RK: number; VR: number; KVN: number } {
  // f32 scores, f16 probabilities and staged rows, padded (16-byte multiples) to spread banks.
  // The staging area holds the query rows first, then each tile's keys, then its values.
  // 'column': values staged transposed (DV rows of KT keys, stride VS), read column-major as keys
  // are. 'row': keys staged transposed (DK rows of KT keys, stride RK), values as rows (stride VR).
  const KS = k.DK + 8;
  const VS = k.KT + 8;
  const RK = k.KT + 8;
  const VR = k.DV + 8;
  const queries = k.NSG * MATRIX_DIM * KS;
  const KVN = k.rightMajor === 'row' ? Math.max(queries, k.DK * RK, k.KT * VR) : Math.max(Math.max(k.KT, k.NSG * MATRIX_DIM) * KS, k.DV * VS);
  return { SS: k.KT + 4, PS: k.KT + 8, KS, VS, RK, VR, KVN };
}

/** Workgroup-memory bytes the kernel declares. */
export function matrixForwardSharedBytes(k: Pick<MatrixForwardKernel, 'KT' | 'NSG' | 'e' | 'DK' | 'DV' | 'rightMajor'>): number {
  const { SS, PS, KVN } = strides(k);
  const rows = k.NSG * MATRIX_DIM;
  const es = k.e === 'f16' ? 2 : 4;
  return rows * SS * 4 + rows * PS * es + KVN * es + rows * 4 + 64;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

export function matrixForwardShader(k: MatrixForwardKernel): string {
  const { KT, NSG, DK, DV } = k;
  if (KT % MATRIX_DIM !== 0 || !matrixForwardFits(k.G, DK, DV)) throw new Error(`matrix forward: KT ${KT}, G ${k.G}, DK ${DK}, DV ${DV} must be multiples of 16`);
  if (k.e !== 'f16' && !k.emulate) throw new Error('matrix forward: subgroup matrices take f16 operands');
  const { SS, PS, KS, VS, RK, VR, KVN } = strides(k);
  const rowMajor = k.rightMajor === 'row';
  const E = k.e;
  // P and the staged rows as stored: f16, or f32 (P rounded to f16) when emulated over f32 storage.
  const toP = (x: string) => (E === 'f16' ? `f16(${x})` : `unpack2x16float(pack2x16float(vec2<f32>(${x}, 0.0))).x`);
  const WG = NSG * MATRIX_SUBGROUP;
  const NR = NSG * MATRIX_DIM;
  const D = range(DK / MATRIX_DIM);
  const C = range(DV / MATRIX_DIM);
  const J = range(KT / MATRIX_DIM);
  const HALF = KT / 2;
  const qs = D.map((d) => `q${d}`);
  const os = C.map((c) => `o${c}`);
  const ps = J.map((j) => `p${j}`);
  const op = matrixOps(k.emulate, [...qs, ...os, ...ps, 'acc'], { kv: 'KVN', sbuf: 'SBUF', pbuf: 'PBUF' }, ['sbuf']);
  // Rows of the subgroup's 16 x 16 scratch tile in sbuf, r = lid / 2: the two invocations of a row
  // take 8 columns each. (With 32-invocation subgroups they belong to the subgroup that owns the row.)
  const scratchPass = (body: string) => `    {
      let c0 = (lid % 2u) * 8u;
      for (var c = c0; c < c0 + 8u; c++) { ${body} }
    }`;
  // Rows [0, n) of 'buf' (vec4 columns of width dim4) into kv rows of this stride, zero where
  // 'valid' is false (transposed: element (rr, col) to kv[col * stride + rr]).
  const stage = (n: string, dim4: string, valid: string, at: string, transposed = false, stride = 'KS') => `    for (var x = lid; x < ${n} * ${dim4}; x += WG) {
      let rr = x / ${dim4};
      let c4 = x % ${dim4};
      var v = vec4<${E}>(0.0);
      if (${valid}) { v = ${at}; }
${
  transposed
    ? `      let w = c4 * 4u * ${stride} + rr;
      kv[w] = v.x; kv[w + ${stride}] = v.y; kv[w + 2u * ${stride}] = v.z; kv[w + 3u * ${stride}] = v.w;`
    : `      let w = rr * ${stride} + c4 * 4u;
      kv[w] = v.x; kv[w + 1u] = v.y; kv[w + 2u] = v.z; kv[w + 3u] = v.w;`
}
    }`;
  // Prefetch: each invocation's share of a tile in registers (layout: tileTransfers).
  const prefetch = k.prefetch === true && !rowMajor;
  const nK = Math.ceil((KT * DK) / 4 / WG);
  const nV = Math.ceil((KT * DV) / 4 / WG);
  const transfers = tileTransfers(E, WG, nK, nV, (kp) => `((gbase + ${kp} - P.keyRowBase) * P.H + kvh)`);
  const { storeK, loadV, storeV } = transfers;
  const loadK = (tileStart: string) => transfers.loadK(tileStart, 'kEnd');
  // Right tiles: keys j (16 keys) x dims d of K^T, and keys j x value columns c of V.
  const kRight = (j: number, d: number, c: string) =>
    rowMajor ? op.mmaFrom(`q${d}`, 'kv', `${d * 16}u * RK + ${j * 16}u`, false, 'RK', c) : op.mmaFrom(`q${d}`, 'kv', `${j * 16}u * KS + ${d * 16}u`, true, 'KS', c);
  const vRight = (p: string, j: number, c: number, acc: string) =>
    rowMajor ? op.mmaFrom(p, 'kv', `${j * 16}u * VR + ${c * 16}u`, false, 'VR', acc) : op.mmaFrom(p, 'kv', `${c * 16}u * VS + ${j * 16}u`, true, 'VS', acc);
  const rows = k.accumulate === 'rows';
  // O += P V with O in registers: per 16 columns, the tile's product in a fresh result matrix,
  // through this subgroup's scratch tile in sbuf (S is consumed), added to the rescaled rows.
  const rowsAccumulate = `${J.map((j) => `    ${op.load(`p${j}`, 'left', 'pbuf', `pRow + ${j * 16}u`, 'PS')}`).join('\n')}
${C.map(
  (c) => `    {
      ${op.zero('acc')}
${J.map((j) => `      ${vRight(`p${j}`, j, c, 'acc')}`).join('\n')}
      ${op.store('sbuf', 'sRow', 'acc', 'SS')}
    }
    workgroupBarrier();
${scratchPass(`orow[${c * 8}u + c - c0] = orow[${c * 8}u + c - c0] * alphaMine + sbuf[r * SS + c];`)}
    workgroupBarrier();`,
).join('\n')}`;
  const keyRow = `((gbase + kp0 + rr - P.keyRowBase) * P.H + kvh)`;
  const tile = `${prefetch ? storeK : stage('KT', 'DK4', 'kp0 + rr < kEnd', `kbuf[${keyRow} * DK4 + c4]`, rowMajor, rowMajor ? 'RK' : 'KS')}
    workgroupBarrier();
${prefetch ? `    // This tile's values: loads out now, stored after the softmax.\n${loadV}` : ''}
    // S = Q K^T, one 16-key block at a time (K^T: column-major view of the staged key rows, or
    // the staged transposed keys read row-major).
${J.map(
  (j) => `    {
      ${op.zero('acc')}
${D.map((d) => `      ${kRight(j, d, 'acc')}`).join('\n')}
      ${op.store('sbuf', `sRow + ${j * 16}u`, 'acc', 'SS')}
    }`,
).join('\n')}
    workgroupBarrier();
    // Softmax of this invocation's half row; the tile's values replace its keys meanwhile.
    {
      var tmax = NEG;
${k.interior ? `      if (whole) {
        for (var kk = kLane; kk < kLane + HALF; kk++) { tmax = max(tmax, sbuf[r * SS + kk] * P.scale); }
      } else {
  ` : ''}      for (var kk = kLane; kk < kLane + HALF; kk++) {
        let s = sbuf[r * SS + kk] * P.scale;
        tmax = max(tmax, select(NEG, s, visible(p, kp0 + kk, kEnd, rowOk)));
      }
${k.interior ? '      }\n' : ''}      tmax = max(tmax, subgroupShuffleXor(tmax, 1u));
      var alpha = 1.0;
      if (ROWS) {
        if (tmax > m) {
          alpha = exp(m - tmax);
          m = tmax;
          l = l * alpha;
        }
      } else if (tmax > NEG_HALF) {
        if (m <= NEG_HALF) {
          m = tmax;
        } else if (tmax > m + TAU) {
          // O holds sums against the old reference: scale them (below) and the partial sum.
          alpha = exp(m - tmax);
          m = tmax;
          l = l * alpha;
          rescale[0] = 1u;
        }
      }
      if (lid % 2u == 0u) { alphaRow[r] = alpha; }
      alphaMine = alpha;
${k.interior ? `      if (whole) {
        for (var kk = kLane; kk < kLane + HALF; kk++) {
          let e = exp(sbuf[r * SS + kk] * P.scale - m);
          l += e;
          pbuf[r * PS + kk] = ${toP('e')};
        }
      } else {
  ` : ''}      for (var kk = kLane; kk < kLane + HALF; kk++) {
        let ok = visible(p, kp0 + kk, kEnd, rowOk);
        let e = select(0.0, exp(select(-100.0, sbuf[r * SS + kk] * P.scale - m, ok)), ok);
        l += e;
        pbuf[r * PS + kk] = ${toP('e')};
      }
${k.interior ? '      }\n' : ''}    }
${prefetch ? `${storeV}\n    // The next tile's keys load during P V.\n${loadK('(kp0 + KT)')}` : stage('KT', 'DV4', 'kp0 + rr < kEnd', `vbuf[${keyRow} * DV4 + c4]`, !rowMajor, rowMajor ? 'VR' : 'VS')}
    // P and V must be visible to the matrix loads: a full barrier (workgroupUniformLoad's own
    // synchronization did not make them visible on the H100).
    workgroupBarrier();
${rows ? rowsAccumulate : `    if (workgroupUniformLoad(&rescale[0]) != 0u) {
${C.map(
  (c) => `      ${op.store('sbuf', 'sRow', `o${c}`, 'SS')}
      workgroupBarrier();
${scratchPass('sbuf[r * SS + c] *= alphaRow[r];')}
      workgroupBarrier();
      ${op.load(`o${c}`, 'result', 'sbuf', 'sRow', 'SS')}
      workgroupBarrier();`,
).join('\n')}
      if (lid == 0u) { rescale[0] = 0u; }
    }
    // O += P V.
${J.map((j) => `    ${op.load(`p${j}`, 'left', 'pbuf', `pRow + ${j * 16}u`, 'PS')}`).join('\n')}
${C.map((c) => J.map((j) => `    ${vRight(`p${j}`, j, c, `o${c}`)}`).join('\n')).join('\n')}`}
    workgroupBarrier();`;

  const rowOut = `(it.row0 + r / 16u - P.rowBase) * P.HQ + kvh * G + hc * 16u + r % 16u`;
  const epilogue = `  l += subgroupShuffleXor(l, 1u);
  let inv = select(0.0, 1.0 / max(l, 1.0e-30), l > 0.0);
  let row = ${rowOut};
  if (rowOk && lid % 2u == 0u) { stats[row] = select(NEG, m + log(max(l, 1.0e-30)), l > 0.0); }
${rows ? `  if (rowOk) {
${C.map((c) => scratchPass(`out[row * DV + ${c * 16}u + c] = orow[${c * 8}u + c - c0] * inv;`)).join('\n')}
  }` : C.map(
  (c) => `  ${op.store('sbuf', 'sRow', `o${c}`, 'SS')}
  workgroupBarrier();
  if (rowOk) {
${scratchPass(`out[row * DV + ${c * 16}u + c] = sbuf[r * SS + c] * inv;`)}
  }
  workgroupBarrier();`,
).join('\n')}`;

  return `${matrixAttentionHead(E, k.emulate)}
const G = ${k.G}u;
const DK = ${DK}u;
const DV = ${DV}u;
const KT = ${KT}u;
const KB = ${KT / MATRIX_DIM}u;
const HALF = ${HALF}u;
const SS = ${SS}u;
const PS = ${PS}u;
const NR = ${NR}u;
const WG = ${WG}u;
const SBUF = ${NR * SS}u;
const PBUF = ${NR * PS}u;
const DK4 = ${DK / 4}u;
const DV4 = ${DV / 4}u;
const KS = ${KS}u;
const VS = ${VS}u;
const RK = ${RK}u;
const VR = ${VR}u;
const KVN = ${KVN}u;
const TAU = ${k.TAU.toFixed(1)};
const ROWS = ${rows};
const NEG = ${NEG};
const NEG_HALF = ${NEG_HALF};

${ITEM_STRUCT}
${keyRangeFns(k.mode)}
var<workgroup> sbuf: array<f32, ${NR * SS}>;
var<workgroup> pbuf: array<${E}, ${NR * PS}>;
var<workgroup> kv: array<${E}, ${KVN}>;
var<workgroup> alphaRow: array<f32, ${NR}>;
// Every workgroup variable takes a multiple of 16 bytes (rescale too): the driver places them in an
// order of its own, and the cooperative-matrix loads and stores need 16-byte aligned array bases.
// With a 4-byte rescale the H100 read and wrote every tile 4 bytes off (BENCHMARKS, run wmat4-2).
var<workgroup> rescale: array<u32, 4>;
${op.decls}
fn visible(p: u32, kp: u32, kEnd: u32, rowOk: bool) -> bool {
  return rowOk && kp < kEnd && kp >= keyLo(p) && kp < keyHi(p);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let it = loadItem(P.itemBase + wid.x, lid);
  let nhc = G / 16u;
  let kvh = wid.y / nhc;
  let hc = wid.y % nhc;
  let sg = lid / ${MATRIX_SUBGROUP}u;
${k.emulate ? `  emuOn = lid % ${MATRIX_SUBGROUP}u == 0u;\n` : ''}  // Query rows through the staging area: row rr is head rr % 16 of token rr / 16 (the item's last
  // token where the item is shorter; those rows are not written).
${stage('NR', 'DK4', 'true', 'q[((it.row0 + min(rr / 16u, it.count - 1u) - P.rowBase) * P.HQ + kvh * G + hc * 16u + rr % 16u) * DK4 + c4]').replace(/^ {4}/gm, '  ')}
  workgroupBarrier();
${qs.map((n) => `  ${op.declare(n, 'left')}`).join('\n')}
${ps.map((n) => `  ${op.declare(n, 'left')}`).join('\n')}
  ${op.declare('acc', 'result')}
${D.map((d) => `  ${op.load(`q${d}`, 'left', 'kv', `sg * 16u * KS + ${d * 16}u`, 'KS')}`).join('\n')}
  workgroupBarrier();
  let sRow = sg * 16u * SS;
  let pRow = sg * 16u * PS;
  // This invocation's row r (of the subgroup's token) and half of the key tile.
  let r = lid / 2u;
  let rowOk = r / 16u < it.count;
  let p = it.pos0 + r / 16u;
  let kLane = (lid % 2u) * HALF;
  var m = NEG;
  var l = 0.0;
  // 'rows': this invocation's 8 columns of each 16-column O tile, and its row's last rescale factor.
  var orow: array<f32, ${rows ? DV / 2 : 1}>;
  var alphaMine = 1.0;
${os.map((n) => `  ${op.declare(n, 'result')}`).join('\n')}
${k.emulate ? os.map((n) => `  ${op.zero(n)}`).join('\n') : ''}
  if (lid == 0u) { rescale[0] = 0u; }
  let gbase = ${k.mode === 'compressed' ? 'it.cmpBase' : 'it.keyBase'};
  // Union of the item's key ranges in KT-key tiles.
  let lo = keyLo(it.pos0);
  let kEnd = keyHi(it.pos0 + it.count - 1u);
  let ntiles = select(0u, (kEnd - lo + KT - 1u) / KT, kEnd > lo);
${prefetch ? range(nK).map((i) => `  var kr${i}: vec4<${E}>;`).join('\n') + '\n' + range(nV).map((i) => `  var vr${i}: vec4<${E}>;`).join('\n') + '\n' + loadK('lo').replace(/^ {2}/gm, '') : ''}
${k.interior ? `  // Tiles inside every row's key range (keyLo, keyHi rise with the position) need no masks.
  let allRows = it.count == ${NSG}u;
  let lastLo = keyLo(it.pos0 + it.count - 1u);
  let firstHi = keyHi(it.pos0);
` : ''}  for (var t = 0u; t < ntiles; t++) {
    let kp0 = lo + t * KT;
${k.interior ? '    let whole = allRows && kp0 >= lastLo && kp0 + KT <= firstHi;\n' : ''}${tile}
  }
${epilogue}
}
`;
}
