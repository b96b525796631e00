#!/usr/bin/env node
/* global console, process */
// One NSA forward, then its backward under each dq (and key-block) switch set in this process's environment (the
// backward reads them on every call), every gradient compared bit for bit with the default's.
// Switches that change only the dq blocks' launch order, ring depth, ring layout or how ring chunks are copied, or
// when the key blocks read their scalars (NSA_BWD_DQ_ORDER=row, NSA_BWD_DQ_RING=2, NSA_BWD_DQ_RING_SWIZZLE=0,
// NSA_BWD_DQ_RING_TMA=0, NSA_BWD_KEY_DEFER=0) must give
// bit-equal gradients; NSA_BWD_DQ_FORCED=0 changes the order of dq's
// sum over selected keys, so it may differ, in dq only. bfloat16, paper defaults, G = 16, two KV heads, T = 2048. Plain Node over dist/:
//   node scripts/dq-variants.mjs
import { SeededRandom, compressedCount, createNSAConfig } from '@nsa/core';
import { createCudaBackend } from '../dist/index.js';
import { differingGradients, gradientNames as names, gradientsUnder } from './gradient-variants.mjs';

const backend = await createCudaBackend();
const H = 2, HQ = 16 * H, D = 128, T = 2048;
const config = createNSAConfig({ heads: HQ, kvHeads: H, headDimK: D, headDimV: D });
const C = compressedCount(T, config), rng = new SeededRandom(11);
const t = (shape, lo) => backend.tensor(lo === undefined ? rng.normals(shape.reduce((a, b) => a * b, 1)) : rng.uniforms(shape.reduce((a, b) => a * b, 1), lo, 1), shape, 'bfloat16');
const inputs = {
  q: t([1, T, HQ, D]), kCmp: t([1, C, H, D]), vCmp: t([1, C, H, D]), kSlc: t([1, T, H, D]), vSlc: t([1, T, H, D]),
  kWin: t([1, T, H, D]), vWin: t([1, T, H, D]), gates: t([1, T, HQ, 3], 0),
};
const dOutput = t([1, T, HQ, D]);
const variants = [{}, { NSA_BWD_DQ_ORDER: 'row' }, { NSA_BWD_DQ_RING: '2' }, { NSA_BWD_KEY_DEFER: '0' }, { NSA_BWD_DQ_RING_SWIZZLE: '0' }, { NSA_BWD_DQ_RING_TMA: '0' },
  { NSA_BWD_DQ_RING_TMA: '0', NSA_BWD_DQ_RING: '2' }, { NSA_BWD_DQ_FORCED: '0' },
  { NSA_BWD_DQ_FORCED: '0', NSA_BWD_DQ_RING: '2', NSA_BWD_DQ_ORDER: 'row', NSA_BWD_KEY_DEFER: '0' }];
const forward = await backend.nsaForward({ config, ...inputs });
let base = null;
let failed = false;
for (const v of variants) {
  const cleared = ['NSA_BWD_DQ_ORDER', 'NSA_BWD_DQ_RING', 'NSA_BWD_DQ_FORCED', 'NSA_BWD_KEY_DEFER', 'NSA_BWD_DQ_RING_SWIZZLE', 'NSA_BWD_DQ_RING_TMA'];
  const got = await gradientsUnder(backend, { config, ...inputs, forward, dOutput }, v, cleared);
  if (!base) {
    base = got;
    continue;
  }
  const differs = differingGradients(base, got);
  // Only NSA_BWD_DQ_FORCED=0 changes a sum's order (dq's), so it alone may differ, and in dq only.
  const allowed = v.NSA_BWD_DQ_FORCED === '0' ? ['dq'] : [];
  const ok = differs.every((n) => allowed.includes(n));
  if (!ok) failed = true;
  // Where a gradient differs: its relative L2 distance from the default's (rounding: ~1e-3 in bfloat16).
  const rel = (k) => {
    let d = 0, n = 0;
    for (let i = 0; i < base[k].length; i++) {
      d += (got[k][i] - base[k][i]) ** 2;
      n += base[k][i] ** 2;
    }
    return Math.sqrt(d / n).toExponential(2);
  };
  const detail = differs.map((n) => `${n} (rel. L2 ${rel(names.indexOf(n))})`).join(', ');
  console.log(`${JSON.stringify(v)}: ${differs.length ? `differs in ${detail}` : 'all gradients bit-equal'} to the default${ok ? '' : ' (NOT EXPECTED)'}`);
}
forward.dispose();
console.log(failed ? 'dq variants: FAILED' : 'dq variants: as expected');
process.exitCode = failed ? 1 : 0;
