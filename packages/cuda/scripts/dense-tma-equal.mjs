#!/usr/bin/env node
/* global console, process */
// The dense forward's and backward's tile-copy modes give the same output and gradients bit for bit:
// the TMA copies read finite rows (later rows, or zeros past the tensor) where cp.async wrote zeros, and
// those keys / columns are masked (P = dS = 0), so every product sums the same terms. Runs each shape of
// dense-cases.mjs (and a larger one) under the defaults, NSA_DENSE_FWD_TMA=0 and NSA_DENSE_BWD_TMA = 0,
// sync, kv in one process (the addon reads the switches at each launch). Plain Node over dist/:
//   node scripts/dense-tma-equal.mjs
import { createCudaBackend } from '../dist/index.js';
import { bitEqual, denseShapes, drawDense, withDenseInputs } from './dense-cases.mjs';

const backend = await createCudaBackend();
async function gradients(c, values, dtype) {
  return withDenseInputs(backend, c, values, dtype, async (inputs, keep, t) => {
    const forward = keep(await backend.attentionForward(inputs));
    const grads = keep(await backend.attentionBackward({ ...inputs, forward, dOutput: t(values.dO, [c.B, c.TQ, c.heads, c.D]) }));
    const out = { o: await forward.output.read() };
    for (const n of ['dq', 'dk', 'dv']) out[n] = await grads[n].read();
    return out;
  });
}
const shapes = [...denseShapes, { name: 'G=16 D=128 T=4100 two KV heads', B: 1, TQ: 4100, Tk: 4100, heads: 32, kvHeads: 2, D: 128 }];
const modes = [{}, { NSA_DENSE_FWD_TMA: '0' }, { NSA_DENSE_BWD_TMA: '0' }, { NSA_DENSE_BWD_TMA: 'sync' }, { NSA_DENSE_BWD_TMA: 'kv' }];
const names = ['NSA_DENSE_FWD_TMA', 'NSA_DENSE_BWD_TMA'];
let failed = 0;
for (const dtype of ['bfloat16', 'float16']) {
  for (const c of shapes) {
    const values = drawDense(c, dtype, 7, true);
    const runs = [];
    for (const m of modes) {
      for (const n of names) delete process.env[n];
      Object.assign(process.env, m);
      runs.push(await gradients(c, values, dtype));
    }
    for (const n of names) delete process.env[n];
    const quantities = ['o', 'dq', 'dk', 'dv'];
    const same = quantities.map((q) => bitEqual(runs.map((r) => r[q])));
    if (!same.every(Boolean)) failed++;
    console.log(`${c.name} ${dtype}: ${quantities.map((q, i) => `${q} ${same[i] ? 'equal' : 'DIFFERS'}`).join(', ')} across default / FWD_TMA=0 / BWD_TMA=0, sync, kv`);
  }
}
console.log(`\n${failed ? `${failed} shapes DIFFER` : 'all shapes bit-equal across the copy modes'}`);
backend.dispose();
process.exitCode = failed ? 1 : 0;
