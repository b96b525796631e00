#!/usr/bin/env node
/* global console, process */
// The key blocks' 4-row stage boxes (NSA_BWD_KEY_TMA4): one NSA forward, then its backward with the
// default (boxes wherever a stage's 4 rows are consecutive, selected stages included), with =1 (window
// and compressed stages only) and =0 (one copy per row); every gradient must be bit-equal, in 64-key
// tiles and with NSA_BWD_WIDE_KEYS=1. Paper defaults (the forced initial and local blocks give the
// selected lists runs of consecutive rows), G = 16, two KV heads, T = 2048 and 3000 (two sequences),
// bfloat16 and float16. A short subset of key-variants.mjs. Plain Node over dist/:   node scripts/key-boxes.mjs
import { createNSAConfig } from '@nsa/core';
import { createCudaBackend } from '../dist/index.js';
import { differingGradients, gradientsUnder, randomProblem } from './gradient-variants.mjs';

const backend = await createCudaBackend();
const H = 2, HQ = 16 * H, D = 128;
const config = createNSAConfig({ heads: HQ, kvHeads: H, headDimK: D, headDimV: D });
const keys = ['NSA_BWD_WIDE_KEYS', 'NSA_BWD_KEY_TMA4'];
let failed = false;
for (const dtype of ['bfloat16', 'float16']) {
  for (const [B, T] of [[1, 2048], [2, 3000]]) {
    const { inputs, forward, dOutput } = await randomProblem(backend, config, B, T, dtype, 17 + T);
    for (const shape of [{}, { NSA_BWD_WIDE_KEYS: '1' }]) {
      const base = await gradientsUnder(backend, { config, ...inputs, forward, dOutput }, shape, keys);
      for (const v of [{ NSA_BWD_KEY_TMA4: '1' }, { NSA_BWD_KEY_TMA4: '0' }]) {
        const got = await gradientsUnder(backend, { config, ...inputs, forward, dOutput }, { ...shape, ...v }, keys);
        const differs = differingGradients(base, got);
        if (differs.length) failed = true;
        console.log(`${dtype} B=${B} T=${T} ${JSON.stringify({ ...shape, ...v })}: ${differs.length ? `differs in ${differs.join(', ')} (NOT EXPECTED)` : 'all gradients bit-equal'} to ${JSON.stringify(shape)}`);
      }
    }
    forward.dispose();
  }
}
console.log(failed ? 'key boxes: FAILED' : 'key boxes: as expected');
process.exitCode = failed ? 1 : 0;
