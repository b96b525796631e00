#!/usr/bin/env node
/* global console, process */
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
// The register-resident 16-bit forward (G = 16, D 64/128): varlen, B > 1, two KV heads, supplied
// blockIndices, small blocks (l != 2d) and a sequence shorter than the first compressed block.
for (const dtype of ['bfloat16', 'float16']) {
  cases.push({ name: `reg G=16 varlen D=64 ${dtype}`, config: { ...small, heads: 16, kvHeads: 1, headDimK: 64, headDimV: 64 }, B: 1, T: 1000, cuSeqlens: [0, 300, 301, 310, 1000], dtype });
  cases.push({ name: `reg G=16 H=2 B=2 D=128 ${dtype}`, config: { heads: 32, kvHeads: 2, headDimK: 128, headDimV: 128 }, B: 2, T: 700, dtype });
  cases.push({ name: `reg G=16 defaults T=2000 D=64 ${dtype}`, config: { heads: 16, kvHeads: 1, headDimK: 64, headDimV: 64 }, B: 1, T: 2000, dtype });
  cases.push({ name: `reg G=16 supplied blockIndices D=128 ${dtype}`, config: { ...small, heads: 16, kvHeads: 1, headDimK: 128, headDimV: 128 }, B: 1, T: 500, dtype, suppliedBlockIndices: true });
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
// Dense cases: head dim 256 (general path), and prefill shapes of the register-resident 16-bit
// forward (D = 128, GQA 16, queries after a cached prefix whose length is no multiple of 64).
const denseCases = [];
for (const dtype of ['float32', 'bfloat16']) {
  denseCases.push({ name: `dense Dk=256 Dv=256 G=8 ${dtype}`, B: 1, TQ: 200, Tk: 200, heads: 8, kvHeads: 1, Dk: 256, Dv: 256, dtype });
}
for (const dtype of ['bfloat16', 'float16']) {
  denseCases.push({ name: `dense prefill D=128 G=16 ${dtype}`, B: 1, TQ: 700, Tk: 700, heads: 16, kvHeads: 1, Dk: 128, Dv: 128, dtype });
  denseCases.push({ name: `dense prefill D=128 after cache ${dtype}`, B: 2, TQ: 200, Tk: 650, heads: 8, kvHeads: 2, Dk: 128, Dv: 128, dtype });
  denseCases.push({ name: `dense prefill D=64 after cache ${dtype}`, B: 1, TQ: 130, Tk: 333, heads: 4, kvHeads: 4, Dk: 64, Dv: 64, dtype });
}
for (const c of denseCases.filter((x) => x.name.includes(only))) {
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
