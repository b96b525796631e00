#!/usr/bin/env node
/* global console, process */
// One NSA forward, then its backward under each key-block switch (the backward reads them on every
// call), every gradient compared bit for bit with the default's of the same tile shape (64-key
// tiles, then NSA_BWD_WIDE_KEYS=1: 128-key compressed and window tiles). NSA_BWD_KEY_PREFETCH=0 only
// moves when a stage's rows are read, NSA_BWD_KEY_SKIP=1 skips products that add exact zeros,
// NSA_BWD_KEY_RING=3 (128-key tiles; with the Early loop where the stage copies run by TMA) only deepens the copies, NSA_BWD_KEY_EARLY=0/1 only
// moves a stage's score products before the next stage's copies, NSA_BWD_KEY_TMA=0 copies a stage's
// Q and dO rows with cp.async instead of the copy engine, NSA_BWD_KEY_TMA4=0 one copy per stage row
// instead of 4-row boxes (=1: boxes in window and compressed stages only): all must give bit-equal gradients.
// bfloat16, paper defaults, G = 16, two KV heads, T = 2048 and 3000 (two sequences in one batch).
// Plain Node over dist/:   node scripts/key-variants.mjs
import { createNSAConfig } from '@nsa/core';
import { createCudaBackend } from '../dist/index.js';
import { differingGradients, gradientsUnder, randomProblem } from './gradient-variants.mjs';

const backend = await createCudaBackend();
const H = 2, HQ = 16 * H, D = 128;
const config = createNSAConfig({ heads: HQ, kvHeads: H, headDimK: D, headDimV: D });
const keys = ['NSA_BWD_WIDE_KEYS', 'NSA_BWD_KEY_PREFETCH', 'NSA_BWD_KEY_SKIP', 'NSA_BWD_KEY_RING', 'NSA_BWD_KEY_EARLY', 'NSA_BWD_KEY_TMA', 'NSA_BWD_KEY_TMA4'];
// NSA_BWD_KEY_EARLY: 2 (default) the Early loop in the 128- and 64-key tiles, 1 the 128-key tiles only, 0 nowhere
// (v13's loop, where SKIP and RING apply).
const off = { NSA_BWD_KEY_EARLY: '0' };
const switches = [{}, { NSA_BWD_KEY_TMA4: '1' }, { NSA_BWD_KEY_TMA4: '0' }, { NSA_BWD_KEY_TMA: '0' }, { NSA_BWD_KEY_TMA: '0', NSA_BWD_KEY_PREFETCH: '0' }, { NSA_BWD_KEY_RING: '3' }, { NSA_BWD_KEY_PREFETCH: '0' }, { NSA_BWD_KEY_EARLY: '1' }, { NSA_BWD_KEY_EARLY: '1', NSA_BWD_KEY_PREFETCH: '0' }, off,
  { ...off, NSA_BWD_KEY_PREFETCH: '0' }, { ...off, NSA_BWD_KEY_SKIP: '1' }, { ...off, NSA_BWD_KEY_PREFETCH: '0', NSA_BWD_KEY_SKIP: '1' },
  { ...off, NSA_BWD_KEY_RING: '3' }, { ...off, NSA_BWD_KEY_RING: '3', NSA_BWD_KEY_PREFETCH: '0' }];
let failed = false;
for (const [B, T] of [[1, 2048], [2, 3000]]) {
  const { inputs, forward, dOutput } = await randomProblem(backend, config, B, T, 'bfloat16', 13 + T);
  for (const shape of [{}, { NSA_BWD_WIDE_KEYS: '1' }]) {
    let base = null;
    for (const v of switches) {
      const got = await gradientsUnder(backend, { config, ...inputs, forward, dOutput }, { ...shape, ...v }, keys);
      if (!base) {
        base = got;
        continue;
      }
      const differs = differingGradients(base, got);
      if (differs.length) failed = true;
      console.log(`B=${B} T=${T} ${JSON.stringify({ ...shape, ...v })}: ${differs.length ? `differs in ${differs.join(', ')} (NOT EXPECTED)` : 'all gradients bit-equal'} to ${JSON.stringify(shape)}`);
    }
  }
  forward.dispose();
}
console.log(failed ? 'key variants: FAILED' : 'key variants: as expected');
process.exitCode = failed ? 1 : 0;
