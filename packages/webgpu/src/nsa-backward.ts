// The NSA backward pass: dGates and each branch's (g, D) row terms, dq summed over the three
// branches (query-centric), then dk/dv of each branch (key-centric). The block choice is a constant.
import { prepareBackwardPrep, prepareBranchDkDv, prepareBranchDq, prepareCast, type Geometry } from './branch.js';
import type { WebGPUNSASaved } from './nsa-forward.js';
import { run, type Frame, type Runtime } from './runtime.js';
import type { Mode } from './shaders/common.js';
import type { Sequence } from './tiling.js';

export interface NSABackwardBuffers {
  readonly q: GPUBuffer;
  readonly kCmp: GPUBuffer;
  readonly vCmp: GPUBuffer;
  readonly kSlc: GPUBuffer;
  readonly vSlc: GPUBuffer;
  readonly kWin: GPUBuffer;
  readonly vWin: GPUBuffer;
  readonly gates: GPUBuffer;
  readonly blocks: GPUBuffer;
  readonly dOut: GPUBuffer;
}

/** Gradient outputs in the input dtype, with their element counts. */
export interface NSAGradientBuffers {
  readonly dq: GPUBuffer;
  readonly dkCmp: GPUBuffer;
  readonly dvCmp: GPUBuffer;
  readonly dkSlc: GPUBuffer;
  readonly dvSlc: GPUBuffer;
  readonly dkWin: GPUBuffer;
  readonly dvWin: GPUBuffer;
  readonly dGates: GPUBuffer;
}

export async function encodeNSABackward(
  rt: Runtime,
  geo: Geometry,
  seqs: readonly Sequence[],
  buf: NSABackwardBuffers,
  saved: WebGPUNSASaved,
  grads: NSAGradientBuffers,
  sizes: { q: number; kCmp: number; vCmp: number; k: number; v: number },
  label: string,
): Promise<void> {
  const modes: Mode[] = ['compressed', 'selected', 'window'];
  const [prep, cast, ...passes] = await Promise.all([
    prepareBackwardPrep(rt, geo, 3),
    prepareCast(rt, geo.e),
    ...modes.map((m) => prepareBranchDq(rt, geo, m, seqs)),
    ...modes.map((m) => prepareBranchDkDv(rt, geo, m, seqs)),
  ]);
  const dqPasses = passes.slice(0, 3) as Awaited<ReturnType<typeof prepareBranchDq>>[];
  const dkdvPasses = passes.slice(3) as Awaited<ReturnType<typeof prepareBranchDkDv>>[];
  const f32 = geo.e === 'f32';
  await run(rt, label, (frame: Frame) => {
    const rows = geo.tokRows * geo.HQ;
    const rowgd = [0, 1, 2].map((b) => frame.scratch(rows * 8, `branch ${b} row terms`));
    prep(frame, { dOut: buf.dOut, o: [...saved.outputs], gates: buf.gates, rowgd, dGates: grads.dGates });
    // f32 gradients accumulate in place; f16 ones go through f32 scratch and a cast.
    const acc = (out: GPUBuffer, count: number, name: string) => (f32 ? out : frame.scratch(count * 4, `${name} f32`));
    const dq = acc(grads.dq, sizes.q, 'dq');
    const keys = [
      [buf.kCmp, buf.vCmp, acc(grads.dkCmp, sizes.kCmp, 'dkCmp'), acc(grads.dvCmp, sizes.vCmp, 'dvCmp')],
      [buf.kSlc, buf.vSlc, acc(grads.dkSlc, sizes.k, 'dkSlc'), acc(grads.dvSlc, sizes.v, 'dvSlc')],
      [buf.kWin, buf.vWin, acc(grads.dkWin, sizes.k, 'dkWin'), acc(grads.dvWin, sizes.v, 'dvWin')],
    ];
    modes.forEach((mode, b) => {
      const blocks = mode === 'selected' ? buf.blocks : undefined;
      dqPasses[b](frame, { q: buf.q, k: keys[b][0], v: keys[b][1], dOut: buf.dOut, rowgd: rowgd[b], lse: saved.lse[b], dq, blocks, accumulate: b > 0 });
    });
    modes.forEach((mode, b) => {
      const blocks = mode === 'selected' ? buf.blocks : undefined;
      dkdvPasses[b](frame, { q: buf.q, k: keys[b][0], v: keys[b][1], dOut: buf.dOut, rowgd: rowgd[b], lse: saved.lse[b], dk: keys[b][2], dv: keys[b][3], blocks });
    });
    if (!f32) {
      cast(frame, { src: dq, out: grads.dq, count: sizes.q });
      const counts = [
        [sizes.kCmp, sizes.vCmp],
        [sizes.k, sizes.v],
        [sizes.k, sizes.v],
      ];
      const outs = [
        [grads.dkCmp, grads.dvCmp],
        [grads.dkSlc, grads.dvSlc],
        [grads.dkWin, grads.dvWin],
      ];
      for (let b = 0; b < 3; b++) {
        cast(frame, { src: keys[b][2], out: outs[b][0], count: counts[b][0] });
        cast(frame, { src: keys[b][3], out: outs[b][1], count: counts[b][1] });
      }
    }
  });
}
