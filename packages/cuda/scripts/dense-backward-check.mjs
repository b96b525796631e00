#!/usr/bin/env node
/* global console, process */
// Checks the register-layout dense backward (16-bit, Dk = Dv in {64, 128}) on the GPU host: parity
// of dq, dk, dv against the float64 reference on shapes beyond test/'s grid (G = 1, 4, 8, 16, head
// dims 64 and 128, lengths that are no multiple of the tiles, varlen, queries after a cached prefix),
// then bit-equality of the gradients across three runs. Plain Node over dist/:
//   node scripts/dense-backward-check.mjs [--only <substring>] [--no-determinism]
import { SeededRandom, roundToDType } from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';
import { formatParity, relativeError, tolerance } from '@nsa/test';
import { createCudaBackend } from '../dist/index.js';

const backend = await createCudaBackend();
const reference = createReferenceBackend();
const arg = (name) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : '');
const only = arg('--only');

const shapes = [
  { name: 'G=16 D=128 T=700', B: 1, TQ: 700, Tk: 700, heads: 16, kvHeads: 1, D: 128 },
  { name: 'G=16 D=64 T=300', B: 1, TQ: 300, Tk: 300, heads: 16, kvHeads: 1, D: 64 },
  { name: 'G=1 D=128 B=2 T=333', B: 2, TQ: 333, Tk: 333, heads: 2, kvHeads: 2, D: 128 },
  { name: 'G=4 D=64 T=1000', B: 1, TQ: 1000, Tk: 1000, heads: 8, kvHeads: 2, D: 64 },
  { name: 'G=8 D=128 T=257', B: 1, TQ: 257, Tk: 257, heads: 16, kvHeads: 2, D: 128 },
  { name: 'varlen G=16 D=128', B: 1, TQ: 600, Tk: 600, heads: 16, kvHeads: 1, D: 128, cuSeqlens: [0, 129, 130, 600] },
  { name: 'varlen G=2 D=64', B: 1, TQ: 500, Tk: 500, heads: 4, kvHeads: 2, D: 64, cuSeqlens: [0, 1, 65, 200, 500] },
  { name: 'after cache G=4 D=128 TQ=200 Tk=650', B: 2, TQ: 200, Tk: 650, heads: 8, kvHeads: 2, D: 128 },
  { name: 'after cache G=1 D=64 TQ=130 Tk=333', B: 1, TQ: 130, Tk: 333, heads: 4, kvHeads: 4, D: 64 },
];


// Forward + backward on a backend; returns the gradients as host arrays (and the raw bytes).
async function gradients(target, c, values, dtype) {
  const { B, TQ, Tk, heads: HQ, kvHeads: H, D, cuSeqlens } = c;
  const made = [];
  const t = (v, shape) => {
    const x = target.tensor(v, shape, dtype);
    made.push(x);
    return x;
  };
  try {
    const inputs = { q: t(values.q, [B, TQ, HQ, D]), k: t(values.k, [B, Tk, H, D]), v: t(values.v, [B, Tk, H, D]), cuSeqlens };
    const forward = await target.attentionForward(inputs);
    made.push(forward);
    const grads = await target.attentionBackward({ ...inputs, forward, dOutput: t(values.dO, [B, TQ, HQ, D]) });
    made.push(grads);
    const out = {};
    for (const n of ['dq', 'dk', 'dv']) out[n] = await grads[n].read();
    return out;
  } finally {
    for (const x of made) x.dispose();
  }
}

function draw(c, dtype, seed) {
  const rng = new SeededRandom(seed);
  const { B, TQ, Tk, heads: HQ, kvHeads: H, D } = c;
  const n = (count) => rng.normals(count).map((x) => roundToDType(x, dtype));
  return { q: n(B * TQ * HQ * D), k: n(B * Tk * H * D), v: n(B * Tk * H * D), dO: n(B * TQ * HQ * D) };
}

const rows = [];
for (const dtype of ['bfloat16', 'float16']) {
  for (const c of shapes.filter((x) => `${x.name} ${dtype}`.includes(only))) {
    const name = `${c.name} ${dtype}`;
    try {
      const values = draw(c, dtype, 11);
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
    const values = draw(c, 'bfloat16', 5);
    const runs = [];
    for (let i = 0; i < 3; i++) runs.push(await gradients(backend, c, values, 'bfloat16'));
    for (const q of ['dq', 'dk', 'dv']) {
      const a = new Uint8Array(runs[0][q].buffer);
      const equal = runs.slice(1).every((r) => {
        const b = new Uint8Array(r[q].buffer);
        return a.length === b.length && a.every((x, i) => x === b[i]);
      });
      if (!equal) failed++;
      console.log(`${c.name} bfloat16 ${q}: ${equal ? 'bit-equal' : 'DIFFERS'} across 3 runs`);
    }
  }
}
backend.dispose();
process.exitCode = failed ? 1 : 0;
