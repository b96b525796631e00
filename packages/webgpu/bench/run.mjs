#!/usr/bin/env node
/* global process, performance, console, GPUBufferUsage */
// NSA vs this package's own dense causal attention on one WebGPU adapter, one run, one table.
//   node bench/run.mjs [--T 4096,16384,65536] [--deadline 420] [--dtype float32] [--ops forward,decode,fwd+bwd] [--decodeWarmMs 0]
// B = 1, HQ = 64, H = 4, D = 128, paper block sizes. Forward, forward+backward, decode (batch 1
// and 16). Achieved GFLOP/s and GB/s are set against an fp32 FMA peak and a copy bandwidth
// measured in the same run on the same device. Three clocks per cell, medians after one warm-up
// call: host wall-clock per call up to queue.onSubmittedWorkDone, back-to-back calls with one wait
// (decode), and GPU time from timestamp queries where the adapter has them (see `time` below).
// Inputs are pseudo-random (never zero), generated on the GPU.
import { compressedCount, createNSAConfig, keysReadPerQuery } from '@nsa/core';
import { WebGPUTensor, createWebGPUBackend } from '@nsa/webgpu';

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const Ts = option('T', '4096,16384,65536').split(',').map(Number);
const deadline = performance.now() + Number(option('deadline', '420')) * 1000;
const dtype = option('dtype', 'float32');
// --ops forward,decode,fwd+bwd: which cells to run (fwd+bwd of dense at 64k alone takes minutes).
const ops = option('ops', 'forward,decode,fwd+bwd').split(',');
// --classic 16384: at these T also time the forward with the classic (pre-tiling) kernels.
const classicTs = option('classic', '').split(',').filter(Boolean).map(Number);
// --unmerged: also time decode steps through the previous nine passes (rows "nsa unmerged").
const unmerged = process.argv.includes('--unmerged');
// --sixPasses: also time one-query decode steps through the previous six passes (rows "nsa 6 passes",
// ctx.singleQueryDecode = false) and print how far their outputs and blocks are from the four dispatches'.
const sixPasses = process.argv.includes('--sixPasses');
// --quick: tiny ceilings, for checking the script on a software adapter.
const quick = process.argv.includes('--quick');
// --hold: decode rows also get their GPU time with each call queued behind a ~1.5 ms one-warp spin
// kernel (clock "gpu held"), NSA and dense alike. Between single decode calls the GPU is idle for the
// host's round trip and lowers its clock (nvidia-smi: throttle reason GpuIdle, 1245 against 1980 MHz
// in run 11); the spin keeps it at its working clock, as CUDA's bench.mjs does with addon.holdGpu.
const hold = process.argv.includes('--hold');
// --decodeWarmMs M: before each decode cell is timed, untimed calls of it for at least M ms (default 0:
// one warm-up call), NSA and dense alike, as the CUDA bench's decode rows have (bench.mjs there:
// 300 ms). A single step takes tens of microseconds, so what ran just before (the ceilings, another
// row) can leave the GPU in another clock or cache state for the first calls timed.
const decodeWarmMs = Number(option('decodeWarmMs', '0'));
const B = 1;
const HQ = 64;
const H = 4;
const D = 128;
const config = createNSAConfig({ heads: HQ, kvHeads: H, headDimK: D, headDimV: D });
const es = dtype === 'float16' ? 2 : 4;

const backend = await createWebGPUBackend();
const { rt, ctx } = backend;
console.log(`adapter: ${backend.device}`);
console.log(
  `limits: maxBufferSize ${ctx.limits.maxBufferSize}, maxStorageBufferBindingSize ${ctx.limits.maxStorageBufferBindingSize}, ` +
    `maxComputeWorkgroupStorageSize ${ctx.limits.maxComputeWorkgroupStorageSize}`,
);

// ---------- GPU-side input generation ----------
const FILL = (e) => `${e === 'f16' ? 'enable f16;\n' : ''}
struct F { n: u32, seed: u32, lo: f32, hi: f32, base: u32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<uniform> P: F;
@group(0) @binding(1) var<storage, read_write> out: array<${e}>;
fn hash(x: u32) -> u32 { var h = x * 747796405u + 2891336453u; h = ((h >> ((h >> 28u) + 4u)) ^ h) * 277803737u; return (h >> 22u) ^ h; }
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= P.n) { return; }
  let u = f32(hash((i + P.base) ^ hash(P.seed)) & 0xffffffu) / 16777216.0;
  out[i] = ${e}(P.lo + (P.hi - P.lo) * u);
}`;
let seed = 1;
async function fillTensor(tensor, lo = -1.7, hi = 1.7) {
  const e = tensor.dtype === 'float16' ? 'f16' : 'f32';
  const pipeline = await rt.pipeline(`bench_fill_${e}`, FILL(e));
  const device = ctx.device;
  const esz = tensor.dtype === 'float16' ? 2 : 4;
  // Chunks of at most 1 GiB so no binding passes the device's limit.
  const per = Math.floor(Math.min(1 << 30, ctx.limits.maxStorageBufferBindingSize) / 256) * 256 / esz;
  const s0 = seed++;
  const params = device.createBuffer({ size: 32, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  for (let first = 0; first < tensor.size; first += per) {
    const n = Math.min(per, tensor.size - first);
    const data = new ArrayBuffer(32);
    new Uint32Array(data, 0, 2).set([n, s0]);
    new Float32Array(data, 8, 2).set([lo, hi]);
    new Uint32Array(data, 16, 1).set([first]);
    device.queue.writeBuffer(params, 0, data);
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    const size = Math.min(tensor.buffer.size - first * esz, Math.ceil((n * esz) / 4) * 4);
    pass.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: params } }, { binding: 1, resource: { buffer: tensor.buffer, offset: first * esz, size } }] }));
    const groups = Math.ceil(n / 256);
    const x = Math.min(groups, 65535);
    pass.dispatchWorkgroups(x, Math.ceil(groups / x));
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  }
  params.destroy();
  return tensor;
}
const made = [];
async function random(shape, dt = dtype, lo, hi) {
  const t = WebGPUTensor.empty(ctx, shape, dt, 'bench');
  made.push(t);
  return fillTensor(t, lo, hi);
}

// ---------- timing ----------
// Three clocks per cell, each printed under its own name:
//   host   wall-clock per call up to queue.onSubmittedWorkDone() (one call at a time; includes the
//          per-call host work and the round trip to the GPU)
//   b2b    N calls issued back to back, one wait at the end, divided by N (throughput per step)
//   gpu    timestamp queries around each compute pass of the call, summed (GPU time per call;
//          only where the adapter has 'timestamp-query')
const timestamps = rt.profile(true);
rt.profile(false);
async function time(fn, { budget = 6000, minReps = 3, maxReps = 20, b2b = 0, held = false, warmMs = 0 } = {}) {
  const w0 = performance.now();
  const warm = await fn();
  await backend.synchronize();
  warm?.dispose?.();
  // (--decodeWarmMs: more untimed calls, one at a time as the timed ones run.)
  for (const w1 = performance.now(); performance.now() - w1 < warmMs; ) {
    (await fn())?.dispose?.();
    await backend.synchronize();
  }
  // Slow cells (seconds per call) get fewer repetitions so the whole table fits one run.
  const reps = performance.now() - w0 > 3000 ? 1 : minReps;
  const times = [];
  const gpu = [];
  rt.profile(true);
  const start = performance.now();
  while (times.length < maxReps) {
    const t0 = performance.now();
    const r = await fn();
    await backend.synchronize();
    times.push(performance.now() - t0);
    r?.dispose?.();
    if (rt.profiler) {
      await rt.profiler.flush();
      const list = rt.profiler.timings.splice(0);
      if (list.length > 0) gpu.push(list.reduce((a, t) => a + t.ms, 0));
    }
    if (times.length >= reps && performance.now() - start > budget) break;
  }
  rt.profile(false);
  // Held: the same GPU time, each call submitted while a spin kernel still runs (see --hold).
  const heldGpu = [];
  if (held && timestamps) {
    rt.profile(true);
    for (let i = 0; i < times.length; i++) {
      await spin();
      const r = await fn();
      await backend.synchronize();
      r?.dispose?.();
      await rt.profiler.flush();
      const list = rt.profiler.timings.splice(0);
      if (list.length > 0) heldGpu.push(list.reduce((a, t) => a + t.ms, 0));
    }
    rt.profile(false);
  }
  let stepMs;
  if (b2b > 0) {
    const runs = [];
    for (let k = 0; k < 3; k++) {
      const t0 = performance.now();
      for (let i = 0; i < b2b; i++) (await fn())?.dispose?.();
      await backend.synchronize();
      runs.push((performance.now() - t0) / b2b);
    }
    stepMs = median(runs);
  }
  return { ms: median(times), reps: times.length, gpuMs: gpu.length ? median(gpu) : undefined, stepMs, heldMs: heldGpu.length ? median(heldGpu) : undefined };
}

// One warp of dependent FMAs for about SPIN_MS: submitted, not awaited (see --hold).
const SPIN_MS = 1.5;
let spinRun;
async function spin() {
  if (!spinRun) {
    const device = ctx.device;
    const out = device.createBuffer({ size: 32 * 4, usage: GPUBufferUsage.STORAGE });
    const make = async (n) => {
      const code = `@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(32)
fn main(@builtin(local_invocation_id) l: vec3<u32>) {
  var a = f32(l.x) * 1.0e-3;
  for (var i = 0u; i < ${n}u; i++) { a = fma(a, 0.9999, 1.0e-4); }
  out[l.x] = a;
}`;
      const pipe = await rt.pipeline(`bench_spin_${n}`, code);
      const bind = device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] });
      return () => {
        const enc = device.createCommandEncoder();
        const pass = enc.beginComputePass();
        pass.setPipeline(pipe);
        pass.setBindGroup(0, bind);
        pass.dispatchWorkgroups(1);
        pass.end();
        device.queue.submit([enc.finish()]);
      };
    };
    // Calibrate on the host clock: the difference of two lengths, so the round trip cancels.
    const wall = async (run) => {
      const t = [];
      for (let k = 0; k < 5; k++) {
        const t0 = performance.now();
        run();
        await device.queue.onSubmittedWorkDone();
        t.push(performance.now() - t0);
      }
      return median(t);
    };
    const [n1, n2] = [1 << 16, 1 << 18];
    const [r1, r2] = [await make(n1), await make(n2)];
    const perIter = Math.max(1e-9, ((await wall(r2)) - (await wall(r1))) / (n2 - n1));
    const n = Math.min(1 << 26, Math.max(1 << 12, Math.round(SPIN_MS / perIter)));
    spinRun = await make(n);
    console.log(`  hold: one-warp spin of ${n} iterations (~${SPIN_MS} ms) before each held call`);
  }
  spinRun();
}
function median(list) {
  const s = [...list].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

// ---------- ceilings ----------
const PEAK = `@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let s = f32(gid.x) * 1.0e-7;
  var a0 = vec4<f32>(s, s + 0.1, s + 0.2, s + 0.3); var a1 = a0 + 0.01; var a2 = a0 + 0.02; var a3 = a0 + 0.03;
  var a4 = a0 + 0.04; var a5 = a0 + 0.05; var a6 = a0 + 0.06; var a7 = a0 + 0.07;
  let m = vec4<f32>(0.9999); let c = vec4<f32>(1.0e-4);
  for (var i = 0u; i < 2048u; i++) {
    a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
    a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
  }
  out[gid.x] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}`;
const COPY = `@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i < arrayLength(&dst)) { dst[i] = src[i]; }
}`;
async function ceilings() {
  const device = ctx.device;
  const groups = quick ? 16 : 8192;
  const out = device.createBuffer({ size: groups * 256 * 16, usage: GPUBufferUsage.STORAGE });
  const peak = await rt.pipeline('bench_fma_peak', PEAK);
  const runPeak = async () => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(peak);
    pass.setBindGroup(0, device.createBindGroup({ layout: peak.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] }));
    for (let k = 0; k < 4; k++) pass.dispatchWorkgroups(groups);
    pass.end();
    device.queue.submit([enc.finish()]);
  };
  const tp = await time(runPeak, { budget: 1500, minReps: 5 });
  const flops = 4 * groups * 256 * 2048 * 8 * 4 * 2;
  const bytes = Math.min(quick ? 1 << 22 : 1 << 30, Math.floor(ctx.limits.maxStorageBufferBindingSize / 16) * 16);
  const a = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const b = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  const copy = await rt.pipeline('bench_copy', COPY);
  const runCopy = async () => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(copy);
    pass.setBindGroup(0, device.createBindGroup({ layout: copy.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: a } }, { binding: 1, resource: { buffer: b } }] }));
    const g = Math.ceil(bytes / 16 / 256);
    const x = Math.min(g, 65535);
    pass.dispatchWorkgroups(x, Math.ceil(g / x));
    pass.end();
    device.queue.submit([enc.finish()]);
  };
  const runDma = async () => {
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(a, 0, b, 0, bytes);
    device.queue.submit([enc.finish()]);
  };
  const tc = await time(runCopy, { budget: 1500, minReps: 5 });
  const td = await time(runDma, { budget: 1500, minReps: 5 });
  out.destroy();
  a.destroy();
  b.destroy();
  const shaderBW = (2 * bytes) / tc.ms / 1e6;
  const dmaBW = (2 * bytes) / td.ms / 1e6;
  return { gflops: flops / tp.ms / 1e6, bw: Math.max(shaderBW, dmaBW), shaderBW, dmaBW };
}

// ---------- work counts ----------
/** Query-key pairs per head of NSA for queries at positions [from, to), and selection-score pairs. */
function nsaPairs(from, to) {
  let pairs = 0;
  let scores = 0;
  for (let t = from; t < to; t++) {
    const k = keysReadPerQuery(t, config);
    pairs += k.compressed + k.selected + k.window;
    scores += k.compressed;
  }
  return { pairs, scores };
}
function densePairs(from, to) {
  let pairs = 0;
  for (let t = from; t < to; t++) pairs += t + 1;
  return pairs;
}

// ---------- the cells ----------
const rows = [];
const ceil = await ceilings();
console.log(
  `measured ceilings: fp32 FMA ${(ceil.gflops / 1000).toFixed(1)} TFLOP/s; copy ${(ceil.bw / 1000).toFixed(2)} TB/s ` +
    `(shader ${(ceil.shaderBW / 1000).toFixed(2)}, copyBufferToBuffer ${(ceil.dmaBW / 1000).toFixed(2)}; read + write bytes)`,
);

function record(T, op, impl, t, flops, bytes) {
  // Rates and ratios use the GPU clock where there is one, else back-to-back, else host.
  // (--hold: decode rows by their held GPU time, with the gpu column showing it.)
  const [clock, best] =
    t.heldMs !== undefined ? ['gpu held', t.heldMs] : t.gpuMs !== undefined ? ['gpu', t.gpuMs] : t.stepMs !== undefined ? ['b2b', t.stepMs] : ['host', t.ms];
  const gpuMs = t.heldMs ?? t.gpuMs;
  rows.push({ T, op, impl, ms: t.ms, stepMs: t.stepMs, gpuMs, clock, best, reps: t.reps, gflops: flops / best / 1e6, gbs: bytes / best / 1e6 });
  const r = rows.at(-1);
  console.log(
    `  T=${T} ${op} ${impl}: host ${r.ms.toFixed(3)} ms (${t.reps} reps), b2b ${fmt(r.stepMs)} ms/step, gpu ${fmt(t.gpuMs)} ms${t.heldMs !== undefined ? `, gpu held ${fmt(t.heldMs)} ms` : ''}; ` +
      `${r.gflops.toFixed(0)} GFLOP/s, ${r.gbs.toFixed(0)} GB/s (${clock})`,
  );
}
function fmt(x) {
  return x === undefined ? '-' : x < 1 ? x.toFixed(3) : x.toFixed(2);
}

function skip(T, op, impl, why) {
  rows.push({ T, op, impl, skipped: why });
  console.log(`  T=${T} ${op} ${impl}: skipped (${why})`);
}

async function cell(T, op, impl, fn) {
  if (performance.now() > deadline) return skip(T, op, impl, 'out of time');
  try {
    await fn();
  } catch (error) {
    skip(T, op, impl, error instanceof Error ? error.message.split('\n')[0] : String(error));
  }
}

async function makeInputs(T) {
  const C = compressedCount(T, config);
  return {
    q: await random([B, T, HQ, D]),
    kCmp: await random([B, C, H, D]),
    vCmp: await random([B, C, H, D]),
    kSlc: await random([B, T, H, D]),
    vSlc: await random([B, T, H, D]),
    kWin: await random([B, T, H, D]),
    vWin: await random([B, T, H, D]),
    gates: await random([B, T, HQ, 3], dtype, 0.05, 1),
  };
}

function counts(T) {
  const C = compressedCount(T, config);
  const qBytes = B * T * HQ * D * es;
  const kvBytes = B * T * H * D * es;
  const cmpBytes = B * C * H * D * es;
  const nsa = nsaPairs(0, T);
  return {
    C,
    nsaFlops: B * HQ * (nsa.pairs * 4 * D + nsa.scores * 2 * D),
    nsaBytes: qBytes * 2 + 6 * kvBytes + 2 * cmpBytes + B * T * HQ * 3 * es,
    denseFlops: B * HQ * densePairs(0, T) * 4 * D,
    denseBytes: qBytes * 2 + 2 * kvBytes,
  };
}

// Phase 1: forward and decode at every T; phase 2: forward+backward (the slowest cells) last.
for (const T of Ts) {
  const { C, nsaFlops, nsaBytes, denseFlops, denseBytes } = counts(T);
  let inputs;
  if (ops.includes('forward')) await cell(T, 'forward', 'inputs', async () => {
    inputs = await makeInputs(T);
  });
  if (inputs) {
    await cell(T, 'forward', 'nsa', async () => {
      record(T, 'forward', 'nsa', await time(() => backend.nsaForward({ config, ...inputs })), nsaFlops, nsaBytes);
    });
    await cell(T, 'forward', 'dense', async () => {
      record(T, 'forward', 'dense', await time(() => backend.attentionForward({ q: inputs.q, k: inputs.kWin, v: inputs.vWin })), denseFlops, denseBytes);
    });
    if (classicTs.includes(T)) {
      ctx.tiledForward = false;
      await cell(T, 'forward', 'nsa classic', async () => {
        record(T, 'forward', 'nsa classic', await time(() => backend.nsaForward({ config, ...inputs })), nsaFlops, nsaBytes);
      });
      await cell(T, 'forward', 'dense classic', async () => {
        record(T, 'forward', 'dense classic', await time(() => backend.attentionForward({ q: inputs.q, k: inputs.kWin, v: inputs.vWin })), denseFlops, denseBytes);
      });
      ctx.tiledForward = true;
    }
  }
  for (const b of made.splice(0)) b.dispose();
  for (const batch of ops.includes('decode') ? [1, 16] : []) {
    // NSA decode: a cache of T tokens, one query per sequence at position T - 1.
    await cell(T, `decode B=${batch}`, 'nsa', async () => {
      const cache = backend.createNSACache({ config, batch, dtype, capacity: T });
      try {
        const chunk = Math.min(T, 2048);
        const raw = { kSlc: await random([batch, chunk, H, D]), vSlc: await random([batch, chunk, H, D]), kWin: await random([batch, chunk, H, D]), vWin: await random([batch, chunk, H, D]) };
        for (let t = 0; t < T; t += chunk) await cache.append(raw);
        await cache.appendCompressed({ kCmp: await random([batch, C, H, D]), vCmp: await random([batch, C, H, D]) });
        const q = await random([batch, 1, HQ, D]);
        const gates = await random([batch, 1, HQ, 3], dtype, 0.05, 1);
        const k = keysReadPerQuery(T - 1, config);
        const keys = k.compressed + k.selected + k.window;
        const flops = batch * HQ * (keys * 4 * D + k.compressed * 2 * D);
        const bytes = batch * H * keys * 2 * D * es + batch * HQ * D * es * 2;
        record(T, `decode B=${batch}`, 'nsa', await time(() => backend.nsaDecode({ cache, q, gates }), { budget: 3000, minReps: 10, maxReps: 100, b2b: 50, held: hold, warmMs: decodeWarmMs }), flops, bytes);
        if (sixPasses) {
          ctx.singleQueryDecode = false;
          try {
            record(T, `decode B=${batch}`, 'nsa 6 passes', await time(() => backend.nsaDecode({ cache, q, gates }), { budget: 3000, minReps: 10, maxReps: 100, b2b: 50, held: hold, warmMs: decodeWarmMs }), flops, bytes);
            const old = await backend.nsaDecode({ cache, q, gates });
            ctx.singleQueryDecode = true;
            const now = await backend.nsaDecode({ cache, q, gates });
            const [a, b, ia, ib] = [await now.output.read(), await old.output.read(), await now.blockIndices.read(), await old.blockIndices.read()];
            let num = 0;
            let den = 0;
            for (let i = 0; i < a.length; i++) {
              num += (a[i] - b[i]) ** 2;
              den += b[i] ** 2;
            }
            const same = ia.every((x, i) => x === ib[i]);
            console.log(`decode T=${T} B=${batch}: four dispatches vs six passes: relative L2 ${Math.sqrt(num / den).toExponential(2)}, blocks ${same ? 'identical' : 'differ'}`);
            old.dispose();
            now.dispose();
          } finally {
            ctx.singleQueryDecode = true;
          }
        }
        if (unmerged) {
          ctx.mergedDecode = false;
          try {
            record(T, `decode B=${batch}`, 'nsa unmerged', await time(() => backend.nsaDecode({ cache, q, gates }), { budget: 3000, minReps: 10, maxReps: 100, b2b: 50, held: hold, warmMs: decodeWarmMs }), flops, bytes);
          } finally {
            ctx.mergedDecode = true;
          }
        }
      } finally {
        cache.dispose();
        for (const b of made.splice(0)) b.dispose();
      }
    });
    await cell(T, `decode B=${batch}`, 'dense', async () => {
      try {
        const q = await random([batch, 1, HQ, D]);
        const k = await random([batch, T, H, D]);
        const v = await random([batch, T, H, D]);
        const flops = batch * HQ * T * 4 * D;
        const bytes = batch * H * T * 2 * D * es + batch * HQ * D * es * 2;
        record(T, `decode B=${batch}`, 'dense', await time(() => backend.attentionForward({ q, k, v }), { budget: 3000, minReps: 10, maxReps: 100, b2b: 50, held: hold, warmMs: decodeWarmMs }), flops, bytes);
      } finally {
        for (const b of made.splice(0)) b.dispose();
      }
    });
  }
}


for (const T of ops.includes('fwd+bwd') ? Ts : []) {
  const { nsaFlops, nsaBytes, denseFlops, denseBytes } = counts(T);
  let inputs;
  let dOut;
  await cell(T, 'fwd+bwd', 'inputs', async () => {
    inputs = await makeInputs(T);
    dOut = await random([B, T, HQ, D]);
  });
  if (!inputs) continue;
  await cell(T, 'fwd+bwd', 'nsa', async () => {
    const t = await time(async () => {
      const f = await backend.nsaForward({ config, ...inputs });
      const g = await backend.nsaBackward({ config, ...inputs, forward: f, dOutput: dOut });
      return { dispose: () => (f.dispose(), g.dispose()) };
    });
    // Backward counted as 2.5x the forward's attention FLOPs (the usual convention).
    record(T, 'fwd+bwd', 'nsa', t, 3.5 * nsaFlops, 3 * nsaBytes);
  });
  await cell(T, 'fwd+bwd', 'dense', async () => {
    const t = await time(async () => {
      const args = { q: inputs.q, k: inputs.kWin, v: inputs.vWin };
      const f = await backend.attentionForward(args);
      const g = await backend.attentionBackward({ ...args, forward: f, dOutput: dOut });
      return { dispose: () => (f.dispose(), g.dispose()) };
    });
    record(T, 'fwd+bwd', 'dense', t, 3.5 * denseFlops, 3 * denseBytes);
  });
  for (const b of made.splice(0)) b.dispose();
}

// ---------- the table ----------
const lines = [
  '',
  `NSA vs dense causal attention, WebGPU (${dtype}) on ${backend.device}; forward kernels: register-tiled (rows "classic": the previous kernels)`,
  `B=${B} HQ=${HQ} H=${H} D=${D}, paper blocks (l=32 d=16 l'=64 n=16 w=512); ceilings measured in this run: ` +
    `fp32 FMA ${(ceil.gflops / 1000).toFixed(1)} TFLOP/s, copy ${(ceil.bw / 1000).toFixed(2)} TB/s`,
  '',
  `clocks: host = wall per call up to onSubmittedWorkDone; b2b = ${'N'} calls back to back, one wait, per call; ` +
    `gpu = timestamp queries per pass, summed per call (${timestamps ? 'timestamp-query present' : 'no timestamp-query on this adapter'}). ` +
    'Rates and dense / nsa use the clock named in the "clock" column (gpu, else b2b, else host), the same for both rows of a pair. ' +
    `Decode cells: one warm-up call${decodeWarmMs > 0 ? `, then ${decodeWarmMs} ms more of untimed calls` : ''} before timing.`,
  '',
  '| T | op | impl | host ms | b2b ms | gpu ms | clock | GFLOP/s | % fp32 peak | GB/s | % copy BW | dense / nsa |',
  '|---:|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|',
];
const OPS = ['forward', 'fwd+bwd', 'decode B=1', 'decode B=16'];
const IMPLS = ['nsa', 'dense', 'nsa 6 passes', 'nsa unmerged', 'nsa classic', 'dense classic'];
rows.sort((a, b) => a.T - b.T || OPS.indexOf(a.op) - OPS.indexOf(b.op) || IMPLS.indexOf(a.impl) - IMPLS.indexOf(b.impl));
for (const r of rows) {
  if (r.skipped) {
    lines.push(`| ${r.T} | ${r.op} | ${r.impl} | skipped: ${r.skipped} | | | | | | | | |`);
    continue;
  }
  const denseName = r.impl.replace('nsa', 'dense');
  const pair = (name) => rows.find((x) => x.T === r.T && x.op === r.op && x.impl === name && !x.skipped);
  const other = pair(denseName) ?? pair('dense');
  const same = other && other.clock === r.clock;
  const ratio = r.impl.startsWith('nsa') && same ? `${(other.best / r.best).toFixed(2)}x` : '';
  lines.push(
    `| ${r.T} | ${r.op} | ${r.impl} | ${fmt(r.ms)} | ${fmt(r.stepMs)} | ${fmt(r.gpuMs)} | ${r.clock} | ${r.gflops.toFixed(0)} | ${((100 * r.gflops) / ceil.gflops).toFixed(1)}% | ` +
      `${r.gbs.toFixed(0)} | ${((100 * r.gbs) / ceil.bw).toFixed(1)}% | ${ratio} |`,
  );
}
console.log(lines.join('\n'));
backend.dispose();
