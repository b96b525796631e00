// The NSA forward pass (NSA-SPEC.md, "Output"): per query, the three branches' attentions mixed
// by the gates, with branch 2's blocks scored from branch 1's probabilities.
import { selectionBlockCount, selectionBlockOf, visibleCompressed, windowStart, type NSAConfig } from '@nsa/core';
import { attendForward, attendProbabilities, type HeadGroup, type KVView, type QueryForward } from './branches/attend.js';
import { KeyRanges } from './branches/key-ranges.js';
import { checkHostInputs, checkLength, hostLayout, inputDims, type NSAHostInputs, type NSAHostShape } from './host-inputs.js';
import { maxKeys, type Segment } from './segments.js';
import { addSelectionScores, checkBlockIndices, chooseBlocks, ForcedBlocks } from './selection.js';

/** Branch order in gates, log-sum-exp and gate gradients. */
export const BRANCH_CMP = 0;
export const BRANCH_SLC = 1;
export const BRANCH_WIN = 2;

export interface NSAHostForward {
  /** [B, T, HQ, Dv]. */
  readonly output: Float64Array;
  /** int32 [B, T, H, n], ascending, -1 padded. */
  readonly blockIndices: Int32Array;
  /** [3, B*T, HQ] log-sum-exp of each branch's scaled scores (0 where a branch has no keys). */
  readonly lse: Float64Array;
}

export interface NSAForwardHostOptions extends NSAHostShape {
  /** int32 [B, T, H, n]: use these blocks instead of scoring (validated). */
  readonly blockIndices?: Int32Array;
}

/** The whole forward on host arrays. */
export function nsaForwardHost(inputs: NSAHostInputs, config: NSAConfig, options: NSAForwardHostOptions): NSAHostForward {
  const layout = checkHostInputs(inputs, config, options);
  const rows = layout.B * layout.T;
  const n = config.selectCount;
  let blockIndices: Int32Array;
  if (options.blockIndices) {
    checkLength('blockIndices', options.blockIndices, [layout.B, layout.T, config.kvHeads, n]);
    blockIndices = options.blockIndices.slice();
  } else {
    blockIndices = new Int32Array(rows * config.kvHeads * n);
  }
  return runForward({
    config,
    inputs,
    segments: layout.segments,
    qRows: rows,
    blockIndices,
    blocksGiven: options.blockIndices !== undefined,
  });
}

/** Steps 1-5 of branch 2 alone: the blocks each (query, KV head) selects, int32 [B, T, H, n]. */
export function selectBlocksHost(
  inputs: Pick<NSAHostInputs, 'q' | 'kCmp'>,
  config: NSAConfig,
  shape: NSAHostShape,
): Int32Array {
  return selectionScoresHost(inputs, config, shape).blockIndices;
}

export interface SelectionScores {
  /** int32 [B, T, H, n]: the chosen blocks. */
  readonly blockIndices: Int32Array;
  /**
   * [B, T, H, blocks]: the group scores S[t, g, j] (step 3) of every candidate j <= floor(t/l'),
   * 0 beyond; blocks = ceil(longest sequence / l'). Parity tests compare sums of chosen scores.
   */
  readonly scores: Float64Array;
  readonly blocks: number;
}

/** Steps 1-5 of branch 2, with the scores that chose the blocks. */
export function selectionScoresHost(
  inputs: Pick<NSAHostInputs, 'q' | 'kCmp'>,
  config: NSAConfig,
  shape: NSAHostShape,
): SelectionScores {
  const layout = hostLayout(config, shape);
  const dims = inputDims(config, layout);
  checkLength('q', inputs.q, dims.q);
  checkLength('kCmp', inputs.kCmp, dims.kCmp);
  const unused = new Float64Array(0);
  const blockIndices = new Int32Array(layout.B * layout.T * config.kvHeads * config.selectCount);
  const blocks = selectionBlockCount(Math.max(1, layout.varlen?.maxLength ?? layout.T), config);
  const scores = new Float64Array(layout.B * layout.T * config.kvHeads * blocks);
  runForward({
    config,
    inputs: { q: inputs.q, kCmp: inputs.kCmp, vCmp: unused, kSlc: unused, vSlc: unused, kWin: unused, vWin: unused, gates: unused },
    segments: layout.segments,
    qRows: layout.B * layout.T,
    blockIndices,
    blocksGiven: false,
    selectOnly: true,
    scoresOut: { scores, blocks },
  });
  return { blockIndices, scores, blocks };
}

/** One forward over a list of segments (full sequences, packed sequences or a decode step). */
export interface ForwardPass {
  readonly config: NSAConfig;
  readonly inputs: NSAHostInputs;
  readonly segments: readonly Segment[];
  /** Query rows (B * TQ): sizes the output, the log-sum-exp and blockIndices. */
  readonly qRows: number;
  /** [qRows, H, n]: read when blocksGiven, written otherwise. */
  readonly blockIndices: Int32Array;
  readonly blocksGiven: boolean;
  /** Stop after choosing blocks (selectBlocksHost). */
  readonly selectOnly?: boolean;
  /** Copy each (query row, KV head)'s scores to scores[(row * H + g) * blocks + j]. */
  readonly scoresOut?: { readonly scores: Float64Array; readonly blocks: number };
}

export function runForward(pass: ForwardPass): NSAHostForward {
  const { config, inputs, segments, qRows, blockIndices, blocksGiven } = pass;
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv, selectCount: n, selectBlock: ls, scale } = config;
  const G = HQ / H;
  const output = new Float64Array(pass.selectOnly ? 0 : qRows * HQ * Dv);
  const lse = new Float64Array(pass.selectOnly ? G : 3 * qRows * HQ);
  const lseStride = qRows * HQ;
  // One query-side view per branch: the same q, gates and output, that branch's log-sum-exp.
  const branch = (b: number): QueryForward => ({
    q: inputs.q,
    gates: inputs.gates,
    out: output,
    lse: pass.selectOnly ? lse : lse.subarray(b * lseStride, (b + 1) * lseStride),
  });
  const [qCmp, qSlc, qWin] = [branch(BRANCH_CMP), branch(BRANCH_SLC), branch(BRANCH_WIN)];

  const kStride = H * Dk;
  const vStride = H * Dv;
  const cmp: KVView = { k: inputs.kCmp, v: inputs.vCmp, kBase: 0, vBase: 0, kStride, vStride, Dk, Dv };
  const slc: KVView = { k: inputs.kSlc, v: inputs.vSlc, kBase: 0, vBase: 0, kStride, vStride, Dk, Dv };
  const win: KVView = { k: inputs.kWin, v: inputs.vWin, kBase: 0, vBase: 0, kStride, vStride, Dk, Dv };
  const heads: HeadGroup = { G, qOff: 0, oOff: 0, gateOff: 0, gateStride: 3, lseOff: 0 };

  const longest = maxKeys(segments);
  const probs = new Float64Array(G * longest);
  const scores = new Float64Array(selectionBlockOf(longest - 1, config) + 1);
  const taken = new Uint8Array(scores.length);
  const cmpKeys = new KeyRanges(1);
  const slcKeys = new KeyRanges(n);
  const winKeys = new KeyRanges(1);
  const forced = new ForcedBlocks(config);

  for (const seg of segments) {
    for (let i = 0; i < seg.count; i++) {
      const t = seg.firstPos + i;
      const row = seg.qRow + i;
      const c = visibleCompressed(t, config);
      cmpKeys.clear().push(0, c);
      winKeys.clear().push(windowStart(t, config), t + 1);
      for (let g = 0; g < H; g++) {
        cmp.kBase = seg.cmpRow * kStride + g * Dk;
        cmp.vBase = seg.cmpRow * vStride + g * Dv;
        slc.kBase = win.kBase = seg.kvRow * kStride + g * Dk;
        slc.vBase = win.vBase = seg.kvRow * vStride + g * Dv;
        const head0 = row * HQ + g * G;
        heads.qOff = head0 * Dk;
        heads.oOff = head0 * Dv;
        heads.lseOff = pass.selectOnly ? 0 : head0;
        heads.gateOff = head0 * 3 + BRANCH_CMP;
        // Branch 1 for the whole group; its probabilities score the blocks.
        if (pass.selectOnly) attendProbabilities(inputs.q, lse, heads, cmp, cmpKeys, scale, probs);
        else attendForward(qCmp, heads, cmp, cmpKeys, scale, probs);
        const biOff = (row * H + g) * n;
        if (blocksGiven) {
          checkBlockIndices(blockIndices, biOff, n, t, config, taken, () => `b=${seg.batch}, t=${seg.tensorT0 + i}, h=${g}`);
        } else {
          const candidates = selectionBlockOf(t, config) + 1;
          scores.fill(0, 0, candidates);
          for (let h = 0; h < G; h++) addSelectionScores(probs, h * c, c, config, scores);
          chooseBlocks(t, scores, config, taken, forced.at(t), blockIndices, biOff);
          const out = pass.scoresOut;
          if (out) out.scores.set(scores.subarray(0, candidates), (row * H + g) * out.blocks);
        }
        if (pass.selectOnly) continue;
        selectedKeys(blockIndices, biOff, n, ls, t, slcKeys);
        heads.gateOff = head0 * 3 + BRANCH_SLC;
        attendForward(qSlc, heads, slc, slcKeys, scale, probs);
        heads.gateOff = head0 * 3 + BRANCH_WIN;
        attendForward(qWin, heads, win, winKeys, scale, probs);
      }
    }
  }
  return { output, blockIndices, lse: pass.selectOnly ? new Float64Array(0) : lse };
}

/** Branch 2's keys: the tokens of the listed blocks that are <= t, as ranges. */
export function selectedKeys(
  blockIndices: Int32Array,
  off: number,
  n: number,
  selectBlock: number,
  t: number,
  keys: KeyRanges,
): KeyRanges {
  keys.clear();
  for (let k = 0; k < n; k++) {
    const j = blockIndices[off + k];
    if (j < 0) continue;
    keys.push(j * selectBlock, Math.min((j + 1) * selectBlock, t + 1));
  }
  return keys;
}
