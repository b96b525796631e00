#!/usr/bin/env node
/* global console, process */
// The dense backward's step-copy modes give the same gradients bit for bit: the TMA copies read finite
// rows (the next sequence's, or zeros) where cp.async wrote zeros, and those columns / keys are masked
// (P = dS = 0), so every product sums the same terms. Runs each shape of dense-cases.mjs (and a larger
// one) under NSA_DENSE_BWD_TMA = default, 0, sync, kv, pingpong in one process (the addon reads the switch at
// each launch). Plain Node over dist/:  node scripts/dense-tma-equal.mjs
import { createCudaBackend } from '../dist/index.js';
import { bitEqual, denseShapes, drawDense, withDenseInputs } from './dense-cases.mjs';

const backend = await createCudaBackend();
async function gradients(c, values, dtype) {
  return withDenseInputs(backend, c, values, dtype, async (inputs, keep, t) => {
    const forward = keep(await backend.attentionForward(inputs));
    const grads = keep(await backend.attentionBackward({ ...inputs, forward, dOutput: t(values.dO, [c.B, c.TQ, c.heads, c.D]) }));
    const out = {};
    for (const n of ['dq', 'dk', 'dv']) out[n] = await grads[n].read();
    return out;
  });
}
const shapes = [...denseShapes, { name: 'G=16 D=128 T=4100 two KV heads', B: 1, TQ: 4100, Tk: 4100, heads: 32, kvHeads: 2, D: 128 }];
const modes = ['', '0', 'sync', 'kv', 'pingpong'];
let failed = 0;
for (const dtype of ['bfloat16', 'float16']) {
  for (const c of shapes) {
    const values = drawDense(c, dtype, 7, true);
    const runs = [];
    for (const m of modes) {
      if (m) process.env.NSA_DENSE_BWD_TMA = m;
      else delete process.env.NSA_DENSE_BWD_TMA;
      runs.push(await gradients(c, values, dtype));
    }
    delete process.env.NSA_DENSE_BWD_TMA;
    const same = ['dq', 'dk', 'dv'].map((q) => bitEqual(runs.map((r) => r[q])));
    if (!same.every(Boolean)) failed++;
    console.log(`${c.name} ${dtype}: dq ${same[0] ? 'equal' : 'DIFFERS'}, dk ${same[1] ? 'equal' : 'DIFFERS'}, dv ${same[2] ? 'equal' : 'DIFFERS'} across modes default/0/sync/kv/pingpong`);
  }
}
console.log(`\n${failed ? `${failed} shapes DIFFER` : 'all shapes bit-equal across the copy modes'}`);
backend.dispose();
process.exitCode = failed ? 1 : 0;
