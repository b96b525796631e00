/* global process, performance, console, GPUBufferUsage, GPUMapMode */
// Diagnostic of the subgroup-matrix range forward (issue 4): runs the kernel itself, in several
// variants, on one head group (G = 16) and checks out and lse against a float64 computation.
//   node bench/subgroup-matrix-forward-diag.mjs   (staged package; Dawn options as for the parity)
import { nodeGPU } from '@nsa/webgpu';
import { matrixForwardShader, matrixForwardSharedBytes } from '../dist/shaders/subgroup-matrix-forward.js';
import { PARAM_BYTES, packParams } from '../dist/shaders/common.js';

const gpu = await nodeGPU();
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
const maxShared = adapter.limits.maxComputeWorkgroupStorageSize;
// Without the feature (software adapters) every variant runs emulated over f32 storage: a check of
// this script and of the kernels' logic, not of the hardware.
const native = adapter.features.has('chromium-experimental-subgroup-matrix');
const device = await adapter.requestDevice({
  requiredFeatures: native ? ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'] : ['subgroups'],
  requiredLimits: { maxComputeWorkgroupStorageSize: maxShared },
});

// Values n / 64 with |n| <= 96 are exact in f16; 'half' gives their bits.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const half = (x) => {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7fffffff) === 0) return (b >>> 16) & 0x8000;
  return ((b >>> 16) & 0x8000) | ((((b >>> 23) & 0xff) - 112) << 10) | ((b >>> 13) & 0x3ff);
};
let seed = 12345;
const rnd = () => {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return (((seed >>> 8) % 193) - 96) / 64;
};
const values = (n) => Float64Array.from({ length: n }, rnd);
const storage = (data) => {
  const b = device.createBuffer({ size: Math.max(16, data.byteLength), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(b, 0, data);
  return b;
};
const halves = (x) => (native ? Uint16Array.from(x, half) : Float32Array.from(x));

async function runCase(mode, DK, DV, T, variants) {
  const G = 16, H = 1, HQ = 16, window = 128, cmpBlock = 16, cmpStride = 8;
  const NK = mode === 'window' ? T : Math.floor((T - cmpBlock) / cmpStride) + 1;
  const keyHi = (p) => (mode === 'window' ? p + 1 : p + 1 >= cmpBlock ? Math.floor((p + 1 - cmpBlock) / cmpStride) + 1 : 0);
  const keyLo = (p) => (mode === 'window' ? Math.max(0, p + 1 - window) : 0);
  const q = values(T * HQ * DK), k = values(NK * DK), v = values(NK * DV);
  const scale = 1 / Math.sqrt(DK);
  // float64 reference
  const ref = new Float64Array(T * HQ * DV), refLse = new Float64Array(T * HQ);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < HQ; h++) {
      const row = t * HQ + h;
      const lo = keyLo(t), hi = keyHi(t);
      if (hi <= lo) { refLse[row] = -Infinity; continue; }
      const s = [];
      for (let j = lo; j < hi; j++) { let d = 0; for (let x = 0; x < DK; x++) d += q[row * DK + x] * k[j * DK + x]; s.push(d * scale); }
      const m = Math.max(...s);
      let l = 0;
      const p = s.map((x) => { const e = Math.exp(x - m); l += e; return e; });
      refLse[row] = m + Math.log(l);
      for (let c = 0; c < DV; c++) { let o = 0; for (let j = lo; j < hi; j++) o += p[j - lo] * v[j * DV + c]; ref[row * DV + c] = o / l; }
    }
  }
  const qb = storage(halves(q)), kb = storage(halves(k)), vb = storage(halves(v));
  for (const variant of variants) {
    const kernel = { mode, e: 'f16', G, DK, DV, KT: 64, NSG: 4, TAU: 8, emulate: false, accumulate: 'matrix', ...variant.kernel };
    if (!native) Object.assign(kernel, { e: 'f32', emulate: true });
    // Without a KT of its own a variant takes the first of 64, 32, 16 that fits (as branch.ts).
    if (!variant.kernel.KT) kernel.KT = [64, 32, 16].find((KT) => matrixForwardSharedBytes({ ...kernel, KT }) <= maxShared) ?? 16;
    const bytes = matrixForwardSharedBytes(kernel);
    const label = `${mode} DK=${DK} DV=${DV} T=${T} ${variant.name} (KT ${kernel.KT}, NSG ${kernel.NSG}, TAU ${kernel.TAU}, ${kernel.accumulate}${kernel.emulate ? ', emulated' : ''})`;
    if (bytes > maxShared) { console.log(`${label}: skipped, ${bytes} B shared`); continue; }
    let code = matrixForwardShader(kernel);
    if (variant.edit) code = variant.edit(code);
    const NSG = kernel.NSG;
    const nItems = Math.ceil(T / NSG);
    const items = new Uint32Array(nItems * 8);
    for (let i = 0; i < nItems; i++) items.set([i * NSG, Math.min(NSG, T - i * NSG), i * NSG, 0, 0, T, 0, 0], i * 8);
    const params = device.createBuffer({ size: PARAM_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(params, 0, packParams({ H, HQ, window, cmpBlock, cmpStride, scale, rowBase: 0, keyRowBase: 0, itemBase: 0 }));
    const out = storage(new Float32Array(T * HQ * DV).fill(777));
    const stats = storage(new Float32Array(T * HQ).fill(777));
    device.pushErrorScope('validation');
    const t0 = performance.now();
    const module = device.createShaderModule({ code });
    const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error');
    if (errors.length) { console.log(`${label}: compile error ${errors[0].lineNum}: ${errors[0].message}`); await device.popErrorScope(); continue; }
    let pipeline;
    try { pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } }); } catch (e) { console.log(`${label}: pipeline ${e.message}`); await device.popErrorScope(); continue; }
    const bufs = [params, storage(items), qb, kb, vb, out, stats];
    const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: bufs.map((b, i) => ({ binding: i, resource: { buffer: b } })) });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline); pass.setBindGroup(0, bind); pass.dispatchWorkgroups(nItems, H * (G / 16), 1); pass.end();
    const reads = [out, stats].map((b) => { const r = device.createBuffer({ size: b.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }); enc.copyBufferToBuffer(b, 0, r, 0, b.size); return r; });
    device.queue.submit([enc.finish()]);
    const err = await device.popErrorScope();
    if (err) { console.log(`${label}: validation ${err.message}`); continue; }
    const got = [];
    for (const r of reads) { await r.mapAsync(GPUMapMode.READ); got.push(new Float32Array(r.getMappedRange().slice(0))); r.unmap(); }
    report(label, got[0], got[1], ref, refLse, T, HQ, DV, NSG, performance.now() - t0);
  }
}

function report(label, out, lse, ref, refLse, T, HQ, DV, NSG, ms) {
  let num = 0, den = 0, lseBad = 0, lseMax = 0;
  const bySub = new Float64Array(NSG * 2), byTile = new Float64Array((DV / 16) * 2);
  let badRows = 0, first = '';
  for (let row = 0; row < T * HQ; row++) {
    const t = Math.floor(row / HQ);
    if (refLse[row] === -Infinity) { if (lse[row] > -1e29) lseBad++; } else { const d = Math.abs(lse[row] - refLse[row]); lseMax = Math.max(lseMax, d); if (d > 1e-2) lseBad++; }
    let rn = 0, rd = 0;
    for (let c = 0; c < DV; c++) {
      const d = (out[row * DV + c] - ref[row * DV + c]) ** 2, w = ref[row * DV + c] ** 2;
      rn += d; rd += w;
      bySub[(t % NSG) * 2] += d; bySub[(t % NSG) * 2 + 1] += w;
      byTile[Math.floor(c / 16) * 2] += d; byTile[Math.floor(c / 16) * 2 + 1] += w;
    }
    num += rn; den += rd;
    if (rn > 1e-4 * (rd + 1e-6)) {
      if (!badRows) first = `first bad row t=${t} h=${row % HQ}: got ${Array.from(out.subarray(row * DV, row * DV + 6), (x) => x.toFixed(3))} want ${Array.from(ref.subarray(row * DV, row * DV + 6), (x) => x.toFixed(3))}`;
      badRows++;
    }
  }
  const rel = (a, i) => Math.sqrt(a[2 * i] / (a[2 * i + 1] || 1)).toExponential(1);
  console.log(`${label}: out rel.L2 ${Math.sqrt(num / den).toExponential(2)}, bad rows ${badRows}/${T * HQ}, lse max|d| ${lseMax.toExponential(1)} bad ${lseBad}; by token-in-item [${Array.from({ length: NSG }, (_, i) => rel(bySub, i))}] by col tile [${Array.from({ length: DV / 16 }, (_, i) => rel(byTile, i))}] (${ms.toFixed(0)} ms)`);
  if (first) console.log(`   ${first}`);
}

// One subgroup per workgroup with its index a constant: every matrix offset is a constant
// expression, so Tint's robustness adds no bounds check around any matrix load or store.
const constOffsets = (code) => {
  for (const from of ['let sg = lid / 32u;', 'let sRow = sg * 16u * SS;', 'let pRow = sg * 16u * PS;']) if (!code.includes(from)) throw new Error(`no '${from}'`);
  return code.replace('let sg = lid / 32u;', 'const sg = 0u;').replace('let sRow = sg * 16u * SS;', 'const sRow = sg * 16u * SS;').replace('let pRow = sg * 16u * PS;', 'const pRow = sg * 16u * PS;');
};
// The layout before this session's fix: 'rescale' a 4-byte workgroup variable, which the driver
// may place ahead of the arrays the matrices read and write (their bases then 4 bytes off 16).
const scalarRescale = (code) => {
  if (!code.includes('var<workgroup> rescale: array<u32, 4>;')) throw new Error('no padded rescale');
  return code.replace('var<workgroup> rescale: array<u32, 4>;', 'var<workgroup> rescale: u32;').replaceAll('rescale[0]', 'rescale');
};
const variants = [
  { name: 'base', kernel: {} },
  { name: 'scalar-rescale', kernel: {}, edit: scalarRescale },
  { name: 'nsg1', kernel: { NSG: 1 } },
  { name: 'kt32', kernel: { KT: 32 } },
  { name: 'rows', kernel: { accumulate: 'rows' } },
  { name: 'tau0', kernel: { TAU: 0 } },
  { name: 'const-offsets nsg1', kernel: { NSG: 1 }, edit: constOffsets },
  { name: 'row-major-right', kernel: { rightMajor: 'row' } },
];
const pick = (...names) => variants.filter((v) => names.includes(v.name));
const cases = {
  all: [
    ['window', 64, 64, 320, variants],
    ['compressed', 64, 64, 1024, pick('base', 'scalar-rescale', 'rows')],
    ['window', 128, 128, 320, pick('base', 'scalar-rescale', 'kt32')],
    ['window', 192, 128, 320, pick('base')],
    ['compressed', 128, 128, 1024, pick('base')],
  ],
  // With dump_shaders: the WGSL and SPIR-V of one kernel.
  dump: [['window', 64, 64, 320, pick('base')]],
};
// node bench/subgroup-matrix-forward-diag.mjs [all|dump]
for (const [mode, DK, DV, T, vs] of cases[process.argv[2] ?? 'all']) await runCase(mode, DK, DV, T, vs);
device.destroy();
