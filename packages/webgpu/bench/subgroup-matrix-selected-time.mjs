/* global console, performance, GPUBufferUsage */
// Where the selected branch's matrix kernel (shaders/subgroup-matrix-selected.ts) spends its time:
// the kernel alone on 8192 query tokens at positions 57344..65535 (B = 1, H = 4, G = 16, D = 128,
// 16 random blocks of 64 keys per token and KV head, as the benchmark's random inputs choose), then
// the same with parts of each tile cut out of the WGSL. The cut variants compute wrong results on
// purpose: they only say what each part costs. Host time per dispatch (5 per submit, median of 3).
//   node bench/subgroup-matrix-selected-time.mjs   (staged package; Dawn options as for the parity)
import { nodeGPU } from '@nsa/webgpu';
import { matrixSelectedShader } from '../dist/shaders/subgroup-matrix-selected.js';
import { PARAM_BYTES, packParams } from '../dist/shaders/common.js';

const gpu = await nodeGPU();
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
if (!adapter.features.has('chromium-experimental-subgroup-matrix')) throw new Error('no subgroup matrices on this adapter');
const limits = ['maxComputeWorkgroupStorageSize', 'maxStorageBufferBindingSize', 'maxBufferSize'];
const device = await adapter.requestDevice({
  requiredFeatures: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'],
  requiredLimits: Object.fromEntries(limits.map((n) => [n, adapter.limits[n]])),
});

const T = 8192, P0 = 65536 - T, NK = 65536, H = 4, G = 16, HQ = H * G, D = 128, nSel = 16, selBlock = 64;
let seed = 7;
const rnd = () => {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed >>> 8;
};
// f16 bits of n / 64, |n| <= 64 (exact in f16).
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const halfOf = (x) => {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7fffffff) === 0) return (b >>> 16) & 0x8000;
  return ((b >>> 16) & 0x8000) | ((((b >>> 23) & 0xff) - 112) << 10) | ((b >>> 13) & 0x3ff);
};
const table = Uint16Array.from({ length: 129 }, (_, i) => halfOf((i - 64) / 64));
const halves = (n) => {
  const a = new Uint16Array(n);
  for (let i = 0; i < n; i++) a[i] = table[rnd() % 129];
  return a;
};
const storage = (data, extra = 0) => {
  const b = device.createBuffer({ size: Math.max(16, data.byteLength), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | extra });
  device.queue.writeBuffer(b, 0, data);
  return b;
};
const items = new Uint32Array(T * 8);
for (let t = 0; t < T; t++) items.set([t, 1, P0 + t, 0, 0, NK, 0, 0], t * 8);
// 16 distinct blocks per (token, KV head), the token's own block among them.
const blocks = new Int32Array(T * H * nSel);
for (let t = 0; t < T; t++) {
  const last = Math.floor((P0 + t) / selBlock);
  for (let h = 0; h < H; h++) {
    const chosen = new Set([last]);
    while (chosen.size < nSel) chosen.add(rnd() % (last + 1));
    blocks.set([...chosen], (t * H + h) * nSel);
  }
}
// The same count of keys, but the 15 blocks besides a token's own sit at fixed distances behind it,
// so the 64 tokens of a block read the same ones: the kernel with its keys mostly from L2
// (neighbouring tokens of a trained model share many blocks).
const shared = new Int32Array(T * H * nSel);
for (let t = 0; t < T; t++) {
  const last = Math.floor((P0 + t) / selBlock);
  for (let h = 0; h < H; h++) shared.set([last, ...Array.from({ length: nSel - 1 }, (_, i) => (last - 1 - i * 7 - h) % (last + 1))], (t * H + h) * nSel);
}
const params = device.createBuffer({ size: PARAM_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
device.queue.writeBuffer(params, 0, packParams({ H, HQ, selBlock, nSel, scale: 1 / Math.sqrt(D), rowBase: 0, keyRowBase: 0, itemBase: 0 }));
const bufs = [params, storage(items), storage(halves(T * HQ * D)), storage(halves(NK * H * D)), storage(halves(NK * H * D)), storage(new Float32Array(T * HQ * D)), storage(new Float32Array(T * HQ)), storage(blocks)];

// Cuts of the WGSL, each checked to have matched.
const cut = (code, re, name) => {
  const out = code.replace(re, '');
  if (out === code) throw new Error(`${name}: nothing cut`);
  return out;
};
const edits = {
  'no softmax (P not written)': (c) => cut(c, /\n {4}\/\/ Softmax:[\s\S]*?pbuf\[r \* PS \+ kk\] = f16\(e\);\n {6}\}\n {4}\}/, 'softmax'),
  'no S = Q K^T products': (c) => cut(c, /^ {4}acc = subgroupMatrixMultiplyAccumulate\(q.*$/gm, 'S'),
  'no P V products': (c) => cut(c, /o\d+ = subgroupMatrixMultiplyAccumulate\(p[^;]*;/g, 'PV'),
  // The bindings stay in use (a store that never runs), so the layout keeps them.
  'no global K/V loads': (c) => cut(c, /[kv]r\d+ = [kv]buf\[[^;]*\];/g, 'loads').replace(/\n\}\n$/, '\n  if (P.H == 12345u) { out[0] = f32(kbuf[0].x + vbuf[0].x); }\n}\n'),
  'no workgroupBarrier in the tile loop': (c) => cut(c, /^ {4}workgroupBarrier\(\);$/gm, 'barriers'),
  'no rescale check (workgroupUniformLoad)': (c) => cut(c, /\n {4}if \(workgroupUniformLoad\(&flags\[0\]\)[\s\S]*?flags\[0\] = 0u; \}\n {4}\}/, 'rescale'),
};
edits['products only (no softmax, no global loads)'] = (c) => edits['no global K/V loads'](edits['no softmax (P not written)'](c));

async function time(label, code, blockBuf = bufs[7]) {
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code });
  const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error');
  if (errors.length) return console.log(`${label}: compile error ${errors[0].lineNum}: ${errors[0].message}`);
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [...bufs.slice(0, 7), blockBuf].map((b, i) => ({ binding: i, resource: { buffer: b } })) });
  const once = async (n) => {
    const enc = device.createCommandEncoder();
    for (let i = 0; i < n; i++) {
      const pass = enc.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bind);
      pass.dispatchWorkgroups(T, H * (G / 16), 1);
      pass.end();
    }
    const t0 = performance.now();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    return (performance.now() - t0) / n;
  };
  await once(2);
  const ms = [await once(5), await once(5), await once(5)].sort((a, b) => a - b)[1];
  const err = await device.popErrorScope();
  console.log(`| ${label} | ${err ? `validation: ${err.message}` : ms.toFixed(3)} |`);
}

console.log(`selected branch alone: T = ${T} tokens at ${P0}..${NK - 1}, H = ${H}, G = ${G}, D = ${D}, ${nSel} blocks of ${selBlock}`);
console.log('| variant | ms per dispatch |\n|---|---:|');
for (const KT of [32, 64]) {
  const base = matrixSelectedShader({ e: 'f16', G, DK: D, DV: D, KT, nSel, selBlock, TAU: 8, emulate: false });
  await time(`KT ${KT}`, base);
  await time(`KT ${KT}, blocks at fixed distances (shared by 64 tokens)`, base, storage(shared));
  for (const [name, edit] of Object.entries(edits)) await time(`KT ${KT}, ${name}`, edit(base));
}
device.destroy();
