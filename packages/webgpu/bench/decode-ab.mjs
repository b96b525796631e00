#!/usr/bin/env node
/* global process, console, performance */
// Decode-step variants A/B in one process: one cache, the variants taking turns call by call
// (drift cancels), GPU time of the whole step (one timed pass, as bench/run.mjs's gpu clock) and,
// with --kernels, of each dispatch in its own timed pass (as bench/profile.mjs). Each variant's
// output is compared with the first variant's.
//   node bench/decode-ab.mjs [--T 65536] [--batch 1] [--rounds 8] [--reps 10] [--kernels] [--warm 4] [--dtype float32]
//     [--variants '[{"name":"new"},{"name":"s7","env":{"NSA_WEBGPU_DECODE_ATTEND":"session7"}},{"name":"kc32","ctx":{"decodeTiles":{"cw":{"KC":32}}}}]']
// B = batch, HQ = 64, H = 4, D = 128, paper block sizes, pseudo-random inputs.
import { compressedCount, createNSAConfig } from '@nsa/core';
import { WebGPUTensor, createWebGPUBackend } from '@nsa/webgpu';

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const T = Number(option('T', '65536'));
const batch = Number(option('batch', '1'));
const rounds = Number(option('rounds', '8'));
const reps = Number(option('reps', '10'));
const dtype = option('dtype', 'float32');
const kernels = process.argv.includes('--kernels');
const variants = JSON.parse(option('variants', '[{"name":"default"},{"name":"session7","env":{"NSA_WEBGPU_DECODE_ATTEND":"session7"}}]'));
const HQ = 64;
const H = 4;
const D = 128;
const config = createNSAConfig({ heads: HQ, kvHeads: H, headDimK: D, headDimV: D });

const backend = await createWebGPUBackend();
const { rt, ctx } = backend;
console.log(`adapter: ${backend.device}; T ${T}, batch ${batch}, ${dtype}`);
let seed = 17;
function random(shape, lo = -1, hi = 1) {
  const n = shape.reduce((a, b) => a * b, 1);
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (seed * 1664525 + 1013904223) >>> 0;
    f[i] = lo + ((hi - lo) * seed) / 4294967296;
  }
  return WebGPUTensor.fromValues(ctx, f, shape, dtype);
}
const C = compressedCount(T, config);
const cache = backend.createNSACache({ config, batch, dtype, capacity: T });
const chunk = Math.min(T, 2048);
const raw = { kSlc: random([batch, chunk, H, D]), vSlc: random([batch, chunk, H, D]), kWin: random([batch, chunk, H, D]), vWin: random([batch, chunk, H, D]) };
for (let t = 0; t < T; t += chunk) await cache.append(raw);
await cache.appendCompressed({ kCmp: random([batch, C, H, D]), vCmp: random([batch, C, H, D]) });
const q = random([batch, 1, HQ, D]);
const gates = random([batch, 1, HQ, 3], 0.05, 1);

function apply(v) {
  const saved = { env: {}, ctx: {} };
  for (const [k, x] of Object.entries(v.env ?? {})) {
    saved.env[k] = process.env[k];
    process.env[k] = x;
  }
  for (const [k, x] of Object.entries(v.ctx ?? {})) {
    saved.ctx[k] = ctx[k];
    ctx[k] = x;
  }
  return () => {
    for (const [k, x] of Object.entries(saved.env)) {
      if (x === undefined) delete process.env[k];
      else process.env[k] = x;
    }
    Object.assign(ctx, saved.ctx);
  };
}

const med = (l) => [...l].sort((a, b) => a - b)[Math.floor(l.length / 2)];
const step = new Map(variants.map((v) => [v.name, []]));
const parts = new Map(variants.map((v) => [v.name, new Map()]));
let first;
for (const v of variants) {
  const restore = apply(v);
  const out = await backend.nsaDecode({ cache, q, gates });
  const o = Float64Array.from(await out.output.read());
  const blocks = Array.from(await out.blockIndices.read());
  out.dispose();
  restore();
  if (!first) first = { o, blocks };
  let num = 0;
  let den = 0;
  for (let i = 0; i < o.length; i++) {
    num += (o[i] - first.o[i]) ** 2;
    den += first.o[i] ** 2;
  }
  const same = blocks.every((x, i) => x === first.blocks[i]);
  console.log(`${v.name}: relative L2 to ${variants[0].name} ${Math.sqrt(num / den).toExponential(2)}, blocks ${same ? 'identical' : 'differ'}${Number.isFinite(num) ? '' : ' (NOT FINITE)'}`);
}
// Warm-up: steps back to back for --warm seconds (an idle GPU runs its first calls at low clocks).
const warmEnd = performance.now() + 1000 * Number(option('warm', '4'));
while (performance.now() < warmEnd) {
  for (let i = 0; i < 50; i++) (await backend.nsaDecode({ cache, q, gates })).dispose();
  await backend.synchronize();
}
async function timed(perDispatch) {
  rt.profile(true, perDispatch);
  const out = await backend.nsaDecode({ cache, q, gates });
  await backend.synchronize();
  out.dispose();
  await rt.profiler.flush();
  const list = rt.profiler.timings.splice(0);
  rt.profile(false);
  return list;
}
for (let r = 0; r < rounds; r++) {
  for (const v of variants) {
    const restore = apply(v);
    for (let i = 0; i < reps; i++) {
      const list = await timed(false);
      step.get(v.name).push(list.reduce((a, t) => a + t.ms, 0));
      if (kernels) {
        for (const t of await timed(true)) {
          for (const p of t.parts) {
            const m = parts.get(v.name);
            if (!m.has(p.label)) m.set(p.label, []);
            m.get(p.label).push(p.ms);
          }
        }
      }
    }
    restore();
  }
}
console.log(`\nstep GPU ms (one timed pass per call), median of ${rounds} x ${reps}, rounds alternating:`);
console.log('| variant | step ms | per-round medians |\n|---|---:|---|');
for (const v of variants) {
  const l = step.get(v.name);
  const per = Array.from({ length: rounds }, (_, r) => med(l.slice(r * reps, (r + 1) * reps)).toFixed(4));
  console.log(`| ${v.name} | ${med(l).toFixed(4)} | ${per.join(' ')} |`);
}
if (kernels) {
  console.log('\nper dispatch (each its own timed pass, including the pass floor), median us:');
  const labels = [...new Set(variants.flatMap((v) => [...parts.get(v.name).keys()]))];
  console.log(`| variant | ${labels.join(' | ')} |\n|---|${labels.map(() => '---:').join('|')}|`);
  for (const v of variants) console.log(`| ${v.name} | ${labels.map((k) => (parts.get(v.name).has(k) ? (1000 * med(parts.get(v.name).get(k))).toFixed(1) : '-')).join(' | ')} |`);
}
cache.dispose();
backend.dispose();
