#!/usr/bin/env node
/* global process, console, GPUBufferUsage, GPUMapMode */
// The GPU time of k dependent dispatches of a trivial kernel in one timed compute pass (each
// dispatch reads and writes the buffer the previous one wrote, so Dawn puts a barrier between them):
// the per-dispatch floor under the decode step's four dispatches.
//   node bench/dispatch-floor.mjs [--groups 1,128,576] [--k 1,2,4,8] [--reps 50]
import { nodeGPU } from '@nsa/webgpu';

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const groupsList = option('groups', '1,128,576').split(',').map(Number);
const ks = option('k', '1,2,4,8').split(',').map(Number);
const reps = Number(option('reps', '50'));

const gpu = await nodeGPU();
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
if (!adapter.features.has('timestamp-query')) {
  console.log('no timestamp-query');
  process.exit(0);
}
const device = await adapter.requestDevice({ requiredFeatures: ['timestamp-query'] });
const code = `@group(0) @binding(0) var<storage, read_write> buf: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  buf[id.x] = buf[id.x] * 0.5 + 1.0;
}`;
const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
const maxGroups = Math.max(...groupsList);
const buf = device.createBuffer({ size: maxGroups * 256 * 4, usage: GPUBufferUsage.STORAGE });
const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: buf } }] });
const set = device.createQuerySet({ type: 'timestamp', count: 2 });
const resolve = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
const read = device.createBuffer({ size: 16, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });

async function time(groups, k) {
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass({ timestampWrites: { querySet: set, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bind);
  for (let i = 0; i < k; i++) pass.dispatchWorkgroups(groups);
  pass.end();
  enc.resolveQuerySet(set, 0, 2, resolve, 0);
  enc.copyBufferToBuffer(resolve, 0, read, 0, 16);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const [t0, t1] = new BigUint64Array(read.getMappedRange().slice(0));
  read.unmap();
  return Number(t1 - t0) / 1e6;
}

console.log(`${adapter.info?.vendor ?? ''} ${adapter.info?.device ?? ''}: trivial kernel, 256 invocations a workgroup, one timed pass (median of ${reps}, ms)`);
console.log(`| workgroups | ${ks.map((k) => `${k} dispatch${k > 1 ? 'es' : ''}`).join(' | ')} |`);
console.log(`|---:|${ks.map(() => '---:').join('|')}|`);
for (const groups of groupsList) {
  const cells = [];
  for (const k of ks) {
    await time(groups, k);
    const t = [];
    for (let r = 0; r < reps; r++) t.push(await time(groups, k));
    t.sort((a, b) => a - b);
    cells.push(t[Math.floor(reps / 2)].toFixed(4));
  }
  console.log(`| ${groups} | ${cells.join(' | ')} |`);
}
device.destroy();
