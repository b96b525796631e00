// Register-tiled attention forward (online softmax) for every branch: one workgroup per tile of
// R rows (query tokens x heads of one GQA group) and one KV head, so each K/V tile in workgroup
// memory serves all R rows. Invocation (rg, kg) of NRG x NKG keeps, in registers, the scores of
// its RM rows against KN keys (kg, kg + NKG, ...) and the output accumulator of its RM rows over
// the vec4 columns kg, kg + NKG, ...; every loop over a micro-tile is unrolled by the generator so
// the compiler sees plain scalar registers. Row maxima and sums are combined across the NKG
// invocations of a row through subgroup shuffles where the device has `subgroups` and the
// invocations of a row group are aligned lanes, otherwise through workgroup memory.
import { ITEM_STRUCT, NEG, NEG_HALF, enableF16, keyRangeFns, load4, paramsStruct, rowTileStart, storageArray, store4, type ElementType, type Mode } from './common.js';

export interface TiledForwardKernel {
  readonly mode: Mode;
  readonly e: ElementType;
  readonly G: number;
  /** Heads per workgroup (a chunk of the group). */
  readonly GC: number;
  /** Query tokens per workgroup (1 in selected mode). */
  readonly TQB: number;
  readonly DK: number;
  readonly DV: number;
  /** Keys per tile. */
  readonly KT: number;
  /** Rows per invocation. */
  readonly RM: number;
  /** Invocations sharing a row group (key groups). */
  readonly NKG: number;
  /** Write unnormalised partial results of one key split (decoding). */
  readonly split: boolean;
  /** Combine row statistics with subgroupShuffleXor (needs the `subgroups` feature). */
  readonly subgroups: boolean;
  /**
   * Issue all of an invocation's K (or V) tile loads before storing them to workgroup memory (a
   * loop waits out one global load per iteration); used where the tile divides evenly among the
   * invocations.
   */
  readonly batchLoads?: boolean;
  /** Keep P in vec4 rows and read 4 keys' weights per load in P x V (false: one scalar per key). */
  readonly vecP?: boolean;
  /**
   * Load the next K tile into registers during this tile's softmax and P x V, and the V tile during
   * the scores (with batchLoads, where both tiles divide evenly among the invocations).
   */
  readonly prefetch?: boolean;
}

/** Padded rows (a multiple of RM) and invocations per workgroup. */
export function tiledShape(k: Pick<TiledForwardKernel, 'GC' | 'TQB' | 'RM' | 'NKG'>): { RP: number; WG: number } {
  const RP = Math.ceil((k.GC * k.TQB) / k.RM) * k.RM;
  return { RP, WG: (RP / k.RM) * k.NKG };
}

/** Workgroup-memory bytes the kernel declares. */
export function tiledSharedBytes(k: Pick<TiledForwardKernel, 'GC' | 'TQB' | 'RM' | 'NKG' | 'DK' | 'DV' | 'KT' | 'vecP'>): number {
  const { RP } = tiledShape(k);
  const DK4 = Math.ceil(k.DK / 4);
  const KVS = Math.max(DK4, Math.ceil(k.DV / 4)) + 1;
  return 16 * (RP * (DK4 + 1) + k.KT * KVS) + 4 * (RP * (k.vecP && (k.KT / k.NKG) % 4 === 0 ? k.KT + 4 : k.KT + 1) + RP * k.NKG + RP) + 64;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

export function tiledForwardShader(k: TiledForwardKernel): string {
  const { RM, NKG, KT } = k;
  const { RP, WG } = tiledShape(k);
  const KN = KT / NKG;
  if (!Number.isInteger(KN)) throw new Error(`tiled forward: KT ${KT} is not a multiple of NKG ${NKG}`);
  const DK4 = Math.ceil(k.DK / 4);
  const DV4 = Math.ceil(k.DV / 4);
  const CV = Math.ceil(DV4 / NKG);
  const KVS = Math.max(DK4, DV4) + 1;
  const selected = k.mode === 'selected';
  const I = range(RM);
  const J = range(KN);
  const U = range(CV);
  const E = k.e;
  const sub = k.subgroups;
  // vec4 P: each invocation writes its scores of keys kg + NKG (4 jj + c), c = 0..3, as one vec4
  // (no two invocations write parts of one vec4); needs KN a multiple of 4, else scalar P.
  const vecP = k.vecP === true && KN % 4 === 0;
  // One K or V tile into kv: a loop, or (batchLoads, when the tile divides evenly) every load of
  // this invocation first, then the stores. Rows past kEnd read the last key (a valid row) and are
  // stored as zeros, so the loads need no branch.
  const loadTile = (fn: string, dim: string, D4: number) => {
    const per = (KT * D4) / WG;
    if (!k.batchLoads || !Number.isInteger(per)) {
      return `    for (var x = lid; x < KT * ${D4}u; x += WG) {
      let kp = kp0 + x / ${D4}u;
      var val = vec4<f32>(0.0);
      if (kp < kEnd) { val = ${fn}(((gbase + kp - P.keyRowBase) * P.H + kvh) * ${dim}, x % ${D4}u); }
      kv[(x / ${D4}u) * KVS + x % ${D4}u] = val;
    }`;
    }
    const n = range(per);
    return `    {
${n
  .map(
    (m) => `      let bk${m} = kp0 + (lid + ${m * WG}u) / ${D4}u;
      let g${m} = select(vec4<f32>(0.0), ${fn}(((gbase + min(bk${m}, kEnd - 1u) - P.keyRowBase) * P.H + kvh) * ${dim}, (lid + ${m * WG}u) % ${D4}u), bk${m} < kEnd);`,
  )
  .join('\n')}
${n.map((m) => `      kv[(bk${m} - kp0) * KVS + (lid + ${m * WG}u) % ${D4}u] = g${m};`).join('\n')}
    }`;
  };
  // Lane masks of the NKG invocations of a row group: they are consecutive local indices.
  const masks: number[] = [];
  for (let m = 1; m < NKG; m *= 2) masks.push(m);

  const rowMax = (v: string) =>
    sub
      ? masks.map((m) => `${v} = max(${v}, subgroupShuffleXor(${v}, ${m}u));`).join(' ')
      : '';
  const rowSum = (v: string) =>
    sub
      ? masks.map((m) => `${v} = ${v} + subgroupShuffleXor(${v}, ${m}u);`).join(' ')
      : '';

  const scores = `${I.flatMap((i) => J.map((j) => `    var a${i}_${j} = vec4<f32>(0.0);`)).join('\n')}
    for (var d = 0u; d < DK4; d++) {
${I.map((i) => `      let q${i} = qs[(r0 + ${i}u) * QS + d];`).join('\n')}
${J.map((j) => `      let k${j} = kv[(kg + ${j * NKG}u) * KVS + d];`).join('\n')}
${I.flatMap((i) => J.map((j) => `      a${i}_${j} = fma(q${i}, k${j}, a${i}_${j});`)).join('\n')}
    }
${I.flatMap((i) =>
  J.map(
    (j) =>
      `    let s${i}_${j} = select(NEG, dot(a${i}_${j}, vec4<f32>(1.0)), visible(p${i}, kp0 + kg + ${j * NKG}u, kEnd));`,
  ),
).join('\n')}`;
  const rest = `${I.map((i) => `    var t${i} = max(${J.map((j) => `s${i}_${j}`).reduce((a, b) => `max(${a}, ${b})`)}, NEG);`).join('\n')}
${sub ? I.map((i) => `    ${rowMax(`t${i}`)}`).join('\n') : I.map((i) => `    red[(r0 + ${i}u) * NKG + kg] = t${i};`).join('\n')}
    workgroupBarrier();
${
  sub
    ? ''
    : I.map((i) => `    for (var g = 0u; g < NKG; g++) { t${i} = max(t${i}, red[(r0 + ${i}u) * NKG + g]); }`).join('\n')
}
${I.map(
  (i) => `    {
      let mnew = max(m${i}, t${i});
      let alpha = select(1.0, select(0.0, exp(m${i} - mnew), m${i} > NEG_HALF), mnew > NEG_HALF);
${J.map((j) => `      let e${j} = select(0.0, exp(s${i}_${j} - mnew), s${i}_${j} > NEG_HALF);`).join('\n')}
${
  vecP
    ? range(KN / 4)
        .map((jj) => `      ps[(r0 + ${i}u) * PS + ${jj * NKG}u + kg] = vec4<f32>(${range(4).map((c) => `e${4 * jj + c}`).join(', ')});`)
        .join('\n')
    : J.map((j) => `      ps[(r0 + ${i}u) * PS + kg + ${j * NKG}u] = e${j};`).join('\n')
}
      l${i} = l${i} * alpha + ${J.map((j) => `e${j}`).join(' + ')};
      m${i} = select(m${i}, mnew, mnew > NEG_HALF);
${U.map((u) => `      o${i}_${u} = o${i}_${u} * alpha;`).join('\n')}
    }`,
).join('\n')}
    workgroupBarrier();
    // P x V into this invocation's RM x CV accumulator.
${
  vecP
    ? `    for (var s4 = 0u; s4 < KT / 4u; s4++) {
      // Slot s4 of a P row holds keys kb, kb + NKG, kb + 2 NKG, kb + 3 NKG (one invocation's scores).
      let kb = s4 % NKG + (s4 / NKG) * 4u * NKG;
${I.map((i) => `      let w${i} = ps[(r0 + ${i}u) * PS + s4];`).join('\n')}
${range(4)
  .map(
    (c) => `${U.map((u) => `      let v${c}_${u} = kv[(kb + ${c * NKG}u) * KVS + min(kg + ${u * NKG}u, DV4 - 1u)];`).join('\n')}
${I.flatMap((i) => U.map((u) => `      o${i}_${u} = fma(vec4<f32>(w${i}.${'xyzw'[c]}), v${c}_${u}, o${i}_${u});`)).join('\n')}`,
  )
  .join('\n')}
    }`
    : `    for (var kk = 0u; kk < KT; kk++) {
${I.map((i) => `      let w${i} = ps[(r0 + ${i}u) * PS + kk];`).join('\n')}
${U.map((u) => `      let v${u} = kv[kk * KVS + min(kg + ${u * NKG}u, DV4 - 1u)];`).join('\n')}
${I.flatMap((i) => U.map((u) => `      o${i}_${u} = fma(vec4<f32>(w${i}), v${u}, o${i}_${u});`)).join('\n')}
    }`
}
    workgroupBarrier();`;
  const tile = `    // K tile -> scores of this invocation's RM x KN micro-tile.
${loadTile('loadK', 'DK', DK4)}
    workgroupBarrier();
${scores}
    workgroupBarrier();
    // V tile (same memory) while the row maxima are combined.
${loadTile('loadV', 'DV', DV4)}
${rest}`;
  // Prefetch: the K tile was loaded into registers (pk*) one tile ahead, and the V tile is loaded
  // into registers (pv*) before the scores, so global loads overlap the arithmetic instead of
  // stalling between barriers; one workgroup buffer (kv) still holds K, then V.
  const perK = (KT * DK4) / WG;
  const perV = (KT * DV4) / WG;
  const prefetch = k.prefetch === true && k.batchLoads === true && Number.isInteger(perK) && Number.isInteger(perV);
  const tileLoads = (reg: string, fn: string, dim: string, D4: number, per: number, kp: string, decl: string, pad = '      ') =>
    range(per)
      .map(
        (m) => `${pad}let ${reg}k${m} = ${kp} + (lid + ${m * WG}u) / ${D4}u;
${pad}${decl}${reg}${m} = select(vec4<f32>(0.0), ${fn}(((gbase + min(${reg}k${m}, kEnd - 1u) - P.keyRowBase) * P.H + kvh) * ${dim}, (lid + ${m * WG}u) % ${D4}u), ${reg}k${m} < kEnd);`,
      )
      .join('\n');
  const tileStores = (reg: string, D4: number, per: number) =>
    range(per)
      .map((m) => `    kv[((lid + ${m * WG}u) / ${D4}u) * KVS + (lid + ${m * WG}u) % ${D4}u] = ${reg}${m};`)
      .join('\n');
  // The first K tile into the registers (before the tile loop); only when the range is non-empty (kEnd > 0).
  const firstK = (cond: string, kp: string, pad: string) => `${pad}if (${cond}) {
${tileLoads('pk', 'loadK', 'DK', DK4, perK, kp, '', `${pad}  `)}
${pad}}`;
  const prefetchTile = (nextCond: string) => `    // K tile (loaded one tile ahead) -> workgroup memory; V tile -> registers during the scores.
${tileStores('pk', DK4, perK)}
    workgroupBarrier();
${tileLoads('pv', 'loadV', 'DV', DV4, perV, 'kp0', 'let ', '    ')}
${scores}
    workgroupBarrier();
${tileStores('pv', DV4, perV)}
    // The next K tile -> registers during this tile's softmax and P x V.
    if (${nextCond}) {
${tileLoads('pk', 'loadK', 'DK', DK4, perK, 'kp0 + KT', '')}
    }
${rest}`;

  const rowExpr = (i: number) => `(it.row0 + (r0 + ${i}u) / GC - P.rowBase) * P.HQ + kvh * G + hc * GC + (r0 + ${i}u) % GC`;
  const splitRow = (i: number) => `split * P.tokRows * P.HQ + (it.row0 + (r0 + ${i}u) / GC - P.rowBase) * P.HQ + kvh * G + hc * GC + (r0 + ${i}u) % GC`;
  const epilogue = `${
    sub ? I.map((i) => `  ${rowSum(`l${i}`)}`).join('\n') : `${I.map((i) => `  red[(r0 + ${i}u) * NKG + kg] = l${i};`).join('\n')}
  workgroupBarrier();
${I.map((i) => `  l${i} = 0.0;\n  for (var g = 0u; g < NKG; g++) { l${i} += red[(r0 + ${i}u) * NKG + g]; }`).join('\n')}`
  }
${I.map((i) => {
  const c = (u: number) => `(kg + ${u * NKG}u)`;
  if (k.split) {
    return `  if (rowValid(r0 + ${i}u, it, hc)) {
    let row = ${splitRow(i)};
${U.map((u) => `    if (${c(u)} < DV4) ${store4('out', 'row * DV', c(u), `o${i}_${u}`, k.DV, 'f32')}`).join('\n')}
    if (kg == 0u) { stats[row * 2u] = m${i}; stats[row * 2u + 1u] = l${i}; }
  }`;
  }
  return `  if (rowValid(r0 + ${i}u, it, hc)) {
    let row = ${rowExpr(i)};
    let inv = select(0.0, 1.0 / max(l${i}, 1.0e-30), l${i} > 0.0);
${U.map((u) => `    if (${c(u)} < DV4) ${store4('out', 'row * DV', c(u), `o${i}_${u} * inv`, k.DV, 'f32')}`).join('\n')}
    if (kg == 0u) { stats[row] = select(NEG, m${i} + log(max(l${i}, 1.0e-30)), l${i} > 0.0); }
  }`;
}).join('\n')}`;

  const keyBaseExpr = k.mode === 'compressed' ? 'it.cmpBase' : 'it.keyBase';
  return `${enableF16(E)}${sub ? 'enable subgroups;\n' : ''}${paramsStruct()}
@group(0) @binding(1) var<storage, read> items: array<u32>;
@group(0) @binding(2) var<storage, read> q: ${storageArray(E, k.DK)};
@group(0) @binding(3) var<storage, read> kbuf: ${storageArray(E, k.DK)};
@group(0) @binding(4) var<storage, read> vbuf: ${storageArray(E, k.DV)};
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
${selected ? '@group(0) @binding(7) var<storage, read> blocks: array<i32>;' : ''}
const G = ${k.G}u;
const GC = ${k.GC}u;
const R = ${k.GC * k.TQB}u;
const RP = ${RP}u;
const RM = ${RM}u;
const NKG = ${NKG}u;
const DK = ${k.DK}u;
const DV = ${k.DV}u;
const DK4 = ${DK4}u;
const DV4 = ${DV4}u;
const KT = ${KT}u;
const KVS = ${KVS}u;
// Padded row strides: the row groups of one subgroup read rows RM apart, in different banks.
const QS = ${DK4 + 1}u;
const PS = ${vecP ? KT / 4 + 1 : KT + 1}u;
const WG = ${WG}u;
const NEG = ${NEG};
const NEG_HALF = ${NEG_HALF};

${ITEM_STRUCT}
${keyRangeFns(k.mode)}
${load4('loadQ', 'q', k.DK, k.DK % 4 === 0)}
${load4('loadK', 'kbuf', k.DK, k.DK % 4 === 0)}
${load4('loadV', 'vbuf', k.DV, k.DV % 4 === 0)}

var<workgroup> qs: array<vec4<f32>, ${RP * (DK4 + 1)}>;
var<workgroup> kv: array<vec4<f32>, ${KT * KVS}>;
var<workgroup> ps: ${vecP ? `array<vec4<f32>, ${RP * (KT / 4 + 1)}>` : `array<f32, ${RP * (KT + 1)}>`};
var<workgroup> red: array<f32, ${RP * NKG}>;
var<workgroup> posr: array<u32, ${RP}>;
${selected ? 'var<workgroup> slotShared: i32;' : ''}

// Row r of the tile: token r / GC, head (chunk * GC + r % GC) of the group.
fn rowValid(r: u32, it: Item, hc: u32) -> bool {
  return r < R && r / GC < it.count && hc * GC + r % GC < G;
}

fn visible(p: u32, kp: u32, kEnd: u32) -> bool {
  return kp < kEnd && p != 0xffffffffu && kp >= keyLo(p) && kp < keyHi(p);
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
${rowTileStart('RP', 'r * QS + x % DK4')}
  for (var r = lid; r < RP; r += WG) {
    posr[r] = select(0xffffffffu, it.pos0 + r / GC, rowValid(r, it, hc));
  }
  workgroupBarrier();
  let kg = lid % NKG;
  let r0 = (lid / NKG) * RM;
${I.map((i) => `  let p${i} = posr[r0 + ${i}u];\n  var m${i} = NEG;\n  var l${i} = 0.0;\n${U.map((u) => `  var o${i}_${u} = vec4<f32>(0.0);`).join('\n')}`).join('\n')}
  let gbase = ${keyBaseExpr};
${prefetch ? `${range(perK).map((m) => `  var pk${m} = vec4<f32>(0.0);`).join('\n')}\n` : ''}${
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
    let kEnd = min(b0 + P.selBlock, p + 1u);
${prefetch ? `${firstK('b0 < kEnd', 'b0', '    ')}\n` : ''}    for (var kp0 = b0; kp0 < kEnd; kp0 += KT) {
${prefetch ? prefetchTile('kp0 + KT < kEnd') : tile}
    }
  }`
    : `  // Union of the tile's key ranges, cut into KT-key tiles; a split takes perSplit of them.
  let lo = keyLo(it.pos0);
  let kEnd = keyHi(it.pos0 + it.count - 1u);
  let ntiles = select(0u, (kEnd - lo + KT - 1u) / KT, kEnd > lo);
  let tile0 = select(0u, split * P.perSplit, P.splits > 1u);
  let tile1 = select(ntiles, min(ntiles, tile0 + P.perSplit), P.splits > 1u);
${prefetch ? `${firstK('tile0 < tile1', 'lo + tile0 * KT', '  ')}\n` : ''}  for (var t = tile0; t < tile1; t++) {
    let kp0 = lo + t * KT;
${prefetch ? prefetchTile('t + 1u < tile1') : tile}
  }`
}
${epilogue}
}
`;
}
