#!/usr/bin/env node
// Checks the 16-bit dense forward (on Hopper the wgmma kernel, dense_forward_wgmma.cu) on the GPU
// host: output parity against the float64 reference on prefill shapes (G = 1 .. 16, head dims 64 and
// 128, lengths that are no multiple of the tiles, varlen, queries after a cached prefix, a run of
// many key tiles), its distance to the mma.sync kernel (NSA_DENSE_WGMMA=0) on the same inputs, then
// bit-equality of the output across three runs. Plain Node over dist/:
//   node scripts/dense-forward-check.mjs [--only <substring>] [--no-determinism]
/* global console, process */
import { createReferenceBackend } from '@nsa/reference';
import { formatParity, relativeError, tolerance } from '@nsa/test';
import { createCudaBackend } from '../dist/index.js';
import { bitEqual, denseShapes, drawDense, withDenseInputs } from './dense-cases.mjs';

const backend = await createCudaBackend();
const reference = createReferenceBackend();
const arg = (name) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : '');
const only = arg('--only');

async function output(target, c, values, dtype) {
  return withDenseInputs(target, c, values, dtype, async (inputs, keep) => {
    const forward = keep(await target.attentionForward(inputs));
    return await forward.output.read();
  });
}

// The mma.sync kernel on the same inputs (the switch is read at each launch).
async function outputMmaSync(c, values, dtype) {
  const before = process.env.NSA_DENSE_WGMMA;
  process.env.NSA_DENSE_WGMMA = '0';
  try {
    return await output(backend, c, values, dtype);
  } finally {
    if (before === undefined) delete process.env.NSA_DENSE_WGMMA;
    else process.env.NSA_DENSE_WGMMA = before;
  }
}

const rows = [];
for (const dtype of ['bfloat16', 'float16']) {
  for (const c of denseShapes.filter((x) => `${x.name} ${dtype}`.includes(only))) {
    const name = `${c.name} ${dtype}`;
    try {
      const values = drawDense(c, dtype, 13);
      const mine = Float64Array.from(await output(backend, c, values, dtype));
      const ref = Float64Array.from(await output(reference, c, values, 'float64'));
      const error = relativeError(mine, ref);
      rows.push({ case: name, quantity: 'output', error, tolerance: tolerance(dtype), ok: error < tolerance(dtype) });
      const other = Float64Array.from(await outputMmaSync(c, values, dtype));
      const toOther = relativeError(mine, other);
      rows.push({ case: name, quantity: 'output vs mma.sync kernel', error: toOther, tolerance: tolerance(dtype), ok: toOther < tolerance(dtype) });
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
  const big = [
    { name: 'determinism G=16 D=128 T=4096', B: 1, TQ: 4096, Tk: 4096, heads: 32, kvHeads: 2, D: 128 },
    { name: 'determinism varlen G=4 D=64', B: 1, TQ: 1500, Tk: 1500, heads: 8, kvHeads: 2, D: 64, cuSeqlens: [0, 700, 701, 1500] },
  ];
  for (const c of big) {
    const values = drawDense(c, 'bfloat16', 5);
    const runs = [];
    for (let i = 0; i < 3; i++) runs.push(await output(backend, c, values, 'bfloat16'));
    const equal = bitEqual(runs);
    if (!equal) failed++;
    console.log(`${c.name} bfloat16 output: ${equal ? 'bit-equal' : 'DIFFERS'} across 3 runs`);
  }
}
backend.dispose();
process.exitCode = failed ? 1 : 0;
