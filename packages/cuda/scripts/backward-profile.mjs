#!/usr/bin/env node
/* global console, process */
// The benchmark's NSA forward + backward (B=1 HQ=64 H=4 D=128 bf16, paper defaults, random normal
// inputs) a fixed number of times, for a profiler (few launches, unlike bench.mjs's timing loop):
//   ncu --clock-control none --metrics gpu__time_duration.sum node scripts/backward-profile.mjs --T 16384 --iters 2
// Prints the event-timed milliseconds of each iteration.
// --variants 'default;NSA_BWD_DQ_SKIP=1;NSA_BWD_DQ_FORCED=0,NSA_BWD_DQ_RING=2': after each forward, one backward
// per variant (';'-separated, each a ','-separated list of env assignments the backward reads on its call),
// e.g. under `ncu -k regex:nsaDqFrag` with NSA_BWD_SHARED=0 to time dq's variants in one process.
import { createNSAConfig } from '@nsa/core';
import { deviceInputs, nsaProblem } from '../bench/nsa-problem.mjs';
import { loadAddon } from '../dist/loader.js';
import { nativeConfig } from '../dist/backend.js';
import { trainingSeq } from '../dist/seq.js';

const option = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
};
const T = Number(option('T', '16384')), iters = Number(option('iters', '2'));
const variants = option('variants', 'default').split(';').map((v) => (v === 'default' ? [] : v.split(',').map((e) => e.split('='))));
const baseEnv = { ...process.env };
const { addon } = loadAddon();
addon.init();
const BF16 = 2, HQ = 64, H = 4, D = 128;
const config = createNSAConfig({ heads: HQ, kvHeads: H, headDimK: D, headDimV: D });
const cfg = nativeConfig(config);
const { alloc, random, upload } = deviceInputs(addon, BF16);
const seq = upload(trainingSeq(1, T, config));
const { forwardArgs, backwardArgs, compress } = nsaProblem({ addon, config, cfg, seq, T, HQ, H, D, dtype: BF16, random, alloc });
for (let i = 0; i < iters; i++) {
  const a = addon.recordEvent();
  compress();
  addon.nsaForward(forwardArgs);
  const m = addon.recordEvent();
  const times = [];
  for (const v of variants) {
    for (const k of Object.keys(process.env)) if (k.startsWith('NSA_BWD_') && !(k in baseEnv)) delete process.env[k];
    for (const k of Object.keys(baseEnv)) if (k.startsWith('NSA_BWD_')) process.env[k] = baseEnv[k];
    for (const [k, x] of v) process.env[k] = x;
    const b0 = addon.recordEvent();
    addon.nsaBackward(backwardArgs);
    const b1 = addon.recordEvent();
    times.push([v.map((e) => e.join('=')).join(',') || 'default', b0, b1]);
  }
  await addon.synchronize();
  const bwd = times.map(([name, b0, b1]) => `${variants.length > 1 ? `${name} ` : ''}${addon.elapsedMs(b0, b1).toFixed(3)} ms`).join(', ');
  console.log(`T=${T} iteration ${i}: forward ${addon.elapsedMs(a, m).toFixed(3)} ms, backward ${bwd}`);
  addon.clearEvents();
}
