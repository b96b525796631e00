// The benchmark's NSA problem on the device (one sequence of T tokens, bfloat16): random normal
// inputs, output and gradient buffers, and the arguments of nsaForward / nsaBackward. Shared by
// bench.mjs and scripts/backward-profile.mjs / forward-ab-equal.mjs so that all run the same work.
import { compressedCount } from '@nsa/core';

/**
 * Device buffers for such problems: alloc(elements, bytes per element), random(elements, mean,
 * stddev) filled with seeded normals of `dtype` (seeds 1, 2, ... in call order, so two processes
 * make the same inputs), and upload(seq layout) -> the native seq argument.
 */
export function deviceInputs(addon, dtype) {
  let seed = 1;
  const alloc = (elements, bytesPer = 2) => new addon.DeviceBuffer(elements * bytesPer);
  const random = (elements, mean = 0, stddev = 1) => {
    const b = alloc(elements);
    addon.randomNormal({ dtype, dst: b, n: elements, seed: seed++, mean, stddev });
    return b;
  };
  const upload = (layout) => {
    const table = new addon.DeviceBuffer(layout.host.byteLength);
    table.upload(layout.host);
    return { table, host: layout.host, S: layout.S, rows: layout.rows, maxKeys: layout.maxKeys };
  };
  return { alloc, random, upload };
}

export function nsaProblem({ addon, config, cfg, seq, T, HQ, H, D, dtype, random, alloc }) {
  const C = compressedCount(T, config);
  const q = random(T * HQ * D), k = random(T * H * D), v = random(T * H * D);
  const gates = random(T * HQ * 3, 0.5, 0.2), dOut = random(T * HQ * D);
  const kCmp = alloc(C * H * D), vCmp = alloc(C * H * D);
  const out = alloc(T * HQ * D), oCmp = alloc(T * HQ * D), oSlc = alloc(T * HQ * D), oWin = alloc(T * HQ * D);
  const lse = alloc(T * HQ * 3, 4), blocks = alloc(T * H * config.selectCount, 4);
  const grads = {
    dq: alloc(T * HQ * D), dkCmp: alloc(C * H * D), dvCmp: alloc(C * H * D), dkSlc: alloc(T * H * D), dvSlc: alloc(T * H * D),
    dkWin: alloc(T * H * D), dvWin: alloc(T * H * D), dGates: alloc(T * HQ * 3),
  };
  const forwardArgs = { dtype, cfg, seq, q, kCmp, vCmp, kSlc: k, vSlc: v, kWin: k, vWin: v, gates, out, oCmp, oSlc, oWin, lse, blockOut: blocks };
  const backwardArgs = { ...forwardArgs, ...grads, dOut, blocks };
  // The mean compressor makes kCmp / vCmp: part of the timed NSA work, as in the anchors' timings.
  const compress = () => {
    addon.meanCompress({ dtype, x: k, out: kCmp, B: 1, T, H, D, l: config.compressBlock, d: config.compressStride });
    addon.meanCompress({ dtype, x: v, out: vCmp, B: 1, T, H, D, l: config.compressBlock, d: config.compressStride });
  };
  const free = () => {
    for (const b of [q, k, v, gates, dOut, kCmp, vCmp, out, oCmp, oSlc, oWin, lse, blocks, ...Object.values(grads)]) b.free();
  };
  return { C, q, k, v, out, dOut, grads, forwardArgs, backwardArgs, compress, free };
}
