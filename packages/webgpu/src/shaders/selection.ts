// Selection scores and top-n (NSA-SPEC.md, branch 2): one workgroup per (query token, KV head).
// p = softmax over the visible compressed blocks (from the compression branch's lse), summed
// over the group's heads, mapped to selection blocks by sub-block overlap, then the forced
// blocks plus the highest remaining scores (ties to the lower index), written ascending.
import { ITEM_STRUCT, enableF16, load4, paramsStruct, storageArray, type ElementType } from './common.js';
import { TOP_N_ROUNDS_TREE, topNRoundsSubgroup } from './top-n.js';
import { MATRIX_PREAMBLE, MATRIX_SUBGROUP, matrixOps } from './subgroup-matrix.js';

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
  /**
   * Query tokens per workgroup ('fused' phase; 1 otherwise): consecutive tokens see the same
   * compressed blocks (up to the last one or two), so one K chunk in workgroup memory and one
   * register tile serve all of them.
   */
  readonly TQS?: number;
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
  /** Top-n rounds reduce with subgroupMax/subgroupMin (needs `subgroups`, subgroups of 4 or more). */
  readonly subgroups?: boolean;
  /** Issue all of an invocation's loads of a key chunk before storing them (see loadChunk). */
  readonly batchLoads?: boolean;
  /**
   * 'scores' phase of a decode step whose compression branch left its P.splits key splits
   * unmerged: the lse of each head is merged here from their (max, sum) stats (bound whole).
   */
  readonly lseFromSplits?: boolean;
  /**
   * 'fused' phase with the group in one chunk of 16 heads and TQS * CB / 16 == WG / 32: the scores
   * of each (token, 16 blocks) tile as one subgroup-matrix product (f16 storage; f32 only emulated,
   * see subgroup-matrix.ts), read straight from storage.
   */
  readonly matrix?: 'native' | 'emulated';
  /**
   * With matrix scores: each invocation's share of the next chunk's keys loads into registers while
   * this chunk's probabilities and block sums run (where the chunk divides evenly over WG).
   */
  readonly matrixPrefetch?: boolean;
  /**
   * 'fused' phase, the group in one chunk of heads (GC = G, a multiple of HG): each invocation scores
   * one token's GC / HG heads against JB blocks (scalar sums), so a chunk of CB = JB * WG / (HG TQS)
   * blocks reads each staged query vec4 once per JB blocks and each key vec4 once per GC / HG heads
   * (the register tile above: 2 tokens x 4 blocks of one head, 6 reads per 8 vec4 products); the
   * chunk's keys are staged DS vec4 columns at a time (workgroup memory), and the heads' probabilities
   * are summed in registers and across the HG invocations of a token (subgroup shuffles, or workgroup
   * memory without subgroups), not in a serial loop over 'prob'. `ahead`: the next column stage loads
   * into registers during this one.
   */
  readonly wide?: WideSelection;
}

export interface WideSelection {
  /** Blocks per invocation. */
  readonly JB: number;
  /** vec4 columns of the keys per stage. */
  readonly DS: number;
  /** Invocations per token and block set (1, 2 or 4; default 4): each takes GC / HG heads. */
  readonly HG?: number;
  readonly ahead?: boolean;
}

/** Compressed blocks per chunk of the wide selection tiles. */
export function wideSelectionBlocks(k: Pick<SelectionKernel, 'WG' | 'TQS'>, wide: Pick<WideSelection, 'JB' | 'HG'>): number {
  return (wide.JB * k.WG) / ((wide.HG ?? 4) * (k.TQS ?? 1));
}

/** Whether the wide selection tiles apply (see SelectionKernel.wide; HG at most 4, the smallest subgroup taken). */
export function wideSelectionFits(k: Pick<SelectionKernel, 'G' | 'GC' | 'WG' | 'TQS'>, HG = 4): boolean {
  const per = HG * (k.TQS ?? 1);
  return k.GC === k.G && k.G % HG === 0 && k.G <= 16 && [1, 2, 4].includes(HG) && k.WG % per === 0;
}

export function wideSelectionSharedBytes(k: Pick<SelectionKernel, 'G' | 'GC' | 'DK' | 'WG' | 'NSMAX' | 'TQS' | 'nSel' | 'subgroups'>, wide: WideSelection): number {
  const dk4 = Math.ceil(k.DK / 4);
  const t = k.TQS ?? 1;
  const CB = wideSelectionBlocks(k, wide);
  const part = k.subgroups ? 0 : t * CB * (wide.HG ?? 4);
  return 16 * (t * k.GC * (dk4 + 1) + CB * (Math.min(wide.DS, dk4) + 1)) + 4 * (t * (CB + k.NSMAX + k.GC) + 2 * k.WG + k.nSel + part) + 64;
}

/** Whether the fused selection pass of these tiles can take its scores from subgroup matrices. */
export function selectionMatrixFits(k: Pick<SelectionKernel, 'G' | 'GC' | 'DK' | 'CB' | 'WG' | 'TQS'>): boolean {
  return k.G === 16 && k.GC === 16 && k.DK % 16 === 0 && k.CB % 16 === 0 && ((k.TQS ?? 1) * k.CB) / 16 === k.WG / MATRIX_SUBGROUP;
}

export function selectionSharedBytes(k: Omit<SelectionKernel, 'e' | 'phase'>): number {
  const dk4 = Math.ceil(k.DK / 4);
  const t = k.TQS ?? 1;
  return 16 * (t * k.GC * dk4 + k.CB * (dk4 + 1)) + 4 * (t * (k.GC * k.CB + k.CB + k.NSMAX + k.GC) + 2 * k.WG + k.nSel) + 64;
}

export function selectionShader(k: SelectionKernel): string {
  const phase = k.phase;
  const DK4 = Math.ceil(k.DK / 4);
  const TQS = phase === 'fused' ? (k.TQS ?? 1) : 1;
  const toks = Array.from({ length: TQS }, (_, t) => t);
  // Per-token value `${name}${t}` of the token the WGSL expression `tok` names.
  const ofToken = (name: string, tok: string) => toks.slice(1).reduce((a, t) => `select(${a}, ${name}${t}, ${tok} == ${t}u)`, `${name}0`);
  if (k.CB % 4 !== 0 || k.WG % (k.CB / 4) !== 0) throw new Error(`selection: CB ${k.CB} must be a multiple of 4 dividing 4 * WG ${k.WG}`);
  // WGSL pieces of the three phases. With the whole group in one head chunk the queries and their
  // lse are loaded once, not once per chunk of compressed blocks.
  const oneChunk = Math.ceil(k.G / k.GC) === 1;
  const matrix = phase === 'fused' && k.matrix !== undefined;
  if (matrix && (!oneChunk || !selectionMatrixFits(k))) throw new Error(`selection: matrix scores need G = GC = 16 and TQS * CB / 16 = WG / 32`);
  const D = Array.from({ length: k.DK / 16 }, (_, d) => d);
  const E = k.e;
  const op = matrixOps(k.matrix === 'emulated', [...D.map((d) => `q${d}`), 'acc'], { qm: 'QMN', km: 'KMN' }, ['sraw']);
  // (Matrix scores read the queries as matrix tiles: only the lse here.)
  const loadQs = `${
    matrix
      ? ''
      : `      for (var x = lid; x < TQS * GC * DK4; x += WG) {
        let t = x / (GC * DK4);
        let g = hc * GC + (x / DK4) % GC;
        var val = vec4<f32>(0.0);
        if (g < G && t < it.count) { val = loadQ((rowBase + t * P.HQ + g) * DK, x % DK4) * P.scale; }
        qs[x] = val;
      }`
  }`;
  const loadLse = `${
  k.lseFromSplits
    ? `      // lse of each head from the compression branch's split stats (max, sum) [split, tokRows * HQ, 2]:
      // LANES invocations per head each merge every LANES-th split, then combine through 'redV'.
      {
        let gl = lid / LANES;
        let lane = lid % LANES;
        let g = hc * GC + gl;
        let ok = gl < GC && g < G;
        let stride = P.tokRows * P.HQ;
        var mLoc = -1.0e30;
        for (var s = lane; s < P.splits && ok; s += LANES) {
          let at = (s * stride + absRow + g) * 2u;
          if (lse[at + 1u] > 0.0) { mLoc = max(mLoc, lse[at]); }
        }
        if (gl < GC) { redV[lid] = mLoc; }
        workgroupBarrier();
        var m = -1.0e30;
        if (gl < GC) { for (var i = 0u; i < LANES; i++) { m = max(m, redV[gl * LANES + i]); } }
        var lLoc = 0.0;
        for (var s = lane; s < P.splits && ok; s += LANES) {
          let at = (s * stride + absRow + g) * 2u;
          let ls = lse[at + 1u];
          if (ls > 0.0) { lLoc += ls * exp(lse[at] - m); }
        }
        workgroupBarrier();
        if (gl < GC) { redV[lid] = lLoc; }
        workgroupBarrier();
        if (lane == 0u && gl < GC) {
          var l = 0.0;
          for (var i = 0u; i < LANES; i++) { l += redV[gl * LANES + i]; }
          lq[gl] = select(0.0, select(-1.0e30, m + log(max(l, 1.0e-30)), l > 0.0 && m > -5.0e29), ok);
        }
      }`
    : `      for (var x = lid; x < TQS * GC; x += WG) {
        let t = x / GC;
        let g = hc * GC + x % GC;
        lq[x] = select(0.0, lse[rowBase + t * P.HQ + g], g < G && t < it.count);
      }`
}`;
  const loadHeads = `${loadQs}\n${loadLse}`;
  // The chunk's keys into workgroup memory. batchLoads (where the chunk divides evenly): every load
  // of this invocation first, then the stores (a loop waits out one global load per iteration);
  // blocks past the last visible one read that one and store zeros, so the loads need no branch.
  const perLoad = (k.CB * DK4) / k.WG;
  const loadChunk =
    k.batchLoads && Number.isInteger(perLoad)
      ? `    {
${Array.from({ length: perLoad }, (_, m) => `      let bi${m} = i0 + (lid + ${m * k.WG}u) / DK4;
      let bg${m} = select(vec4<f32>(0.0), loadK(((it.cmpBase + min(bi${m}, nVisLast - 1u) - P.keyRowBase) * P.H + kvh) * DK, (lid + ${m * k.WG}u) % DK4), bi${m} < nVisLast);`).join('\n')}
${Array.from({ length: perLoad }, (_, m) => `      ks[(bi${m} - i0) * KS + (lid + ${m * k.WG}u) % DK4] = bg${m};`).join('\n')}
    }
`
      : `    for (var x = lid; x < CB * DK4; x += WG) {
      let i = i0 + x / DK4;
      var val = vec4<f32>(0.0);
      if (i < nVisLast) { val = loadK(((it.cmpBase + i - P.keyRowBase) * P.H + kvh) * DK, x % DK4); }
      ks[(x / DK4) * KS + x % DK4] = val;
    }
`;
  // Each (token, block) sums its heads' probabilities into psum, between barriers (both score paths).
  const sumHeads = (pad: string) =>
    [
      'workgroupBarrier();',
      'for (var x = lid; x < TQS * CB; x += WG) {',
      '  let t = x / CB;',
      '  var s = psum[x];',
      '  for (var gl = 0u; gl < GC; gl++) { s += prob[(t * GC + gl) * CB + x % CB]; }',
      '  psum[x] = s;',
      '}',
      'workgroupBarrier();',
    ]
      .map((line) => pad + line)
      .join('\n');
  const scoreChunk = `${loadChunk}    for (var x = lid; x < TQS * CB; x += WG) { psum[x] = 0.0; }
    for (var hc = 0u; hc < nhc; hc++) {
${oneChunk ? '' : loadHeads}
      workgroupBarrier();
      // Register tile: an invocation scores one head of every token against 4 blocks (ii0 + b * NB),
      // so each key load feeds TQS products and each query load 4.
      for (var gl = lid / NB; gl < GC; gl += WG / NB) {
        let ii0 = lid % NB;
${toks.map((t) => [0, 1, 2, 3].map((b) => `        var a${t}_${b} = vec4<f32>(0.0);`).join('\n')).join('\n')}
        for (var c = 0u; c < DK4; c++) {
          let k0 = ks[ii0 * KS + c];
          let k1 = ks[(ii0 + NB) * KS + c];
          let k2 = ks[(ii0 + 2u * NB) * KS + c];
          let k3 = ks[(ii0 + 3u * NB) * KS + c];
${toks.map((t) => `          let q${t} = qs[(${t}u * GC + gl) * DK4 + c];\n${[0, 1, 2, 3].map((b) => `          a${t}_${b} = fma(q${t}, k${b}, a${t}_${b});`).join('\n')}`).join('\n')}
        }
        let ok = hc * GC + gl < G;
        let one = vec4<f32>(1.0);
${toks
  .map((t) =>
    [0, 1, 2, 3]
      .map(
        (b) =>
          `        prob[(${t}u * GC + gl) * CB + ii0 + ${b}u * NB] = guardedExp(dot(a${t}_${b}, one) - lq[${t}u * GC + gl], ok && ${t}u < it.count && i0 + ii0 + ${b}u * NB < nVis${t});`,
      )
      .join('\n'),
  )
  .join('\n')}
      }
${sumHeads('      ')}
    }`;
  // Subgroup sg scores token sg / (CB / 16) against blocks i0 + 16 * (sg % (CB / 16)) .. + 15 (keys
  // staged in workgroup memory, zero past the visible blocks: Dawn's robustness check on storage
  // tiles zeroes tiles that end near a binding's end); the probabilities then go to 'prob' as in
  // the register-tile path.
  // Prefetch: invocation lid holds keys x = lid + m * WG of a chunk (block x / DK4, vec4 x % DK4).
  const nKR = (k.CB * DK4) / k.WG;
  const prefetch = matrix && k.matrixPrefetch === true && Number.isInteger(nKR);
  const KR = Array.from({ length: prefetch ? nKR : 0 }, (_, m) => m);
  const loadKR = (chunk: string) =>
    KR.map(
      (m) => `    {
      let i = ${chunk} + (lid + ${m * k.WG}u) / DK4;
      kr${m} = vec4<${E}>(0.0);
      if (i < nVisLast) { kr${m} = vec4<${E}>(loadK(((it.cmpBase + i - P.keyRowBase) * P.H + kvh) * DK, (lid + ${m * k.WG}u) % DK4)); }
    }`,
    ).join('\n');
  const stageKeys = prefetch
    ? KR.map(
        (m) => `    {
      let w = ((lid + ${m * k.WG}u) / DK4) * QMS + ((lid + ${m * k.WG}u) % DK4) * 4u;
      km[w] = kr${m}.x; km[w + 1u] = kr${m}.y; km[w + 2u] = kr${m}.z; km[w + 3u] = kr${m}.w;
    }`,
      ).join('\n')
    : `    for (var x = lid; x < CB * DK4; x += WG) {
      let i = i0 + x / DK4;
      var v = vec4<f32>(0.0);
      if (i < nVisLast) { v = loadK(((it.cmpBase + i - P.keyRowBase) * P.H + kvh) * DK, x % DK4); }
      let w = (x / DK4) * QMS + (x % DK4) * 4u;
      km[w] = ${E}(v.x); km[w + 1u] = ${E}(v.y); km[w + 2u] = ${E}(v.z); km[w + 3u] = ${E}(v.w);
    }`;
  const matrixChunk = `    for (var x = lid; x < TQS * CB; x += WG) { psum[x] = 0.0; }
${stageKeys}
    workgroupBarrier();
    {
      ${op.zero('acc')}
${D.map((d) => `      ${op.mmaFrom(`q${d}`, 'km', `hb * 16u * QMS + ${d * 16}u`, true, 'QMS', 'acc')}`).join('\n')}
      ${op.store('sraw', 'tq * GC * CB + hb * 16u', 'acc', 'CB')}
    }
${prefetch ? `    // The next chunk's keys load while this chunk's probabilities and block sums run.\n${loadKR('(i0 + CB)')}\n` : ''}    workgroupBarrier();
    for (var x = lid; x < TQS * GC * CB; x += WG) {
      let t = x / (GC * CB);
      let ii = x % CB;
      let nv = ${ofToken('nVis', 't')};
      prob[x] = guardedExp(sraw[x] * P.scale - lq[x / CB], t < it.count && i0 + ii < nv);
    }
${sumHeads('    ')}`;
  // Wide tiles (SelectionKernel.wide): invocation (wb, wt, wh) = lid / (4 TQS), (lid / 4) % TQS, lid % 4
  // scores token wt's heads wh + 4 i (i < HR) against blocks i0 + wb + NBG j (j < JB); the key rows
  // of an instruction are NBG apart and the query rows (head-major, token-minor) 1 apart, padded
  // rows, so a warp's vec4 reads land in distinct banks.
  const wide = phase === 'fused' && !matrix && k.wide !== undefined ? k.wide : undefined;
  const HG = wide?.HG ?? 4;
  if (wide && (!oneChunk || !wideSelectionFits({ ...k, TQS }, HG) || wideSelectionBlocks({ WG: k.WG, TQS }, wide) !== k.CB)) {
    throw new Error(`selection: wide tiles need GC = G (a multiple of HG ${HG}, at most 16) and CB = JB * WG / (HG TQS)`);
  }
  const HR = k.GC / HG;
  const lanes = [1, 2].filter((m) => m < HG);
  const NBG = k.WG / (HG * TQS);
  const WDS = wide ? Math.min(wide.DS, DK4) : 1;
  const KSW = WDS + 1;
  const HI = Array.from({ length: wide ? HR : 0 }, (_, i) => i);
  const JI = Array.from({ length: wide?.JB ?? 0 }, (_, j) => j);
  const stages = Array.from({ length: Math.ceil(DK4 / WDS) }, (_, s) => ({ d0: s * WDS, w: Math.min(WDS, DK4 - s * WDS) }));
  const stagePer = (w: number) => (k.CB * w) / k.WG;
  const batchedStage = (w: number) => k.batchLoads === true && Number.isInteger(stagePer(w));
  // Stage s of the chunk's keys: columns d0 .. d0 + w of every block; rows past the last visible
  // block read that one and hold zeros.
  const stageLoads = (s: number, reg: string) => {
    const { d0, w } = stages[s];
    return Array.from({ length: stagePer(w) }, (_, m) => `      let ${reg}b${m} = i0 + (lid + ${m * k.WG}u) / ${w}u;
      let ${reg}${m} = select(vec4<f32>(0.0), loadK(((it.cmpBase + min(${reg}b${m}, nVisLast - 1u) - P.keyRowBase) * P.H + kvh) * DK, ${d0}u + (lid + ${m * k.WG}u) % ${w}u), ${reg}b${m} < nVisLast);`).join('\n');
  };
  const stageStores = (s: number, reg: string) => {
    const { w } = stages[s];
    return Array.from({ length: stagePer(w) }, (_, m) => `      ks[((lid + ${m * k.WG}u) / ${w}u) * ${KSW}u + (lid + ${m * k.WG}u) % ${w}u] = ${reg}${m};`).join('\n');
  };
  const stageLoop = (s: number) => {
    const { d0, w } = stages[s];
    return `      for (var x = lid; x < CB * ${w}u; x += WG) {
        let i = i0 + x / ${w}u;
        var val = vec4<f32>(0.0);
        if (i < nVisLast) { val = loadK(((it.cmpBase + i - P.keyRowBase) * P.H + kvh) * DK, ${d0}u + x % ${w}u); }
        ks[(x / ${w}u) * ${KSW}u + x % ${w}u] = val;
      }`;
  };
  const ahead = (s: number) => wide?.ahead === true && s + 1 < stages.length && batchedStage(stages[s].w) && batchedStage(stages[s + 1].w);
  const wideStage = (s: number) => {
    const { d0, w } = stages[s];
    const fill = s > 0 && ahead(s - 1) ? stageStores(s, `n${s}_`) : batchedStage(w) ? `${stageLoads(s, `g${s}_`)}\n${stageStores(s, `g${s}_`)}` : stageLoop(s);
    return `    // Key columns ${d0} .. ${d0 + w - 1} (vec4) of the chunk.
    {
${fill}
    }
    workgroupBarrier();
${ahead(s) ? `${stageLoads(s + 1, `n${s + 1}_`).replace(/^ {2}/gm, '')}\n` : ''}    for (var c = 0u; c < ${w}u; c++) {
${HI.map((i) => `      let q${i} = qs[((wh + ${i * HG}u) * TQS + wt) * ${DK4 + 1}u + ${d0}u + c];`).join('\n')}
${JI.map((j) => `      let k${j} = ks[(wb + ${j * NBG}u) * ${KSW}u + c];`).join('\n')}
${HI.flatMap((i) => JI.map((j) => `      a${i}_${j} = fma(q${i}.w, k${j}.w, fma(q${i}.z, k${j}.z, fma(q${i}.y, k${j}.y, fma(q${i}.x, k${j}.x, a${i}_${j}))));`)).join('\n')}
    }
${s + 1 < stages.length ? '    workgroupBarrier();\n' : ''}`;
  };
  const wideChunk = `${HI.flatMap((i) => JI.map((j) => `    var a${i}_${j} = 0.0;`)).join('\n')}
${stages.map((_, s) => wideStage(s)).join('')}    // This invocation's heads summed in registers, then over the ${HG} invocations of its token and blocks.
    let nv = ${ofToken('nVis', 'wt')};
${JI.map(
  (j) =>
    `    var p${j} = ${HI.map((i) => `guardedExp(a${i}_${j} - lq[wt * GC + wh + ${i * HG}u], wt < it.count && i0 + wb + ${j * NBG}u < nv)`).join(' + ')};`,
).join('\n')}
${
  k.subgroups
    ? `${HG > 1 ? `${JI.map((j) => `   ${lanes.map((m) => ` p${j} += subgroupShuffleXor(p${j}, ${m}u);`).join('')}`).join('\n')}\n` : ''}    if (wh == 0u) {
${JI.map((j) => `      psum[wt * CB + wb + ${j * NBG}u] = p${j};`).join('\n')}
    }`
    : `${JI.map((j) => `    part[(wt * CB + wb + ${j * NBG}u) * ${HG}u + wh] = p${j};`).join('\n')}
    workgroupBarrier();
    for (var x = lid; x < TQS * CB; x += WG) { psum[x] = ${Array.from({ length: HG }, (_, h) => `part[${HG}u * x + ${h}u]`).join(' + ')}; }`
}
    workgroupBarrier();`;
  const wideQs = `      for (var x = lid; x < TQS * GC * DK4; x += WG) {
        let t = x / (GC * DK4);
        let g = (x / DK4) % GC;
        var val = vec4<f32>(0.0);
        if (t < it.count) { val = loadQ((rowBase + t * P.HQ + g) * DK, x % DK4) * P.scale; }
        qs[(g * TQS + t) * ${DK4 + 1}u + x % DK4] = val;
      }`;
  // One token's selection blocks that chunk i0's compressed blocks overlap, from invocation `lane` on
  // in steps of `step`: each block's score gains the overlap-weighted probabilities of the chunk.
  // t: the token (WGSL), nv / nc: its visible compressed blocks and candidates; pad: indentation.
  const mapBlocks = (t: string, nv: string, nc: string, lane: string, step: string, pad: string) => `${pad}if (i0 < ${nv}) {
${pad}  let iEnd = min(i0 + CB, ${nv});
${pad}  let jLo = i0 / PER_SEL;
${pad}  let jHi = min((iEnd - 1u + PER_CMP - 1u) / PER_SEL + 1u, ${nc});
${pad}  for (var j = jLo + ${lane}; j < jHi; j += ${step}) {
${pad}    let a = max(i0, select(0u, j * PER_SEL + 1u - PER_CMP, j * PER_SEL + 1u > PER_CMP));
${pad}    let b = min(iEnd, (j + 1u) * PER_SEL);
${pad}    var s = score[${t} * NSMAX + j];
${pad}    for (var i = a; i < b; i++) { s += psum[${t} * CB + i - i0] * overlap(i, j); }
${pad}    score[${t} * NSMAX + j] = s;
${pad}  }
${pad}}`;
  const mapChunk = `    // Each selection block that this chunk's compressed blocks overlap, one thread per block.
${toks.map((t) => mapBlocks(`${t}u`, `nVis${t}`, `nCand${t}`, 'lid', 'WG', '    ')).join('\n')}
    workgroupBarrier();`;
  // Wide tiles: the tokens' selection blocks side by side (WG / TQS invocations each); no barrier after
  // it, since the next chunk writes psum and reads score only after its first stage's barrier.
  const wideMap = `    {
      let mt = lid / (WG / TQS);
      let ml = lid % (WG / TQS);
      let nvm = ${ofToken('nVis', 'mt')};
      let ncm = ${ofToken('nCand', 'mt')};
${mapBlocks('mt', 'nvm', 'ncm', 'ml', 'WG / TQS', '      ')}
    }`;
  const chunkLoop = `  // Chunks of CB compressed blocks; a 'scores' workgroup takes perSplit of them.
  let c0 = ${phase === 'scores' ? 'wid.z * P.perSplit * CB' : '0u'};
  let c1 = ${phase === 'scores' ? 'min(nVis, c0 + P.perSplit * CB)' : `nVis${TQS - 1}`};
${oneChunk ? `  {
    let hc = 0u;
${wide ? `${wideQs}\n${loadLse}` : loadHeads}
  }` : ''}${wide ? `\n  let wh = lid % ${HG}u;\n  let wt = (lid / ${HG}u) % TQS;\n  let wb = lid / (${HG}u * TQS);` : ''}
${prefetch ? `${KR.map((m) => `  var kr${m}: vec4<${E}>;`).join('\n')}\n${loadKR('c0').replace(/^ {2}/gm, '')}\n` : ''}  for (var i0 = c0; i0 < c1; i0 += CB) {
${matrix ? matrixChunk : wide ? wideChunk : scoreChunk}
${
  phase === 'scores'
    ? `    for (var ii = lid; ii < CB; ii += WG) { if (i0 + ii < nVis0) { imp[impRow + i0 + ii] = psum[ii]; } }
    workgroupBarrier();`
    : wide
      ? wideMap
      : mapChunk
}
  }${wide ? '\n  workgroupBarrier();' : ''}`;
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
  // Rounds of argmax (top-n.ts): here the subgroups' winners are reduced by every invocation in turn.
  const roundsSubgroup = topNRoundsSubgroup(
    `    var bv = redV[base];
    var bi = redI[base];
    for (var g = 1u; g < nsg; g++) {
      let v2 = redV[base + g];
      let i2 = redI[base + g];
      if (v2 > bv || (v2 == bv && i2 < bi)) { bv = v2; bi = i2; }
    }`,
    'bi',
  );
  // With matrix scores every workgroup variable takes a multiple of 16 bytes (see
  // subgroup-matrix-forward.ts: the driver orders them as it likes, and the matrix loads and
  // stores need 16-byte aligned bases); the other kernels keep their sizes.
  const pad4 = (n: number) => (matrix ? Math.ceil(n / 4) * 4 : n);
  const nChosen0 = matrix ? '[0]' : '';
  const topNTemplate = `  // Forced blocks first; a score of -1 marks a block as taken.
  if (lid == 0u) {
    var n = 0u;
    for (var j = 0u; j < min(INITIAL, nCand); j++) { chosen[n] = i32(j); score[j] = -1.0; n++; }
    let localLo = select(0u, cur + 1u - LOCAL, cur + 1u > LOCAL);
    for (var j = max(localLo, INITIAL); j <= cur && LOCAL > 0u; j++) { chosen[n] = i32(j); score[j] = -1.0; n++; }
    nChosen${nChosen0} = n;
  }
  let forced = workgroupUniformLoad(&nChosen${nChosen0});
  let total = min(NSEL, nCand);
${k.subgroups ? roundsSubgroup : TOP_N_ROUNDS_TREE}
  if (lid == 0u) {
    // Insertion sort of at most n entries, then -1 padding.
    for (var a = 1u; a < total; a++) {
      let v = chosen[a];
      var b = a;
      while (b > 0u && chosen[b - 1u] > v) { chosen[b] = chosen[b - 1u]; b--; }
      chosen[b] = v;
    }
    let out = ((row0 - P.rowBase) * P.H + kvh) * NSEL;
    for (var s = 0u; s < NSEL; s++) { blocks[out + s] = select(-1, chosen[s], s < total); }
  }`;
  // One token after another (their candidates live in separate score ranges).
  const topN = toks
    .map(
      (t) => `  if (${t}u < it.count) {
  let cur = (it.pos0 + ${t}u) / P.selBlock;
  let nCand = cur + 1u;
  let row0 = it.row0 + ${t}u;
${topNTemplate.replaceAll('score[', `score[${t}u * NSMAX + `)}
  }`,
    )
    .join('\n');
  return `${enableF16(k.e)}${(k.subgroups && phase !== 'scores') || matrix ? 'enable subgroups;\n' : ''}${k.matrix === 'native' && matrix ? MATRIX_PREAMBLE : ''}${paramsStruct()}
@group(0) @binding(1) var<storage, read> items: array<u32>;
${
  phase === 'topn'
    ? `@group(0) @binding(2) var<storage, read> imp: array<f32>;
@group(0) @binding(3) var<storage, read_write> blocks: array<i32>;`
    : `@group(0) @binding(2) var<storage, read> q: ${storageArray(k.e, k.DK)};
@group(0) @binding(3) var<storage, read> kcmp: ${storageArray(k.e, k.DK)};
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
const NSMAX = ${k.NSMAX}u;
const TQS = ${TQS}u;
// Invocations per head when merging split stats (lseFromSplits).
const LANES = ${Math.max(1, Math.floor(k.WG / k.GC))}u;
const PER_CMP = ${k.perCmp}u;
const PER_SEL = ${k.perSel}u;
const INITIAL = ${k.initialBlocks}u;
const LOCAL = ${k.localBlocks}u;

${ITEM_STRUCT}
${phase === 'topn' ? '' : `${load4('loadQ', 'q', k.DK, k.DK % 4 === 0)}
${load4('loadK', 'kcmp', k.DK, k.DK % 4 === 0)}`}
${
  matrix
    ? `// Staged query rows (token-major, 16 heads each) and compressed keys, rows padded; raw scores.
const QMS = ${k.DK + 8}u;
const QMN = ${TQS * 16 * (k.DK + 8)}u;
const KMN = ${k.CB * (k.DK + 8)}u;
var<workgroup> qm: array<${E}, ${TQS * 16 * (k.DK + 8)}>;
var<workgroup> km: array<${E}, ${k.CB * (k.DK + 8)}>;
var<workgroup> sraw: array<f32, ${TQS * k.GC * k.CB}>;
${op.decls}`
    : wide
      ? `var<workgroup> qs: array<vec4<f32>, ${TQS * k.GC * (DK4 + 1)}>;
var<workgroup> ks: array<vec4<f32>, ${k.CB * KSW}>;${k.subgroups ? '' : `\nvar<workgroup> part: array<f32, ${TQS * k.CB * HG}>;`}`
      : `var<workgroup> qs: array<vec4<f32>, ${TQS * k.GC * DK4}>;
var<workgroup> ks: array<vec4<f32>, ${k.CB * (DK4 + 1)}>;`
}${wide ? '' : `\nvar<workgroup> prob: array<f32, ${TQS * k.GC * k.CB}>;`}
var<workgroup> psum: array<f32, ${TQS * k.CB}>;
var<workgroup> score: array<f32, ${pad4(TQS * k.NSMAX)}>;
var<workgroup> redV: array<f32, ${k.WG}>;
var<workgroup> redI: array<u32, ${k.WG}>;
var<workgroup> lq: array<f32, ${TQS * k.GC}>;
var<workgroup> chosen: array<i32, ${pad4(k.nSel)}>;
var<workgroup> nChosen: ${matrix ? 'array<u32, 4>' : 'u32'};

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
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${k.subgroups && phase !== 'scores' ? ', @builtin(subgroup_size) sgSize: u32, @builtin(subgroup_invocation_id) sgLane: u32' : ''}) {
  let it = loadItem(P.itemBase + wid.x, lid);
  let kvh = wid.y;
  // Token t of the item (clamped to the last one present): visible compressed blocks and candidates.
${toks
  .map(
    (t) => `  let p${t} = it.pos0 + min(${t}u, it.count - 1u);
  let nVis${t} = select(0u, (p${t} + 1u - P.cmpBlock) / P.cmpStride + 1u, p${t} + 1u >= P.cmpBlock);
  let nCand${t} = p${t} / P.selBlock + 1u;
  for (var j = lid; j < nCand${t}; j += WG) { score[${t}u * NSMAX + j] = 0.0; }`,
  )
  .join('\n')}
  let nVisLast = nVis${TQS - 1};
  let nVis = nVis0;
  let nCand = nCand0;
  let rowBase = (it.row0 - P.rowBase) * P.HQ + kvh * G;
  let absRow = it.row0 * P.HQ + kvh * G;
  let nhc = (G + GC - 1u) / GC;
  let impRow = ((it.row0 - P.rowBase) * P.H + kvh) * P.impStride;
${
  matrix
    ? `  // This subgroup's token tq and block half hb; its query rows as matrix tiles.
  let sg = lid / ${MATRIX_SUBGROUP}u;
  let tq = sg / (CB / 16u);
  let hb = sg % (CB / 16u);
${k.matrix === 'emulated' ? `  emuOn = lid % ${MATRIX_SUBGROUP}u == 0u;
` : ''}  for (var x = lid; x < TQS * 16u * DK4; x += WG) {
    let t = x / (16u * DK4);
    let g = (x / DK4) % 16u;
    let v = loadQ((rowBase + min(t, it.count - 1u) * P.HQ + g) * DK, x % DK4);
    let w = (x / DK4) * QMS + (x % DK4) * 4u;
    qm[w] = ${E}(v.x); qm[w + 1u] = ${E}(v.y); qm[w + 2u] = ${E}(v.z); qm[w + 3u] = ${E}(v.w);
  }
  workgroupBarrier();
${D.map((d) => `  ${op.declare(`q${d}`, 'left')}`).join('\n')}
  ${op.declare('acc', 'result')}
${D.map((d) => `  ${op.load(`q${d}`, 'left', 'qm', `tq * 16u * QMS + ${d * 16}u`, 'QMS')}`).join('\n')}
`
    : ''
}${phase === 'topn' ? candidatesFromImp : chunkLoop}
${phase === 'scores' ? '' : topN}
}
`;
}
