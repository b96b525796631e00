#!/usr/bin/env node
/* global Buffer, console, process */
// Runs the benchmark's NSA forward (bench.mjs's problem: B=1, HQ=64, H=4, D=128, bfloat16, paper
// defaults, seeded random inputs) once per variant of the forward's switches, in one process, and
// checks that each variant's outputs (out, the three branch outputs, lse, chosen blocks) are
// bit-equal to the first variant's. For switches that change how the same arithmetic is scheduled
// (NSA_FWD_TOPN, NSA_FWD_RING): at 16k / 64k the top-n state walks 16 / 32 blocks per lane, which the
// parity tests' short sequences never reach. Plain Node over dist/ (for the GPU host):
//   node scripts/forward-ab-equal.mjs [--T 16384,65536] [--variants "|NSA_FWD_TOPN=0"] [--allow out]
// (variants separated by '|', each a space-separated list of NAME=VALUE; '' is the default; --allow
// lists outputs that may differ, e.g. out for NSA_FWD_SPLIT=0, whose gated sum rounds the window term
// differently: their differences are counted, not failed). A last
// run with NSA_FWD_SKIP=2 (no selected branch) must differ: it shows the switches reach the addon
// when set from inside the process.
import { createNSAConfig } from '@nsa/core';
import { loadAddon } from '../dist/loader.js';
import { nativeConfig } from '../dist/backend.js';
import { trainingSeq } from '../dist/seq.js';
import { deviceInputs, nsaProblem } from '../bench/nsa-problem.mjs';

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const Ts = option('T', '16384,65536').split(',').map(Number);
const variants = option('variants', '|NSA_FWD_TOPN=0|NSA_FWD_RING=3').split('|');
const control = 'NSA_FWD_SKIP=2';
const allowed = option('allow', '').split(',').filter(Boolean);
const switches = [...new Set([...variants, control].flatMap((v) => v.split(' ').filter(Boolean).map((e) => e.split('=')[0])))];

// Differing elements of two bf16 buffers, the largest absolute difference, and the largest magnitude.
function bf16Diff(a, b) {
  const x = new Uint16Array(a.buffer, a.byteOffset, a.length / 2), y = new Uint16Array(b.buffer, b.byteOffset, b.length / 2);
  const bits = new Uint32Array(1), val = new Float32Array(bits.buffer);
  const f = (h) => { bits[0] = h << 16; return val[0]; };
  let n = 0, worst = 0, big = 0;
  for (let i = 0; i < x.length; i++) {
    if (x[i] === y[i]) continue;
    const u = f(x[i]), v = f(y[i]);
    n++;
    worst = Math.max(worst, Math.abs(u - v));
    big = Math.max(big, Math.abs(u));
  }
  return `${n} of ${x.length} elements differ, max |difference| ${worst.toExponential(3)} (max |value| among those ${big.toExponential(3)})`;
}
const { addon } = loadAddon();
addon.init();
const BF16 = 2, HQ = 64, H = 4, D = 128;
const config = createNSAConfig({ heads: HQ, kvHeads: H, headDimK: D, headDimV: D });
const cfg = nativeConfig(config);
let ok = true;
for (const T of Ts) {
  const { alloc, random, upload } = deviceInputs(addon, BF16);
  const seq = upload(trainingSeq(1, T, config));
  const problem = nsaProblem({ addon, config, cfg, seq, T, HQ, H, D, dtype: BF16, random, alloc });
  const { forwardArgs: f, compress } = problem;
  const outputs = { out: f.out, oCmp: f.oCmp, oSlc: f.oSlc, oWin: f.oWin, lse: f.lse, blocks: f.blockOut };
  let first;
  for (const v of [...variants, control]) {
    for (const s of switches) delete process.env[s];
    for (const e of v.split(' ').filter(Boolean)) process.env[e.split('=')[0]] = e.split('=')[1];
    for (const b of Object.values(outputs)) b.fill(0xff);  // no stale result can pass
    compress();
    addon.nsaForward(f);
    await addon.synchronize();
    const got = {};
    for (const [n, b] of Object.entries(outputs)) got[n] = Buffer.from(await b.download());
    if (!first) { first = got; continue; }
    const differs = Object.keys(got).filter((n) => !got[n].equals(first[n]));  // memcmp
    if (v === control) {
      if (!differs.includes('oSlc')) ok = false;
      console.log(`T=${T} control [${v}]: ${differs.includes('oSlc') ? 'differs as it must' : 'DOES NOT DIFFER: the switches did not reach the addon'} (${differs.join(', ')})`);
      continue;
    }
    if (differs.some((n) => !allowed.includes(n))) ok = false;
    console.log(`T=${T} [${v || 'default'}] vs [${variants[0] || 'default'}]: ${differs.length ? `DIFFERS in ${differs.join(', ')}` : 'bit-equal (out, oCmp, oSlc, oWin, lse, blocks)'}`);
    // For switches that change the arithmetic order: how many bf16 elements of each output differ, and by how much.
    for (const n of differs.filter((x) => x.startsWith('o'))) console.log(`  ${n}: ${bf16Diff(first[n], got[n])}`);
  }
  for (const s of switches) delete process.env[s];
  problem.free();
  seq.table.free();
}
console.log(ok ? 'forward-ab-equal: all variants bit-equal' : 'forward-ab-equal: FAILED');
process.exitCode = ok ? 0 : 1;
