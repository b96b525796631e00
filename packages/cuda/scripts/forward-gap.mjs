#!/usr/bin/env node
/* global console, process, performance */
// Where the benchmark's NSA forward time goes beyond its kernel: events around the compressor alone,
// the forward alone and both (as bench.mjs), one call at a time (with the host's time per call) and
// back to back (N calls between one event pair). Plain Node over dist/, for the GPU host:
//   node scripts/forward-gap.mjs [T]   (default 65536)
import { createNSAConfig } from '@nsa/core';
import { loadAddon } from '../dist/loader.js';
import { nativeConfig } from '../dist/backend.js';
import { trainingSeq } from '../dist/seq.js';
import { deviceInputs, nsaProblem } from '../bench/nsa-problem.mjs';
const { addon } = loadAddon();
addon.init();
const HQ = 64, H = 4, D = 128, T = Number(process.argv[2] ?? 65536);
const config = createNSAConfig({ heads: HQ, kvHeads: H, headDimK: D, headDimV: D });
const cfg = nativeConfig(config);
const { alloc, random, upload } = deviceInputs(addon, 2);
const seq = upload(trainingSeq(1, T, config));
const { forwardArgs, compress } = nsaProblem({ addon, config, cfg, seq, T, HQ, H, D, dtype: 2, random, alloc });
const fwd = () => addon.nsaForward(forwardArgs);
const both = () => { compress(); fwd(); };
const med = (a) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
async function paced(op, n) {
  const ms = [], host = [];
  for (let i = 0; i < n; i++) {
    await addon.synchronize();
    const a = addon.recordEvent();
    const t0 = performance.now();
    op();
    host.push((performance.now() - t0) * 1e3);
    const b = addon.recordEvent();
    await addon.synchronize();
    ms.push(addon.elapsedMs(a, b));
  }
  addon.clearEvents();
  return { ms: med(ms), hostUs: med(host) };
}
async function b2b(op, n) {
  await addon.synchronize();
  const a = addon.recordEvent();
  for (let i = 0; i < n; i++) op();
  const b = addon.recordEvent();
  await addon.synchronize();
  const ms = addon.elapsedMs(a, b) / n;
  addon.clearEvents();
  return ms;
}
for (let i = 0; i < 3; i++) both();
await addon.synchronize();
for (const [name, op, n] of [['compress', compress, 50], ['forward', fwd, 20], ['compress+forward', both, 20]]) {
  const p = await paced(op, n);
  const q = await b2b(op, n);
  console.log(`T=${T} ${name}: paced ${p.ms.toFixed(3)} ms (host ${p.hostUs.toFixed(0)} us per call), back to back ${q.toFixed(3)} ms per call`);
}
