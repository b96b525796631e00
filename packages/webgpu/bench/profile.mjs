#!/usr/bin/env node
/* global process, console, GPUBufferUsage, performance */
// Where the GPU time of one NSA call goes: every dispatch in its own timed compute pass
// (timestamp queries), median per kernel over repetitions. Also lists the adapter's features and,
// where Dawn offers 'chromium-experimental-subgroup-matrix', its configurations and the rate of a
// subgroup-matrix multiply-accumulate loop.
//   node bench/profile.mjs [--T 16384,65536] [--decodeT 65536] [--denseT 16384] [--dtype float32] [--classic] [--treeTopN] [--sixPasses] [--decodeVariants '{...};{...}'] [--variants '{...};{...}']
// B = 1, HQ = 64, H = 4, D = 128, paper block sizes, random inputs (as bench/run.mjs).
import { compressedCount, createNSAConfig } from '@nsa/core';
import { WebGPUTensor, createWebGPUBackend, nodeGPU } from '@nsa/webgpu';

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const Ts = option('T', '16384,65536').split(',').filter(Boolean).map(Number);
const decodeTs = option('decodeT', '65536').split(',').filter(Boolean).map(Number);
const dtype = option('dtype', 'float32');
const HQ = 64;
const H = 4;
const D = 128;
const config = createNSAConfig({ heads: HQ, kvHeads: H, headDimK: D, headDimV: D });

// ---------- the adapter ----------
const gpu = await nodeGPU();
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
console.log(`adapter features: ${[...adapter.features].sort().join(', ')}`);
const configs = adapter.info?.subgroupMatrixConfigs;
console.log(`subgroupMatrixConfigs: ${configs ? JSON.stringify([...configs].map((c) => ({ componentType: c.componentType, resultComponentType: c.resultComponentType, M: c.M, N: c.N, K: c.K }))) : 'none'}`);
if (adapter.features.has('chromium-experimental-subgroup-matrix') && configs) await subgroupMatrixRate(adapter, [...configs]);

async function subgroupMatrixRate(adapterIn, list) {
  const f16 = list.find((c) => c.componentType === 'f16' && c.resultComponentType === 'f32') ?? list.find((c) => c.componentType === 'f16');
  if (!f16) return console.log('subgroup matrix: no f16 configuration');
  const { M, N, K } = f16;
  const features = ['chromium-experimental-subgroup-matrix', 'shader-f16', 'subgroups'].filter((f) => adapterIn.features.has(f));
  const device = await adapterIn.requestDevice({ requiredFeatures: features });
  const R = f16.resultComponentType;
  const ITER = 4096;
  const code = `enable f16;
enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read_write> out: array<${R}>;
var<workgroup> a: array<f16, ${M * K}>;
var<workgroup> b: array<f16, ${K * N}>;
@compute @workgroup_size(32)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  for (var i = lid; i < ${M * K}u; i += 32u) { a[i] = f16(f32(i % 7u) * 0.01); }
  for (var i = lid; i < ${K * N}u; i += 32u) { b[i] = f16(f32(i % 5u) * 0.01); }
  workgroupBarrier();
  let l = subgroupMatrixLoad<subgroup_matrix_left<f16, ${K}, ${M}>>(&a, 0u, false, ${K}u);
  let r = subgroupMatrixLoad<subgroup_matrix_right<f16, ${N}, ${K}>>(&b, 0u, false, ${N}u);
  var c0 = subgroup_matrix_result<${R}, ${N}, ${M}>();
  var c1 = subgroup_matrix_result<${R}, ${N}, ${M}>();
  var c2 = subgroup_matrix_result<${R}, ${N}, ${M}>();
  var c3 = subgroup_matrix_result<${R}, ${N}, ${M}>();
  for (var i = 0u; i < ${ITER}u; i++) {
    c0 = subgroupMatrixMultiplyAccumulate(l, r, c0);
    c1 = subgroupMatrixMultiplyAccumulate(l, r, c1);
    c2 = subgroupMatrixMultiplyAccumulate(l, r, c2);
    c3 = subgroupMatrixMultiplyAccumulate(l, r, c3);
  }
  let sg = wid.x;
  subgroupMatrixStore(&out, sg * ${4 * M * N}u, c0, false, ${N}u);
  subgroupMatrixStore(&out, sg * ${4 * M * N}u + ${M * N}u, c1, false, ${N}u);
  subgroupMatrixStore(&out, sg * ${4 * M * N}u + ${2 * M * N}u, c2, false, ${N}u);
  subgroupMatrixStore(&out, sg * ${4 * M * N}u + ${3 * M * N}u, c3, false, ${N}u);
}`;
  try {
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code });
    const info = await module.getCompilationInfo();
    for (const m of info.messages) console.log(`subgroup matrix shader: ${m.type} ${m.lineNum}:${m.linePos} ${m.message}`);
    const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    const groups = 132 * 64;
    const out = device.createBuffer({ size: groups * 4 * M * N * 4, usage: GPUBufferUsage.STORAGE });
    const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] });
    const err = await device.popErrorScope();
    if (err) throw new Error(err.message);
    const times = [];
    for (let k = 0; k < 6; k++) {
      const t0 = performance.now();
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bind);
      pass.dispatchWorkgroups(groups);
      pass.end();
      device.queue.submit([enc.finish()]);
      await device.queue.onSubmittedWorkDone();
      times.push(performance.now() - t0);
    }
    times.sort((x, y) => x - y);
    const ms = times[2];
    const flops = groups * 4 * ITER * 2 * M * N * K;
    console.log(`subgroup matrix f16 ${M}x${N}x${K} -> ${R}: ${(flops / ms / 1e9).toFixed(1)} TFLOP/s (host clock, ${ms.toFixed(2)} ms)`);
    out.destroy();
  } catch (error) {
    console.log(`subgroup matrix probe failed: ${error instanceof Error ? error.message : String(error)}`);
  }
  device.destroy();
}

// ---------- per-kernel times ----------
const backend = await createWebGPUBackend();
const { rt, ctx } = backend;
console.log(`backend device: ${backend.device}`);
if (!rt.profile(true, true)) {
  console.log('no timestamp-query: nothing to profile');
  process.exit(0);
}
rt.profile(false);

const made = [];
function random(shape, dt = dtype, lo = -1.7, hi = 1.7) {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = WebGPUTensor.empty(ctx, shape, dt, 'profile');
  // Host-generated values, uploaded in chunks (deterministic LCG; never zero on average).
  const chunk = 1 << 22;
  const es = dt === 'float16' ? 2 : 4;
  let s = made.length * 7919 + 17;
  for (let first = 0; first < n; first += chunk) {
    const m = Math.min(chunk, n - first);
    const f = new Float32Array(m);
    for (let i = 0; i < m; i++) {
      s = (s * 1664525 + 1013904223) >>> 0;
      f[i] = lo + ((hi - lo) * s) / 4294967296;
    }
    const data = dt === 'float16' ? f16Bits(f) : f;
    ctx.device.queue.writeBuffer(t.buffer, first * es, data.buffer, 0, Math.ceil((m * es) / 4) * 4);
  }
  made.push(t);
  return t;
}
function f16Bits(f) {
  const out = new Uint16Array(Math.ceil(f.length / 2) * 2);
  const v = new Float32Array(1);
  const u = new Uint32Array(v.buffer);
  for (let i = 0; i < f.length; i++) {
    v[0] = f[i];
    const x = u[0];
    const sign = (x >>> 16) & 0x8000;
    const e = ((x >>> 23) & 0xff) - 127 + 15;
    out[i] = e <= 0 ? sign : sign | (e << 10) | ((x >>> 13) & 0x3ff);
  }
  return out;
}

async function profile(what, fn, reps) {
  (await fn())?.dispose?.();
  await backend.synchronize();
  rt.profile(true, true);
  const per = new Map();
  const totals = [];
  for (let r = 0; r < reps; r++) {
    (await fn())?.dispose?.();
    await backend.synchronize();
    await rt.profiler.flush();
    for (const t of rt.profiler.timings.splice(0)) {
      totals.push(t.ms);
      const seen = new Map();
      for (const p of t.parts) {
        const n = (seen.get(p.label) ?? 0) + 1;
        seen.set(p.label, n);
        const key = n > 1 ? `${p.label} #${n}` : p.label;
        if (!per.has(key)) per.set(key, []);
        per.get(key).push(p.ms);
      }
    }
  }
  rt.profile(false);
  const med = (l) => [...l].sort((a, b) => a - b)[Math.floor(l.length / 2)];
  const total = med(totals);
  console.log(`\n${what}: ${total.toFixed(3)} ms GPU per call (median of ${totals.length}, each dispatch its own pass)`);
  console.log('| kernel | ms | share |\n|---|---:|---:|');
  for (const [k, l] of per) console.log(`| ${k} | ${med(l).toFixed(4)} | ${((100 * med(l)) / total).toFixed(1)}% |`);
}

for (const T of Ts) {
  const C = compressedCount(T, config);
  const inputs = {
    q: random([1, T, HQ, D]),
    kCmp: random([1, C, H, D]),
    vCmp: random([1, C, H, D]),
    kSlc: random([1, T, H, D]),
    vSlc: random([1, T, H, D]),
    kWin: random([1, T, H, D]),
    vWin: random([1, T, H, D]),
    gates: random([1, T, HQ, 3], dtype, 0.05, 1),
  };
  await profile(`NSA forward T=${T} ${dtype}`, () => backend.nsaForward({ config, ...inputs }), T > 20000 ? 2 : 3);
  // --variants '{"selectionTokens":1};{"tileOverride":{"selected":{"KT":16}}}': context settings
  // (tile experiments, previous kernels), one profile each, restored afterwards.
  for (const v of option('variants', '').split(';').filter(Boolean)) {
    const settings = JSON.parse(v);
    const saved = Object.fromEntries(Object.keys(settings).map((key) => [key, ctx[key]]));
    Object.assign(ctx, settings);
    await profile(`NSA forward T=${T} ${dtype} (${v})`, () => backend.nsaForward({ config, ...inputs }), 2);
    Object.assign(ctx, saved);
  }
  if (process.argv.includes('--treeTopN')) {
    ctx.subgroupTopN = false;
    await profile(`NSA forward T=${T} ${dtype} (top-n through workgroup-memory trees)`, () => backend.nsaForward({ config, ...inputs }), 2);
    ctx.subgroupTopN = true;
  }
  if (process.argv.includes('--classic')) {
    ctx.tiledForward = false;
    await profile(`NSA forward T=${T} ${dtype} (classic kernels)`, () => backend.nsaForward({ config, ...inputs }), 2);
    ctx.tiledForward = true;
  }
  for (const t of made.splice(0)) t.dispose();
}

// --denseT 16384: the dense causal forward (the baseline; same tiled kernel in causal mode), with --variants too.
for (const T of option('denseT', '').split(',').filter(Boolean).map(Number)) {
  const q = random([1, T, HQ, D]);
  const k = random([1, T, H, D]);
  const v = random([1, T, H, D]);
  await profile(`dense forward T=${T} ${dtype}`, () => backend.attentionForward({ q, k, v }), 2);
  for (const s of option('variants', '').split(';').filter(Boolean)) {
    const settings = JSON.parse(s);
    const saved = Object.fromEntries(Object.keys(settings).map((key) => [key, ctx[key]]));
    Object.assign(ctx, settings);
    await profile(`dense forward T=${T} ${dtype} (${s})`, () => backend.attentionForward({ q, k, v }), 2);
    Object.assign(ctx, saved);
  }
  for (const t of made.splice(0)) t.dispose();
}

for (const T of decodeTs) {
  const C = compressedCount(T, config);
  for (const batch of [1, 16]) {
    const cache = backend.createNSACache({ config, batch, dtype, capacity: T });
    const chunk = Math.min(T, 2048);
    const raw = { kSlc: random([batch, chunk, H, D]), vSlc: random([batch, chunk, H, D]), kWin: random([batch, chunk, H, D]), vWin: random([batch, chunk, H, D]) };
    for (let t = 0; t < T; t += chunk) await cache.append(raw);
    await cache.appendCompressed({ kCmp: random([batch, C, H, D]), vCmp: random([batch, C, H, D]) });
    const q = random([batch, 1, HQ, D]);
    const gates = random([batch, 1, HQ, 3], dtype, 0.05, 1);
    await profile(`NSA decode T=${T} B=${batch} ${dtype}`, () => backend.nsaDecode({ cache, q, gates }), 30);
    // --decodeVariants '{"decodeTiles":{"KC":16}};{"decodeTiles":{"selectWG":1024}}': context settings, one profile each.
    for (const v of option('decodeVariants', '').split(';').filter(Boolean)) {
      const settings = JSON.parse(v);
      const saved = Object.fromEntries(Object.keys(settings).map((key) => [key, ctx[key]]));
      Object.assign(ctx, settings);
      await profile(`NSA decode T=${T} B=${batch} ${dtype} (${v})`, () => backend.nsaDecode({ cache, q, gates }), 30);
      Object.assign(ctx, saved);
    }
    if (process.argv.includes('--sixPasses')) {
      ctx.singleQueryDecode = false;
      await profile(`NSA decode T=${T} B=${batch} ${dtype} (the previous six passes)`, () => backend.nsaDecode({ cache, q, gates }), 30);
      ctx.singleQueryDecode = true;
    }
    if (process.argv.includes('--treeTopN')) {
      ctx.subgroupTopN = false;
      await profile(`NSA decode T=${T} B=${batch} ${dtype} (top-n through workgroup-memory trees)`, () => backend.nsaDecode({ cache, q, gates }), 30);
      ctx.subgroupTopN = true;
    }
    cache.dispose();
    for (const t of made.splice(0)) t.dispose();
  }
}
backend.dispose();
