// Dense causal attention, the baseline: the same kernels as NSA's branches with every earlier
// key visible (queries at positions Tk - TQ .. Tk - 1; TQ = 1 is a decode step).
import type { AttentionDims, NSASaved } from '@nsa/core';
import {
  prepareBackwardPrep,
  prepareBranchDkDv,
  prepareBranchDq,
  prepareBranchForward,
  prepareCast,
  prepareGateCombine,
  type Geometry,
} from './branch.js';
import { run, type Runtime } from './runtime.js';
import type { ElementType } from './shaders/common.js';
import { BACKEND_NAME, createStorageBuffer } from './tensor.js';
import type { Sequence } from './tiling.js';

export function attentionGeometry(dims: AttentionDims, e: ElementType): Geometry {
  return {
    H: dims.H,
    HQ: dims.HQ,
    G: dims.G,
    DK: dims.Dk,
    DV: dims.Dv,
    e,
    scale: dims.scale,
    tokRows: dims.B * dims.TQ,
    window: dims.Tk + 1,
    cmpBlock: 1,
    cmpStride: 1,
    selBlock: 1,
    nSel: 1,
    initialBlocks: 0,
    localBlocks: 0,
  };
}

export function attentionSequences(dims: AttentionDims): Sequence[] {
  if (dims.varlen) {
    const t = dims.varlen.tokenOffsets;
    const seqs: Sequence[] = [];
    for (let s = 0; s + 1 < t.length; s++) {
      const len = t[s + 1] - t[s];
      seqs.push({ qRow: t[s], nq: len, qPos: 0, keyBase: t[s], cmpBase: 0, seqLen: len, cmpLen: 0 });
    }
    return seqs;
  }
  const seqs: Sequence[] = [];
  for (let b = 0; b < dims.B; b++) {
    seqs.push({ qRow: b * dims.TQ, nq: dims.TQ, qPos: dims.Tk - dims.TQ, keyBase: b * dims.Tk, cmpBase: 0, seqLen: dims.Tk, cmpLen: 0 });
  }
  return seqs;
}

export class WebGPUAttentionSaved implements NSASaved {
  readonly backend = BACKEND_NAME;
  #disposed = false;
  constructor(
    readonly output: GPUBuffer,
    readonly lse: GPUBuffer,
  ) {}
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.output.destroy();
    this.lse.destroy();
  }
}

export async function encodeAttentionForward(
  rt: Runtime,
  geo: Geometry,
  seqs: readonly Sequence[],
  buf: { q: GPUBuffer; k: GPUBuffer; v: GPUBuffer; out: GPUBuffer },
): Promise<WebGPUAttentionSaved> {
  const [forward, cast] = await Promise.all([prepareBranchForward(rt, geo, 'causal', seqs), prepareGateCombine(rt, geo, 1)]);
  const rows = geo.tokRows * geo.HQ;
  const saved = new WebGPUAttentionSaved(
    createStorageBuffer(rt.ctx, rows * geo.DV * 4, 'attention output f32'),
    createStorageBuffer(rt.ctx, rows * 4, 'attention lse'),
  );
  try {
    await run(rt, 'attentionForward', (frame) => {
      forward(frame, { q: buf.q, k: buf.k, v: buf.v, out: saved.output, lse: saved.lse });
      cast(frame, { o: [saved.output], out: buf.out });
    });
  } catch (error) {
    saved.dispose();
    throw error;
  }
  return saved;
}

export async function encodeAttentionBackward(
  rt: Runtime,
  geo: Geometry,
  seqs: readonly Sequence[],
  buf: { q: GPUBuffer; k: GPUBuffer; v: GPUBuffer; dOut: GPUBuffer },
  saved: WebGPUAttentionSaved,
  grads: { dq: GPUBuffer; dk: GPUBuffer; dv: GPUBuffer },
  sizes: { q: number; k: number; v: number },
): Promise<void> {
  const [prep, dqPass, dkdvPass, cast] = await Promise.all([
    prepareBackwardPrep(rt, geo, 1),
    prepareBranchDq(rt, geo, 'causal', seqs),
    prepareBranchDkDv(rt, geo, 'causal', seqs),
    prepareCast(rt, geo.e),
  ]);
  const f32 = geo.e === 'f32';
  await run(rt, 'attentionBackward', (frame) => {
    const rowgd = frame.scratch(geo.tokRows * geo.HQ * 8, 'row terms');
    prep(frame, { dOut: buf.dOut, o: [saved.output], rowgd: [rowgd] });
    const dq = f32 ? grads.dq : frame.scratch(sizes.q * 4, 'dq f32');
    const dk = f32 ? grads.dk : frame.scratch(sizes.k * 4, 'dk f32');
    const dv = f32 ? grads.dv : frame.scratch(sizes.v * 4, 'dv f32');
    dqPass(frame, { q: buf.q, k: buf.k, v: buf.v, dOut: buf.dOut, rowgd, lse: saved.lse, dq, accumulate: false });
    dkdvPass(frame, { q: buf.q, k: buf.k, v: buf.v, dOut: buf.dOut, rowgd, lse: saved.lse, dk, dv });
    if (!f32) {
      cast(frame, { src: dq, out: grads.dq, count: sizes.q });
      cast(frame, { src: dk, out: grads.dk, count: sizes.k });
      cast(frame, { src: dv, out: grads.dv, count: sizes.v });
    }
  });
}
