#!/usr/bin/env node
/* global console, process */
// Runs the NSA forward and backward twice on the same inputs (bfloat16, paper defaults, G = 16,
// T = 2048) and checks that every output and gradient is bit-equal: the backward uses no
// floating-point atomics. Plain Node over dist/ (for the GPU host):
//   node scripts/determinism.mjs
import { SeededRandom, compressedCount, createNSAConfig } from '@nsa/core';
import { createCudaBackend } from '../dist/index.js';

const backend = await createCudaBackend();
const config = createNSAConfig({ heads: 16, kvHeads: 1, headDimK: 128, headDimV: 128 });
const T = 2048, C = compressedCount(T, config), rng = new SeededRandom(7);
const t = (shape, lo) => backend.tensor(lo === undefined ? rng.normals(shape.reduce((a, b) => a * b, 1)) : rng.uniforms(shape.reduce((a, b) => a * b, 1), lo, 1), shape, 'bfloat16');
const inputs = {
  q: t([1, T, 16, 128]), kCmp: t([1, C, 1, 128]), vCmp: t([1, C, 1, 128]), kSlc: t([1, T, 1, 128]), vSlc: t([1, T, 1, 128]),
  kWin: t([1, T, 1, 128]), vWin: t([1, T, 1, 128]), gates: t([1, T, 16, 3], 0),
};
const dOutput = t([1, T, 16, 128]);
const names = ['output', 'blockIndices', 'dq', 'dkCmp', 'dvCmp', 'dkSlc', 'dvSlc', 'dkWin', 'dvWin', 'dGates'];
const runs = [];
for (let i = 0; i < 3; i++) {
  const forward = await backend.nsaForward({ config, ...inputs });
  const grads = await backend.nsaBackward({ config, ...inputs, forward, dOutput });
  const all = { output: forward.output, blockIndices: forward.blockIndices, ...grads };
  runs.push(await Promise.all(names.map((n) => all[n].read())));
  forward.dispose();
  grads.dispose();
}
let same = true;
for (let k = 0; k < names.length; k++) {
  for (let r = 1; r < runs.length; r++) {
    const a = new Uint8Array(runs[0][k].buffer), b = new Uint8Array(runs[r][k].buffer);
    const equal = a.length === b.length && a.every((x, i) => x === b[i]);
    if (!equal) same = false;
    if (r === 1) console.log(`${names[k]}: ${equal ? 'bit-equal' : 'DIFFERS'} across ${runs.length} runs`);
  }
}
console.log(same ? 'determinism: all outputs and gradients bit-equal' : 'determinism: FAILED');
process.exitCode = same ? 0 : 1;
