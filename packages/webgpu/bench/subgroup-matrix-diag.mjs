/* global console, GPUBufferUsage, GPUMapMode */
// wmat diagnostic: checks the subgroup-matrix primitives the forward kernel uses, with its layouts.
import { nodeGPU } from '@nsa/webgpu';
const gpu = await nodeGPU();
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
const device = await adapter.requestDevice({ requiredFeatures: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'], requiredLimits: { maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize } });
const NR = 16, KT = 32, DK = 128, DV = 64, KS = 136, SS = 36, PS = 40;
const L = 'subgroup_matrix_left<f16, 16, 16>', R = 'subgroup_matrix_right<f16, 16, 16>', A = 'subgroup_matrix_result<f32, 16, 16>';
const code = `enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
@group(0) @binding(0) var<storage, read> qin: array<f32>;
@group(0) @binding(1) var<storage, read> kin: array<f32>;
@group(0) @binding(2) var<storage, read> vin: array<f32>;
@group(0) @binding(3) var<storage, read> pin: array<f32>;
@group(0) @binding(4) var<storage, read_write> sout: array<f32>;
@group(0) @binding(5) var<storage, read_write> oout: array<f32>;
@group(0) @binding(6) var<storage, read_write> o2out: array<f32>;
var<workgroup> qs: array<f16, ${NR * KS}>;
var<workgroup> ks: array<f16, ${KT * KS}>;
var<workgroup> vs: array<f16, ${KT * KS}>;
var<workgroup> vt: array<f16, ${DV * (KT + 8)}>;
var<workgroup> ps: array<f16, ${NR * PS}>;
var<workgroup> sb: array<f32, ${NR * SS}>;
@compute @workgroup_size(128)
fn main(@builtin(local_invocation_index) lid: u32) {
  for (var i = lid; i < ${NR * DK}u; i += 128u) { qs[(i / ${DK}u) * ${KS}u + i % ${DK}u] = f16(qin[i]); }
  for (var i = lid; i < ${KT * DK}u; i += 128u) { ks[(i / ${DK}u) * ${KS}u + i % ${DK}u] = f16(kin[i]); }
  for (var i = lid; i < ${KT * DV}u; i += 128u) { vs[(i / ${DV}u) * ${KS}u + i % ${DV}u] = f16(vin[i]); vt[(i % ${DV}u) * ${KT + 8}u + i / ${DV}u] = f16(vin[i]); }
  for (var i = lid; i < ${NR * KT}u; i += 128u) { ps[(i / ${KT}u) * ${PS}u + i % ${KT}u] = f16(pin[i]); }
  workgroupBarrier();
  let sg = 0u;
  for (var j = 0u; j < ${KT / 16}u; j++) {
    var acc = ${A}();
    for (var d = 0u; d < ${DK / 16}u; d++) {
      let a = subgroupMatrixLoad<${L}>(&qs, sg * 16u * ${KS}u + d * 16u, false, ${KS}u);
      let b = subgroupMatrixLoad<${R}>(&ks, j * 16u * ${KS}u + d * 16u, true, ${KS}u);
      acc = subgroupMatrixMultiplyAccumulate(a, b, acc);
    }
    subgroupMatrixStore(&sb, sg * 16u * ${SS}u + j * 16u, acc, false, ${SS}u);
  }
  workgroupBarrier();
  for (var i = lid; i < ${NR * KT}u; i += 128u) { sout[i] = sb[(i / ${KT}u) * ${SS}u + i % ${KT}u]; }
  workgroupBarrier();
  for (var c = 0u; c < ${DV / 16}u; c++) {
    var o = ${A}();
    var o2 = ${A}();
    for (var j = 0u; j < ${KT / 16}u; j++) {
      let p = subgroupMatrixLoad<${L}>(&ps, sg * 16u * ${PS}u + j * 16u, false, ${PS}u);
      o = subgroupMatrixMultiplyAccumulate(p, subgroupMatrixLoad<${R}>(&vs, j * 16u * ${KS}u + c * 16u, false, ${KS}u), o);
      o2 = subgroupMatrixMultiplyAccumulate(p, subgroupMatrixLoad<${R}>(&vt, c * 16u * ${KT + 8}u + j * 16u, true, ${KT + 8}u), o2);
    }
    subgroupMatrixStore(&oout, sg * 16u * ${DV}u + c * 16u, o, false, ${DV}u);
    subgroupMatrixStore(&o2out, sg * 16u * ${DV}u + c * 16u, o2, false, ${DV}u);
  }
}`;
const rnd = (n, s) => Float32Array.from({ length: n }, (_, i) => (((i * 37 + s * 11) % 17) - 8) / 4);
const q = rnd(NR * DK, 1), k = rnd(KT * DK, 2), v = rnd(KT * DV, 3), p = rnd(NR * KT, 4);
const buf = (data) => { const b = device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST }); device.queue.writeBuffer(b, 0, data); return b; };
device.pushErrorScope('validation');
const module = device.createShaderModule({ code });
for (const m of (await module.getCompilationInfo()).messages) if (m.type === 'error') console.log('compile', m.lineNum, m.message);
const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
const bufs = [buf(q), buf(k), buf(v), buf(p), buf(new Float32Array(NR * KT)), buf(new Float32Array(NR * DV)), buf(new Float32Array(NR * DV))];
const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: bufs.map((b, i) => ({ binding: i, resource: { buffer: b } })) });
const enc = device.createCommandEncoder(); const pass = enc.beginComputePass(); pass.setPipeline(pipeline); pass.setBindGroup(0, bind); pass.dispatchWorkgroups(1); pass.end();
const reads = [4, 5, 6].map((i) => { const r = device.createBuffer({ size: bufs[i].size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST }); enc.copyBufferToBuffer(bufs[i], 0, r, 0, bufs[i].size); return r; });
device.queue.submit([enc.finish()]);
const err = await device.popErrorScope(); if (err) console.log('validation', err.message);
const out = [];
for (const r of reads) { await r.mapAsync(GPUMapMode.READ); out.push(new Float32Array(r.getMappedRange().slice(0))); }
const S = new Float32Array(NR * KT), O = new Float32Array(NR * DV);
for (let r = 0; r < NR; r++) for (let c = 0; c < KT; c++) { let s = 0; for (let d = 0; d < DK; d++) s += q[r * DK + d] * k[c * DK + d]; S[r * KT + c] = s; }
for (let r = 0; r < NR; r++) for (let c = 0; c < DV; c++) { let s = 0; for (let j = 0; j < KT; j++) s += p[r * KT + j] * v[j * DV + c]; O[r * DV + c] = s; }
const cmp = (name, a, b, cols) => { let bad = 0, first = ''; for (let i = 0; i < a.length; i++) if (Math.abs(a[i] - b[i]) > 1e-3 * (1 + Math.abs(b[i]))) { if (!bad) first = `row ${Math.floor(i / cols)} col ${i % cols}: got ${a[i]} want ${b[i]}`; bad++; } console.log(`${name}: ${bad} of ${a.length} wrong ${first}`); };
cmp('S = Q K^T (K col-major right)', out[0], S, KT);
cmp('O = P V (V row-major right)', out[1], O, DV);
cmp('O = P V (V^T col-major right)', out[2], O, DV);
