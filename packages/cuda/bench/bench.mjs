#!/usr/bin/env node
/* global console, performance, process */
// NSA vs this addon's own dense flash-attention, one run, one table:
//   node bench/bench.mjs [--T 8192,16384,32768,65536] [--baseline torch.json]
// B=1, HQ=64, H=4, Dk=Dv=128, bfloat16, paper defaults (l 32, d 16, l' 64, n 16, w 512).
// NSA forward timings include making kCmp/vCmp with the mean compressor; decode rows time one
// step over a prepared cache (its compressed keys made before timing). Every row is the median of
// CUDA-event timings after a warm-up, on random normal inputs generated on the device. Ceilings:
// device copy bandwidth measured here; bf16 matmul and cuDNN/flash SDPA from torch_baseline.py
// run in the same host command (--baseline).
import { readFileSync } from 'node:fs';
import { createNSAConfig, keysReadPerQuery } from '@nsa/core';
import { loadAddon } from '../dist/loader.js';
import { nativeConfig } from '../dist/backend.js';
import { buildSeq, trainingSeq } from '../dist/seq.js';
import { deviceInputs, nsaProblem } from './nsa-problem.mjs';

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const Ts = option('T', '8192,16384,32768,65536').split(',').map(Number);
const baselinePath = option('baseline', '');
// --ops nsaFwd,nsaFwdBwd,dense,denseFwd,decode (default all; denseFwd = dense forward only): for profiling one part.
const ops = new Set(option('ops', 'nsaFwd,nsaFwdBwd,dense,decode').split(','));
// --decodeB 1,16: the decode batches (e.g. one of them, for a profiler run).
const decodeBs = option('decodeB', '1,16').split(',').map(Number);
// --decodeWarm N: untimed decode calls before timing (1 reproduces the old single warm-up).
const decodeWarm = Number(option('decodeWarm', '50'));
// --decodeWarmMs M: then untimed decode calls for at least M ms (default 300). After the training
// rows the GPU runs at lower clocks for a while (power cap; BENCHMARKS.md, helper cdec), and the
// first decode row timed (NSA's) would pay for it while the dense row after it would not.
const decodeWarmMs = Number(option('decodeWarmMs', '300'));
// --decodeBlocks supplied: NSA decode steps take fixed blockIndices (no selection pass: what the
// selection costs is the difference).
const suppliedBlocks = option('decodeBlocks', '') === 'supplied';
// --decodeDigest: print an FNV-1a digest of each NSA decode step's block choice and output (inputs
// are seeded: equal digests from two processes, e.g. two selection paths, = bit-equal steps).
const decodeDigest = process.argv.includes('--decodeDigest');
const baseline = baselinePath ? JSON.parse(readFileSync(baselinePath, 'utf8')) : undefined;
const { addon } = loadAddon();
const info = addon.deviceInfo();
if (!info.available) throw new Error(`no GPU: ${info.reason}`);
addon.init();

const BF16 = 2;
const HQ = 64, H = 4, D = 128;
const config = createNSAConfig({ heads: HQ, kvHeads: H, headDimK: D, headDimV: D });
const cfg = nativeConfig(config);
const { alloc, random, upload } = deviceInputs(addon, BF16);

/**
 * Event pairs around each of `reps` calls of `op`: sorted ms per call, and the host's enqueue time
 * per call (µs). With `holdUs`, addon.holdGpu first keeps the GPU busy that long, so the host
 * enqueues every call before the GPU reaches them and the events time the GPU's work back to back.
 */
async function eventPairs(op, reps, holdUs = 0) {
  if (holdUs > 0) addon.holdGpu({ us: holdUs });
  const pairs = [];
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) {
    const a = addon.recordEvent();
    op();
    pairs.push([a, addon.recordEvent()]);
  }
  const hostUs = ((performance.now() - t0) * 1e3) / reps;
  await addon.synchronize();
  const ms = pairs.map(([x, y]) => addon.elapsedMs(x, y)).sort((x, y) => x - y);
  addon.clearEvents();
  return { ms, hostUs, covered: hostUs * reps < holdUs };
}
const median = (sorted) => sorted[Math.floor(sorted.length / 2)];

/**
 * Median ms of `op` over enough repetitions for ~1.5 s, events around each call, after `warm`
 * untimed calls (the first loads the kernels). Paced: each call's events wait on the host, so a
 * call whose GPU work is shorter than its enqueue time is timed at the host's pace. `queued`
 * (decode steps): the median is that of the same calls queued behind addon.holdGpu, i.e. GPU time.
 * `stats`, if given, gets the paced median, the host's enqueue time per call (µs), whether the hold
 * outlasted the queued enqueuing, p10/p90 of the returned timings and the time per call of `loop`
 * calls between one event pair (ms).
 */
async function time(op, { minReps = 3, maxReps = 30, budgetMs = 1500, warm = 1, warmMs = 0, stats, queued = false } = {}) {
  for (let i = 0; i < warm; i++) op();
  await addon.synchronize();
  for (const t0 = performance.now(); performance.now() - t0 < warmMs; ) {
    for (let i = 0; i < 20; i++) op();
    await addon.synchronize();
  }
  addon.clearEvents();
  const a = addon.recordEvent();
  op();
  const b = addon.recordEvent();
  await addon.synchronize();
  const first = addon.elapsedMs(a, b);
  addon.clearEvents();
  const reps = Math.max(minReps, Math.min(maxReps, Math.ceil(budgetMs / Math.max(first, 1e-3))));
  const paced = await eventPairs(op, reps);
  // At most 50 calls are held back (more can fill CUDA's launch queue, which then makes the host
  // wait for the GPU), and the hold lasts four times their paced enqueue time plus 2 ms, so the host
  // is done first. (An addon built before holdGpu existed times paced only.)
  const heldReps = Math.min(reps, 50);
  const held = queued && typeof addon.holdGpu === 'function' ? await eventPairs(op, heldReps, 2000 + 4 * paced.hostUs * heldReps) : undefined;
  const ms = (held ?? paced).ms;
  if (stats) {
    const loop = Math.min(reps, 100);
    const x = addon.recordEvent();
    for (let i = 0; i < loop; i++) op();
    const y = addon.recordEvent();
    await addon.synchronize();
    Object.assign(stats, {
      hostUs: paced.hostUs,
      paced: median(paced.ms),
      covered: held?.covered,
      loopMs: addon.elapsedMs(x, y) / loop,
      p10: ms[Math.floor(ms.length / 10)],
      p90: ms[Math.floor((ms.length * 9) / 10)],
    });
    addon.clearEvents();
  }
  return median(ms);
}

async function copyCeiling() {
  const bytes = 2 ** 31;
  const x = alloc(bytes, 1), y = alloc(bytes, 1);
  x.fill(1);
  const ms = await time(() => y.copyFrom(x, 0, 0, bytes), { minReps: 5, maxReps: 10 });
  x.free();
  y.free();
  return (2 * bytes) / ms / 1e6;
}

/** Useful attention FLOPs of the NSA forward (QKᵀ and PV over the keys each query reads). */
function nsaFlops(T) {
  let keys = 0;
  for (let t = 0; t < T; t++) {
    const k = keysReadPerQuery(t, config);
    keys += k.compressed + k.selected + k.window;
  }
  return 4 * D * HQ * keys;
}
const denseFlops = (T) => 4 * D * HQ * ((T * (T + 1)) / 2);

const rows = [];
const copyGBps = await copyCeiling();
const matmul = baseline?.matmulTflops;

for (const T of Ts) {
  const seq = upload(trainingSeq(1, T, config));
  const problem = nsaProblem({ addon, config, cfg, seq, T, HQ, H, D, dtype: BF16, random, alloc });
  const { C, q, k, v, out, dOut, grads, forwardArgs, backwardArgs, compress } = problem;
  const nsaFwd = () => { compress(); addon.nsaForward(forwardArgs); };
  const nsaFwdBwd = () => { nsaFwd(); addon.nsaBackward(backwardArgs); };
  const fN = nsaFlops(T), fD = denseFlops(T);
  const r = { T };
  if (ops.has('nsaFwd')) r.nsaFwd = await time(nsaFwd);
  if (ops.has('nsaFwdBwd')) r.nsaFwdBwd = await time(nsaFwdBwd);
  // Dense: reuse q, k, v, out, dOut.
  const dLse = alloc(T * HQ, 4);
  const dense = { dtype: BF16, seq, HQ, H, Dk: D, Dv: D, scale: config.scale, q, k, v, out, lse: dLse };
  if (ops.has('dense') || ops.has('denseFwd')) r.denseFwd = await time(() => addon.attentionForward(dense));
  if (ops.has('dense')) r.denseFwdBwd = await time(() => {
    addon.attentionForward(dense);
    addon.attentionBackward({ ...dense, dOut, dq: grads.dq, dk: grads.dkSlc, dv: grads.dvSlc });
  });
  r.flopsNsa = fN;
  r.flopsDense = fD;
  problem.free();
  dLse.free();
  seq.table.free();

  // Decode: one query per sequence over a cache of T tokens.
  for (const B of ops.has('decode') ? decodeBs : []) {
    const kc = random(B * T * H * D), vc = random(B * T * H * D);
    const kcC = alloc(B * C * H * D), vcC = alloc(B * C * H * D);
    addon.meanCompress({ dtype: BF16, x: kc, out: kcC, B, T, H, D, l: config.compressBlock, d: config.compressStride });
    addon.meanCompress({ dtype: BF16, x: vc, out: vcC, B, T, H, D, l: config.compressBlock, d: config.compressStride });
    const qd = random(B * HQ * D), gd = random(B * HQ * 3, 0.5, 0.2);
    const od = alloc(B * HQ * D), ocd = alloc(B * HQ * D), bd = alloc(B * H * config.selectCount, 4);
    const range = Array.from({ length: B }, (_, i) => i);
    const dseq = upload(buildSeq({ queries: range.map(() => 1), keyBase: range.map((i) => i * T), cmpBase: range.map((i) => i * C), pos0: range.map(() => T - 1) }, config.selectBlock));
    let blockIn;
    if (suppliedBlocks) {
      const n = config.selectCount, step = Math.max(1, Math.floor(Math.floor((T - 1) / config.selectBlock + 1) / n));
      blockIn = new addon.DeviceBuffer(B * H * n * 4);
      blockIn.upload(Int32Array.from({ length: B * H * n }, (_, i) => (i % n) * step));
    }
    const nsaStats = {}, denseStats = {};
    r[`nsaDecode${B}`] = await time(
      () => addon.nsaForward({ dtype: BF16, cfg, seq: dseq, q: qd, kCmp: kcC, vCmp: vcC, kSlc: kc, vSlc: vc, kWin: kc, vWin: vc, gates: gd, out: od, oCmp: ocd, blockOut: bd, ...(blockIn ? { blockIn } : {}) }),
      { minReps: 20, maxReps: 200, budgetMs: 300, warm: decodeWarm, warmMs: decodeWarmMs, stats: nsaStats, queued: true },
    );
    if (decodeDigest) {
      const fnv = (bytes, h = 0x811c9dc5) => {
        for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193) >>> 0;
        return h;
      };
      const chosen = new Int32Array(await bd.download());
      const outBytes = new Uint8Array(await od.download());
      const hex = (h) => h.toString(16).padStart(8, '0');
      console.log(`decode digest T=${T} B=${B}: blocks ${hex(fnv(new Uint8Array(chosen.buffer)))} out ${hex(fnv(outBytes))}; pair 0 blocks ${chosen.subarray(0, config.selectCount).join(',')}`);
    }
    r[`denseDecode${B}`] = await time(
      () => addon.attentionForward({ dtype: BF16, seq: dseq, HQ, H, Dk: D, Dv: D, scale: config.scale, q: qd, k: kc, v: vc, out: od }),
      { minReps: 20, maxReps: 200, budgetMs: 300, warm: decodeWarm, warmMs: decodeWarmMs, stats: denseStats, queued: true },
    );
    r[`nsaDecodeStats${B}`] = nsaStats;
    r[`denseDecodeStats${B}`] = denseStats;
    // Bytes a decode step must read: NSA c(t) + selected + window tokens per KV head; dense all T.
    const kr = keysReadPerQuery(T - 1, config);
    r[`nsaDecodeBytes${B}`] = B * H * (kr.compressed + kr.selected + kr.window) * 2 * D * 2;
    r[`denseDecodeBytes${B}`] = B * H * T * 2 * D * 2;
    for (const b of [kc, vc, kcC, vcC, qd, gd, od, ocd, bd, ...(blockIn ? [blockIn] : [])]) b.free();
    dseq.table.free();
  }
  rows.push(r);
  console.error(`T=${T} done: ${JSON.stringify(r)}`);
}

// ---- the table ----
// n/a where a cell was not run (--ops), never NaN
const fmt = (x, d = 2) => (x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(d));
const base = (T, key) => baseline?.rows?.find((x) => x.T === T)?.[key];
console.log(`\ndevice: ${info.name}; ceilings measured in this run: copy ${fmt(copyGBps, 0)} GB/s (own kernel), bf16 matmul ${fmt(matmul, 0)} TFLOP/s (torch)${baseline ? `, torch ${baseline.torch} copy ${fmt(baseline.copyGBps, 0)} GB/s` : ''}`);
console.log('B=1 HQ=64 H=4 Dk=Dv=128 bf16, l=32 d=16 l\'=64 n=16 w=512; NSA includes the mean compressor; median ms\n');
console.log('| op | T | NSA ms | NSA rate | own dense ms | dense rate | torch SDPA ms | NSA speedup vs own dense | own dense / torch |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  const tf = (flops, ms) => (ms === undefined ? 'n/a' : `${fmt(flops / ms / 1e9, 1)} TFLOP/s (${fmt((100 * flops) / ms / 1e9 / (matmul ?? NaN), 0)}%)`);
  const gb = (bytes, ms) => (ms === undefined ? 'n/a' : `${fmt(bytes / ms / 1e6, 0)} GB/s (${fmt((100 * bytes) / ms / 1e6 / copyGBps, 0)}%)`);
  // decode steps take tens of microseconds: print them with four decimals
  const line = (op, nsa, rate, dense, drate, torch) => {
    const d = op.startsWith('decode') ? 4 : 2;
    console.log(`| ${op} | ${r.T} | ${fmt(nsa, d)} | ${rate} | ${fmt(dense, d)} | ${drate} | ${fmt(torch, 3)} | ${nsa && dense ? fmt(dense / nsa) + 'x' : 'n/a'} | ${torch && dense ? fmt(dense / torch) + 'x' : 'n/a'} |`);
  };
  line('forward', r.nsaFwd, tf(r.flopsNsa, r.nsaFwd), r.denseFwd, tf(r.flopsDense, r.denseFwd), base(r.T, 'fwd'));
  line('forward+backward', r.nsaFwdBwd, tf(3.5 * r.flopsNsa, r.nsaFwdBwd), r.denseFwdBwd, tf(3.5 * r.flopsDense, r.denseFwdBwd), base(r.T, 'fwdBwd'));
  for (const B of decodeBs) {
    if (r[`nsaDecode${B}`] === undefined) continue;
    line(`decode B=${B}`, r[`nsaDecode${B}`], gb(r[`nsaDecodeBytes${B}`], r[`nsaDecode${B}`]), r[`denseDecode${B}`], gb(r[`denseDecodeBytes${B}`], r[`denseDecode${B}`]), base(r.T, `decode${B}`));
  }
}
if (rows.some((r) => decodeBs.some((B) => r[`nsaDecodeStats${B}`]))) {
  const us = (x) => (x === undefined ? 'n/a' : (1e3 * x).toFixed(1));
  console.log(
    `\ndecode steps (µs; after ${decodeWarm} untimed calls and ${decodeWarmMs} ms more of them): median [p10, p90] of event pairs around each call, the calls queued behind addon.holdGpu (GPU time; ` +
      '"not covered" if the host was still enqueuing when the hold ended); paced = the same events without the hold (the GPU waits ' +
      'for the host where a step enqueues slower than it runs); back to back = 100 paced calls between one pair, per call; host = enqueue time per call\n',
  );
  console.log('| T | B | NSA median [p10, p90] | NSA paced | NSA back to back | NSA host | dense median | dense paced | dense back to back | dense host |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows)
    for (const B of decodeBs) {
      const n = r[`nsaDecodeStats${B}`], d = r[`denseDecodeStats${B}`];
      if (!n) continue;
      const held = (s, ms) => `${us(ms)} [${us(s.p10)}, ${us(s.p90)}]${s.covered === false ? ' (not covered)' : ''}`;
      // host enqueue near the GPU time: the paced events time the host, not the kernels
      const mark = (s) => `${s.hostUs.toFixed(1)}${s.hostUs > 800 * s.paced ? ' (host-bound)' : ''}`;
      console.log(`| ${r.T} | ${B} | ${held(n, r[`nsaDecode${B}`])} | ${us(n.paced)} | ${us(n.loopMs)} | ${mark(n)} | ${held(d, r[`denseDecode${B}`])} | ${us(d.paced)} | ${us(d.loopMs)} | ${mark(d)} |`);
    }
}
console.log('\nrates: useful attention FLOPs (fwd+bwd counted as 3.5x fwd) over the bf16 matmul ceiling; decode bytes = K/V tokens a step must read over the copy ceiling.');
