// The NSA backward pass (NSA-SPEC.md, "Backward"): gradients of q, every branch's keys and values
// and the gates, with the forward's block choice held constant.
import { visibleCompressed, windowStart, type NSAConfig } from '@nsa/core';
import { attendBackward, type HeadGroup, type KVGrads, type KVView, type QueryBackward } from './branches/attend.js';
import { KeyRanges } from './branches/key-ranges.js';
import { checkHostInputs, checkLength, type NSAHostInputs, type NSAHostShape } from './host-inputs.js';
import { BRANCH_CMP, BRANCH_SLC, BRANCH_WIN, runForward, selectedKeys } from './nsa-forward.js';
import { maxKeys, type Segment } from './segments.js';
import { checkBlockIndices } from './selection.js';

/** Gradients, each shaped like its input. */
export interface NSAHostGradients {
  readonly dq: Float64Array;
  readonly dkCmp: Float64Array;
  readonly dvCmp: Float64Array;
  readonly dkSlc: Float64Array;
  readonly dvSlc: Float64Array;
  readonly dkWin: Float64Array;
  readonly dvWin: Float64Array;
  readonly dGates: Float64Array;
}

export interface NSABackwardHostOptions extends NSAHostShape {
  /** int32 [B, T, H, n]: the blocks the forward used. */
  readonly blockIndices: Int32Array;
  /** [B, T, HQ, Dv]. */
  readonly dOutput: Float64Array;
  /** The forward's [3, B*T, HQ] log-sum-exp; recomputed when absent. */
  readonly lse?: Float64Array;
}

/** The whole backward on host arrays. */
export function nsaBackwardHost(inputs: NSAHostInputs, config: NSAConfig, options: NSABackwardHostOptions): NSAHostGradients {
  const layout = checkHostInputs(inputs, config, options);
  const rows = layout.B * layout.T;
  checkLength('blockIndices', options.blockIndices, [layout.B, layout.T, config.kvHeads, config.selectCount]);
  checkLength('dOutput', options.dOutput, [layout.B, layout.T, config.heads, config.headDimV]);
  let lse = options.lse;
  if (lse) {
    checkLength('lse', lse, [3, rows, config.heads]);
  } else {
    lse = runForward({
      config,
      inputs,
      segments: layout.segments,
      qRows: rows,
      blockIndices: options.blockIndices,
      blocksGiven: true,
    }).lse;
  }
  return runBackward({
    config,
    inputs,
    segments: layout.segments,
    qRows: rows,
    blockIndices: options.blockIndices,
    lse,
    dOutput: options.dOutput,
  });
}

export interface BackwardPass {
  readonly config: NSAConfig;
  readonly inputs: NSAHostInputs;
  readonly segments: readonly Segment[];
  readonly qRows: number;
  readonly blockIndices: Int32Array;
  readonly lse: Float64Array;
  readonly dOutput: Float64Array;
}

export function runBackward(pass: BackwardPass): NSAHostGradients {
  const { config, inputs, segments, qRows, blockIndices, lse, dOutput } = pass;
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv, selectCount: n, selectBlock: ls, scale } = config;
  const G = HQ / H;
  const grads: NSAHostGradients = {
    dq: new Float64Array(inputs.q.length),
    dkCmp: new Float64Array(inputs.kCmp.length),
    dvCmp: new Float64Array(inputs.vCmp.length),
    dkSlc: new Float64Array(inputs.kSlc.length),
    dvSlc: new Float64Array(inputs.vSlc.length),
    dkWin: new Float64Array(inputs.kWin.length),
    dvWin: new Float64Array(inputs.vWin.length),
    dGates: new Float64Array(inputs.gates.length),
  };
  const lseStride = qRows * HQ;
  const branch = (b: number): QueryBackward => ({
    q: inputs.q,
    gates: inputs.gates,
    lse: lse.subarray(b * lseStride, (b + 1) * lseStride),
    dO: dOutput,
    dq: grads.dq,
    dGates: grads.dGates,
  });
  const [qCmp, qSlc, qWin] = [branch(BRANCH_CMP), branch(BRANCH_SLC), branch(BRANCH_WIN)];
  const kStride = H * Dk;
  const vStride = H * Dv;
  const cmp: KVView = { k: inputs.kCmp, v: inputs.vCmp, kBase: 0, vBase: 0, kStride, vStride, Dk, Dv };
  const slc: KVView = { k: inputs.kSlc, v: inputs.vSlc, kBase: 0, vBase: 0, kStride, vStride, Dk, Dv };
  const win: KVView = { k: inputs.kWin, v: inputs.vWin, kBase: 0, vBase: 0, kStride, vStride, Dk, Dv };
  const dCmp: KVGrads = { dk: grads.dkCmp, dv: grads.dvCmp };
  const dSlc: KVGrads = { dk: grads.dkSlc, dv: grads.dvSlc };
  const dWin: KVGrads = { dk: grads.dkWin, dv: grads.dvWin };
  const heads: HeadGroup = { G, qOff: 0, oOff: 0, gateOff: 0, gateStride: 3, lseOff: 0 };

  const longest = maxKeys(segments);
  const probs = new Float64Array(G * longest);
  const dots = new Float64Array(G * longest);
  const taken = new Uint8Array(Math.ceil(longest / ls) + 1);
  const cmpKeys = new KeyRanges(1);
  const slcKeys = new KeyRanges(n);
  const winKeys = new KeyRanges(1);

  for (const seg of segments) {
    for (let i = 0; i < seg.count; i++) {
      const t = seg.firstPos + i;
      const row = seg.qRow + i;
      cmpKeys.clear().push(0, visibleCompressed(t, config));
      winKeys.clear().push(windowStart(t, config), t + 1);
      for (let g = 0; g < H; g++) {
        cmp.kBase = seg.cmpRow * kStride + g * Dk;
        cmp.vBase = seg.cmpRow * vStride + g * Dv;
        slc.kBase = win.kBase = seg.kvRow * kStride + g * Dk;
        slc.vBase = win.vBase = seg.kvRow * vStride + g * Dv;
        const biOff = (row * H + g) * n;
        checkBlockIndices(blockIndices, biOff, n, t, config, taken, () => `b=${seg.batch}, t=${seg.tensorT0 + i}, h=${g}`);
        selectedKeys(blockIndices, biOff, n, ls, t, slcKeys);
        const head0 = row * HQ + g * G;
        heads.qOff = head0 * Dk;
        heads.oOff = head0 * Dv;
        heads.lseOff = head0;
        heads.gateOff = head0 * 3 + BRANCH_CMP;
        attendBackward(qCmp, heads, cmp, dCmp, cmpKeys, scale, probs, dots);
        heads.gateOff = head0 * 3 + BRANCH_SLC;
        attendBackward(qSlc, heads, slc, dSlc, slcKeys, scale, probs, dots);
        heads.gateOff = head0 * 3 + BRANCH_WIN;
        attendBackward(qWin, heads, win, dWin, winKeys, scale, probs, dots);
      }
    }
  }
  return grads;
}
