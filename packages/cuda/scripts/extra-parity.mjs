#!/usr/bin/env node
// Parity cases beyond test/'s grid, through its exported harness (plain Node over dist/, for the
// GPU host): head dims 256 (and Dk != Dv), G = 64 and G = 128 (MQA), float32 and bfloat16, with
// decode steps.   node scripts/extra-parity.mjs
import { attentionParity, formatParity, nsaParity } from '@nsa/test';
import { createCudaBackend } from '../dist/index.js';

const backend = await createCudaBackend();
const small = { compressBlock: 16, compressStride: 8, selectBlock: 32, selectCount: 4, window: 64 };
const cases = [];
for (const dtype of ['float32', 'bfloat16']) {
  cases.push({ name: `Dk=256 Dv=256 G=16 ${dtype}`, config: { ...small, heads: 16, kvHeads: 1, headDimK: 256, headDimV: 256 }, B: 1, T: 300, dtype, decode: { prefix: 280, steps: [1, 3, 1] } });
  cases.push({ name: `Dk=256 Dv=64 G=4 ${dtype}`, config: { ...small, heads: 8, kvHeads: 2, headDimK: 256, headDimV: 64 }, B: 2, T: 200, dtype });
  cases.push({ name: `G=64 Dk=Dv=256 ${dtype}`, config: { ...small, heads: 64, kvHeads: 1, headDimK: 256, headDimV: 256 }, B: 1, T: 130, dtype, decode: { prefix: 120, steps: [1, 2] } });
  cases.push({ name: `G=128 MQA Dk=Dv=64 ${dtype}`, config: { ...small, heads: 128, kvHeads: 1, headDimK: 64, headDimV: 64 }, B: 1, T: 130, dtype, decode: { prefix: 120, steps: [1, 2] } });
}
// Long query lists: the backward splits compressed and selected key tiles seen by > 1024 queries.
for (const dtype of ['bfloat16', 'float16']) {
  cases.push({ name: `split key lists T=2600 ${dtype}`, config: { ...small, heads: 8, kvHeads: 2, headDimK: 64, headDimV: 64 }, B: 1, T: 2600, dtype });
}
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : '';
const rows = [];
for (const c of cases.filter((x) => x.name.includes(only))) {
  try {
    rows.push(...(await nsaParity(backend, c)));
  } catch (error) {
    rows.push({ case: c.name, quantity: `error: ${error.message}`, error: Infinity, tolerance: 0, ok: false });
  }
  console.error(`${c.name} done`);
}
for (const dtype of only ? [] : ['float32', 'bfloat16']) {
  const c = { name: `dense Dk=256 Dv=256 G=8 ${dtype}`, B: 1, TQ: 200, Tk: 200, heads: 8, kvHeads: 1, Dk: 256, Dv: 256, dtype };
  try {
    rows.push(...(await attentionParity(backend, c)));
  } catch (error) {
    rows.push({ case: c.name, quantity: `error: ${error.message}`, error: Infinity, tolerance: 0, ok: false });
  }
}
console.log(formatParity(rows));
const failed = rows.filter((r) => !r.ok).length;
console.log(`\n${rows.length - failed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
