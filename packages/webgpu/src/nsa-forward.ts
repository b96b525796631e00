// The NSA forward pass on the GPU: compression branch (which also yields the softmax
// statistics the selection scores need), block selection, selected and window branches, gates.
// Training calls and decode steps share it; they differ only in their sequence list.
import type { NSAConfig, NSADims, NSASaved } from '@nsa/core';
import { prepareBranchForward, prepareGateCombine, prepareMatrixBranchForward, prepareMergeBranches, prepareSelection, type BranchForward, type Geometry } from './branch.js';
import { run, type Frame, type Runtime } from './runtime.js';
import type { ElementType } from './shaders/common.js';
import { BACKEND_NAME, createStorageBuffer } from './tensor.js';
import type { Sequence } from './tiling.js';

export function geometryOf(config: NSAConfig, dims: { B: number; HQ: number; H: number; G: number; Dk: number; Dv: number }, tokRows: number, e: ElementType): Geometry {
  return {
    H: dims.H,
    HQ: dims.HQ,
    G: dims.G,
    DK: dims.Dk,
    DV: dims.Dv,
    e,
    scale: config.scale,
    tokRows,
    window: config.window,
    cmpBlock: config.compressBlock,
    cmpStride: config.compressStride,
    selBlock: config.selectBlock,
    nSel: config.selectCount,
    initialBlocks: config.initialBlocks,
    localBlocks: config.localBlocks,
  };
}

/** Sequences of a training-shaped call: B equal rows, or the packed sequences of varlen. */
export function forwardSequences(dims: Pick<NSADims, 'B' | 'T' | 'C' | 'varlen'>): Sequence[] {
  const seqs: Sequence[] = [];
  if (dims.varlen) {
    const { tokenOffsets: t, compressedOffsets: c } = dims.varlen;
    for (let s = 0; s + 1 < t.length; s++) {
      const len = t[s + 1] - t[s];
      seqs.push({ qRow: t[s], nq: len, qPos: 0, keyBase: t[s], cmpBase: c[s], seqLen: len, cmpLen: c[s + 1] - c[s] });
    }
    return seqs;
  }
  for (let b = 0; b < dims.B; b++) {
    seqs.push({ qRow: b * dims.T, nq: dims.T, qPos: 0, keyBase: b * dims.T, cmpBase: b * dims.C, seqLen: dims.T, cmpLen: dims.C });
  }
  return seqs;
}

/** Per-branch results the backward pass reads (f32), in branch order cmp, slc, win. */
export class WebGPUNSASaved implements NSASaved {
  readonly backend = BACKEND_NAME;
  #disposed = false;
  constructor(
    readonly outputs: readonly GPUBuffer[],
    readonly lse: readonly GPUBuffer[],
  ) {}
  get disposed(): boolean {
    return this.#disposed;
  }
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const b of [...this.outputs, ...this.lse]) b.destroy();
  }
}

export interface NSAForwardBuffers {
  readonly q: GPUBuffer;
  readonly kCmp: GPUBuffer;
  readonly vCmp: GPUBuffer;
  readonly kSlc: GPUBuffer;
  readonly vSlc: GPUBuffer;
  readonly kWin: GPUBuffer;
  readonly vWin: GPUBuffer;
  readonly gates: GPUBuffer;
  /** Caller-supplied block choice, copied into `blocks`; otherwise it is computed. */
  readonly given?: GPUBuffer;
  /** int32 [tokRows, H, n], written. */
  readonly blocks: GPUBuffer;
  /** [tokRows, HQ, Dv] in the input dtype, written. */
  readonly out: GPUBuffer;
}

/**
 * Compiles and plans the passes of one forward; the result encodes them into a frame. `merged`
 * (decode steps, whose few queries split every branch's keys across workgroups) leaves the
 * branches' splits unmerged and merges all three with the gates in one pass, the selection scores
 * taking the compression lse from the split stats: six dispatches instead of nine. Per-branch
 * outputs and lse are then not written (a decode step does not keep them). `training` (whole
 * sequences, not decode steps) lets float16 calls run the compressed, selected and window branches
 * on subgroup matrices where the device has them.
 */
export async function prepareNSAForward(
  rt: Runtime,
  geo: Geometry,
  seqs: readonly Sequence[],
  given: boolean,
  merged = false,
  training = false,
): Promise<(frame: Frame, buf: NSAForwardBuffers, outputs: readonly GPUBuffer[], lse: readonly GPUBuffer[]) => void> {
  const defer = merged && rt.ctx.mergedDecode;
  const matrix = training && !merged;
  const branch = async (mode: 'compressed' | 'window' | 'selected'): Promise<BranchForward> =>
    (matrix ? await prepareMatrixBranchForward(rt, geo, mode, seqs) : undefined) ?? prepareBranchForward(rt, geo, mode, seqs, { defer });
  const cmp = await branch('compressed');
  const [select, slc, win] = await Promise.all([
    given ? undefined : prepareSelection(rt, geo, seqs, cmp.deferredSplits, matrix),
    branch('selected'),
    branch('window'),
  ]);
  const splits = [cmp.deferredSplits, slc.deferredSplits, win.deferredSplits];
  if (defer && splits.every((n) => n !== undefined) && (!select || select.twoPass)) {
    const [a, b, c] = splits as [number, number, number];
    const merge = await prepareMergeBranches(rt, geo, [a, b, c]);
    const { HQ, DV, tokRows } = geo;
    return (frame, buf) => {
      const part = [a, b, c].map((n, i) => frame.scratch(n * tokRows * HQ * DV * 4, `branch ${i} split partials`));
      const stats = [a, b, c].map((n, i) => frame.scratch(n * tokRows * HQ * 2 * 4, `branch ${i} split stats`));
      // out/lse of a deferred branch are not written; the split buffers stand in for them.
      cmp(frame, { q: buf.q, k: buf.kCmp, v: buf.vCmp, out: part[0], lse: stats[0], part: part[0], stats: stats[0] });
      if (buf.given) frame.copy(buf.given, 0, buf.blocks, 0, Math.min(buf.given.size, buf.blocks.size));
      else select?.(frame, { q: buf.q, kCmp: buf.kCmp, lseCmp: stats[0], blocks: buf.blocks });
      slc(frame, { q: buf.q, k: buf.kSlc, v: buf.vSlc, blocks: buf.blocks, out: part[1], lse: stats[1], part: part[1], stats: stats[1] });
      win(frame, { q: buf.q, k: buf.kWin, v: buf.vWin, out: part[2], lse: stats[2], part: part[2], stats: stats[2] });
      merge(frame, { part, stats, gates: buf.gates, out: buf.out });
    };
  }
  if (defer) {
    // Not every branch could defer (several key groups, say): plan the unmerged passes instead.
    return prepareNSAForward(rt, geo, seqs, given, false);
  }
  const combine = await prepareGateCombine(rt, geo, 3);
  return (frame, buf, outputs, lse) => {
    cmp(frame, { q: buf.q, k: buf.kCmp, v: buf.vCmp, out: outputs[0], lse: lse[0] });
    if (buf.given) frame.copy(buf.given, 0, buf.blocks, 0, Math.min(buf.given.size, buf.blocks.size));
    else select?.(frame, { q: buf.q, kCmp: buf.kCmp, lseCmp: lse[0], blocks: buf.blocks });
    slc(frame, { q: buf.q, k: buf.kSlc, v: buf.vSlc, blocks: buf.blocks, out: outputs[1], lse: lse[1] });
    win(frame, { q: buf.q, k: buf.kWin, v: buf.vWin, out: outputs[2], lse: lse[2] });
    combine(frame, { o: [...outputs], gates: buf.gates, out: buf.out });
  };
}

/** Runs the whole forward of a training call; the per-branch outputs and lse are kept for backward. */
export async function encodeNSAForward(rt: Runtime, geo: Geometry, seqs: readonly Sequence[], buf: NSAForwardBuffers, label: string): Promise<WebGPUNSASaved> {
  const encode = await prepareNSAForward(rt, geo, seqs, buf.given !== undefined, false, true);
  const rows = geo.tokRows * geo.HQ;
  const saved = new WebGPUNSASaved(
    [0, 1, 2].map((b) => createStorageBuffer(rt.ctx, rows * geo.DV * 4, `${label}: branch ${b} output`)),
    [0, 1, 2].map((b) => createStorageBuffer(rt.ctx, rows * 4, `${label}: branch ${b} lse`)),
  );
  try {
    await run(rt, label, (frame) => encode(frame, buf, saved.outputs, saved.lse));
  } catch (error) {
    saved.dispose();
    throw error;
  }
  return saved;
}
