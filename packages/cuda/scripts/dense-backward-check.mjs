#!/usr/bin/env node
/* global console, process */
// Checks the register-layout dense backward (16-bit, Dk = Dv in {64, 128}) on the GPU host: parity
// of dq, dk, dv against the float64 reference on shapes beyond test/'s grid (G = 1, 4, 8, 16, head
// dims 64 and 128, lengths that are no multiple of the tiles, varlen, queries after a cached prefix),
// then bit-equality of the gradients across three runs. Plain Node over dist/:
//   node scripts/dense-backward-check.mjs [--only <substring>] [--no-determinism]
import { createReferenceBackend } from '@nsa/reference';
import { formatParity, relativeError, tolerance } from '@nsa/test';
import { createCudaBackend } from '../dist/index.js';
import { bitEqual, denseShapes, drawDense, withDenseInputs } from './dense-cases.mjs';

const backend = await createCudaBackend();
const reference = createReferenceBackend();
const arg = (name) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : '');
const only = arg('--only');

// Forward + backward on a backend; returns the gradients as host arrays.
async function gradients(target, c, values, dtype) {
  return withDenseInputs(target, c, values, dtype, async (inputs, keep, t) => {
    const forward = keep(await target.attentionForward(inputs));
    const grads = keep(await target.attentionBackward({ ...inputs, forward, dOutput: t(values.dO, [c.B, c.TQ, c.heads, c.D]) }));
    const out = {};
    for (const n of ['dq', 'dk', 'dv']) out[n] = await grads[n].read();
    return out;
  });
}

const rows = [];
for (const dtype of ['bfloat16', 'float16']) {
  for (const c of denseShapes.filter((x) => `${x.name} ${dtype}`.includes(only))) {
    const name = `${c.name} ${dtype}`;
    try {
      const values = drawDense(c, dtype, 11, true);
      const mine = await gradients(backend, c, values, dtype);
      const ref = await gradients(reference, c, values, 'float64');
      for (const q of ['dq', 'dk', 'dv']) {
        const error = relativeError(Float64Array.from(mine[q]), Float64Array.from(ref[q]));
        rows.push({ case: name, quantity: q, error, tolerance: tolerance(dtype), ok: error < tolerance(dtype) });
      }
    } catch (error) {
      rows.push({ case: name, quantity: `error: ${error.message}`, error: Infinity, tolerance: 0, ok: false });
    }
    console.error(`${name} done`);
  }
}
console.log(formatParity(rows));
let failed = rows.filter((r) => !r.ok).length;
console.log(`\n${rows.length - failed} passed, ${failed} failed`);

if (!process.argv.includes('--no-determinism')) {
  // Bit-equality across runs: no float atomics, fixed reduction orders.
  const big = [
    { name: 'determinism G=16 D=128 T=2048', B: 1, TQ: 2048, Tk: 2048, heads: 32, kvHeads: 2, D: 128 },
    { name: 'determinism varlen G=4 D=64', B: 1, TQ: 1500, Tk: 1500, heads: 8, kvHeads: 2, D: 64, cuSeqlens: [0, 700, 701, 1500] },
  ];
  for (const c of big) {
    const values = drawDense(c, 'bfloat16', 5, true);
    const runs = [];
    for (let i = 0; i < 3; i++) runs.push(await gradients(backend, c, values, 'bfloat16'));
    for (const q of ['dq', 'dk', 'dv']) {
      const equal = bitEqual(runs.map((r) => r[q]));
      if (!equal) failed++;
      console.log(`${c.name} bfloat16 ${q}: ${equal ? 'bit-equal' : 'DIFFERS'} across 3 runs`);
    }
  }
}
backend.dispose();
process.exitCode = failed ? 1 : 0;
