#!/usr/bin/env node
// Checks the 16-bit dense forward (on Hopper the wgmma kernel, dense_forward_wgmma.cu) on the GPU
// host: output parity against the float64 reference on prefill shapes (G = 1 .. 16, head dims 64 and
// 128, lengths that are no multiple of the tiles, varlen, queries after a cached prefix, a run of
// many key tiles), its distance to the mma.sync kernel (NSA_DENSE_WGMMA=0) on the same inputs, then
// bit-equality of the output across three runs. Plain Node over dist/:
//   node scripts/dense-forward-check.mjs [--only <substring>] [--no-determinism]
/* global console, process */
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
  { name: 'G=4 D=128 T=1664 (13 key tiles)', B: 1, TQ: 1664, Tk: 1664, heads: 4, kvHeads: 1, D: 128 },
  { name: 'varlen G=16 D=128', B: 1, TQ: 600, Tk: 600, heads: 16, kvHeads: 1, D: 128, cuSeqlens: [0, 129, 130, 600] },
  { name: 'varlen G=2 D=64', B: 1, TQ: 500, Tk: 500, heads: 4, kvHeads: 2, D: 64, cuSeqlens: [0, 1, 65, 200, 500] },
  { name: 'after cache G=4 D=128 TQ=200 Tk=650', B: 2, TQ: 200, Tk: 650, heads: 8, kvHeads: 2, D: 128 },
  { name: 'after cache G=1 D=64 TQ=130 Tk=333', B: 1, TQ: 130, Tk: 333, heads: 4, kvHeads: 4, D: 64 },
];

async function output(target, c, values, dtype) {
  const { B, TQ, Tk, heads: HQ, kvHeads: H, D, cuSeqlens } = c;
  const made = [];
  const t = (v, shape) => {
    const x = target.tensor(v, shape, dtype);
    made.push(x);
    return x;
  };
  try {
    const forward = await target.attentionForward({ q: t(values.q, [B, TQ, HQ, D]), k: t(values.k, [B, Tk, H, D]), v: t(values.v, [B, Tk, H, D]), cuSeqlens });
    made.push(forward);
    return await forward.output.read();
  } finally {
    for (const x of made) x.dispose();
  }
}

function draw(c, dtype, seed) {
  const rng = new SeededRandom(seed);
  const { B, TQ, Tk, heads: HQ, kvHeads: H, D } = c;
  const n = (count) => rng.normals(count).map((x) => roundToDType(x, dtype));
  return { q: n(B * TQ * HQ * D), k: n(B * Tk * H * D), v: n(B * Tk * H * D) };
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
  for (const c of shapes.filter((x) => `${x.name} ${dtype}`.includes(only))) {
    const name = `${c.name} ${dtype}`;
    try {
      const values = draw(c, dtype, 13);
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
    const values = draw(c, 'bfloat16', 5);
    const runs = [];
    for (let i = 0; i < 3; i++) runs.push(new Uint8Array((await output(backend, c, values, 'bfloat16')).buffer));
    const equal = runs.slice(1).every((b) => b.length === runs[0].length && b.every((x, i) => x === runs[0][i]));
    if (!equal) failed++;
    console.log(`${c.name} bfloat16 output: ${equal ? 'bit-equal' : 'DIFFERS'} across 3 runs`);
  }
}
backend.dispose();
process.exitCode = failed ? 1 : 0;
