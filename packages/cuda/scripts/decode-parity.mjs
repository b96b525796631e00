#!/usr/bin/env node
/* global console, process */
// Parity of the NSA decode paths against the float64 reference, decode only (no training pass):
// the register-layout decode (16-bit, G = 16, D 64/128: nsa_decode_mma.cu) and, for float32 and
// G = 4, the general split-K decode. Per case: decode steps over a cache (B > 1, several query
// rows per step, rows before the first compressed block, chunks of several tiles), the output
// against the reference fed this backend's block choice, the block choice against the reference's
// own, caller-supplied blockIndices (echo + output), and a bit-equal repeat of every step; at the
// end a digest of every output (equal in two processes = bit-equal runs).
//   node scripts/decode-parity.mjs [--only <name part>]
import { compressedCount, createNSAConfig } from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';
import { formatParity, nsaValues, randomBlockIndices, relativeError, tolerance } from '@nsa/test';
import { createCudaBackend } from '../dist/index.js';

const cuda = await createCudaBackend();
const ref = createReferenceBackend();
const small = { compressBlock: 16, compressStride: 8, selectBlock: 32, selectCount: 4, window: 64 };
const cases = [];
for (const dtype of ['bfloat16', 'float16']) {
  cases.push({ name: `small G=16 H=2 D=64 B=3 from 5 ${dtype}`, config: { ...small, heads: 32, kvHeads: 2, headDimK: 64, headDimV: 64 }, B: 3, T: 400, dtype, prefix: 5, steps: [1, 3, 8, 1, 20, 1, 2] });
  cases.push({ name: `l=32 d=8 l'=64 G=16 D=128 B=2 ${dtype}`, config: { compressBlock: 32, compressStride: 8, selectBlock: 64, selectCount: 8, window: 128, heads: 16, kvHeads: 1, headDimK: 128, headDimV: 128 }, B: 2, T: 1500, dtype, prefix: 1400, steps: [1, 4, 1] });
  cases.push({ name: `defaults G=16 D=128 B=1 T=8200 ${dtype}`, config: { heads: 16, kvHeads: 1, headDimK: 128, headDimV: 128 }, B: 1, T: 8200, dtype, prefix: 8190, steps: [1, 1, 5] });
  cases.push({ name: `multi-tile chunks G=16 D=64 T=9000 ${dtype}`, config: { ...small, selectCount: 8, window: 512, heads: 16, kvHeads: 1, headDimK: 64, headDimV: 64 }, B: 1, T: 9000, dtype, prefix: 8990, steps: [1, 2, 1] });
  cases.push({ name: `defaults HQ=64 H=4 D=128 B=2 ${dtype}`, config: { heads: 64, kvHeads: 4, headDimK: 128, headDimV: 128 }, B: 2, T: 2100, dtype, prefix: 2090, steps: [1, 3] });
  cases.push({ name: `supplied blockIndices G=16 D=128 B=2 ${dtype}`, config: { heads: 32, kvHeads: 2, headDimK: 128, headDimV: 128 }, B: 2, T: 3000, dtype, prefix: 2990, steps: [1, 2], supplied: true });
}
// 32 and 64 (query, KV head) pairs: the selected and window tokens come in chunks of 2 and 4 tiles.
// (Run the script again with NSA_DECODE_CMP_TILES=3 for compressed chunks of several tiles,
// NSA_DECODE_PDL=0 for unchained launches.)
cases.push({ name: 'defaults G=16 H=2 D=128 B=16 bfloat16', config: { heads: 32, kvHeads: 2, headDimK: 128, headDimV: 128 }, B: 16, T: 1100, dtype: 'bfloat16', prefix: 1090, steps: [1, 2] });
// A long cache (40 compressed tiles): the v8 selection's mass rows come in two batches per thread.
cases.push({ name: 'defaults G=16 D=128 B=1 T=40000 bfloat16', config: { heads: 16, kvHeads: 1, headDimK: 128, headDimV: 128 }, B: 1, T: 40000, dtype: 'bfloat16', prefix: 39990, steps: [1, 2] });
// The general split-K decode (float32; G = 4) on the same checks.
cases.push({ name: 'general path float32 G=16 D=128', config: { heads: 16, kvHeads: 1, headDimK: 128, headDimV: 128 }, B: 2, T: 2100, dtype: 'float32', prefix: 2090, steps: [1, 3] });
cases.push({ name: 'general path G=4 bfloat16', config: { ...small, heads: 8, kvHeads: 2, headDimK: 64, headDimV: 64 }, B: 2, T: 600, dtype: 'bfloat16', prefix: 500, steps: [1, 4], supplied: true });

// FNV-1a over every output this backend produced (inputs are seeded): equal digests from two
// processes = bit-equal runs.
let digest = 0x811c9dc5;
function addToDigest(values) {
  const bytes = new Uint8Array(Float64Array.from(values).buffer);
  for (let i = 0; i < bytes.length; i++) digest = Math.imul(digest ^ bytes[i], 0x01000193) >>> 0;
}

async function host(t) {
  return Float64Array.from(await t.read());
}

async function decodeCase(c) {
  const config = createNSAConfig(c.config);
  const { B, T, dtype, prefix, steps } = c;
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv, selectCount: n } = config;
  const v = nsaValues(config, B, T, dtype, 1);
  const C = compressedCount(T, config);
  const supplied = c.supplied ? randomBlockIndices(config, B, T, 2) : undefined;
  const made = [];
  const keep = (x) => (made.push(x), x);
  const slice = (x, from, to, width, rows = T) => {
    const out = new Float64Array(B * (to - from) * width);
    for (let b = 0; b < B; b++) out.set(x.subarray((b * rows + from) * width, (b * rows + to) * width), b * (to - from) * width);
    return out;
  };
  const caches = [
    { backend: cuda, dt: dtype, cache: keep(cuda.createNSACache({ config, batch: B, dtype, capacity: T })) },
    { backend: ref, dt: 'float64', cache: keep(ref.createNSACache({ config, batch: B, dtype: 'float64', capacity: T })) },
  ];
  let length = 0, compressed = 0;
  const grow = async (to) => {
    const cTo = compressedCount(to, config);
    for (const { backend, cache, dt } of caches) {
      const t = (x, w) => keep(backend.tensor(x, [B, to - length, H, w], dt));
      await cache.append({ kSlc: t(slice(v.kSlc, length, to, H * Dk), Dk), vSlc: t(slice(v.vSlc, length, to, H * Dv), Dv), kWin: t(slice(v.kWin, length, to, H * Dk), Dk), vWin: t(slice(v.vWin, length, to, H * Dv), Dv) });
      if (cTo > compressed) {
        const tc = (x, w) => keep(backend.tensor(slice(x, compressed, cTo, H * w, C), [B, cTo - compressed, H, w], dt));
        await cache.appendCompressed({ kCmp: tc(v.kCmp, Dk), vCmp: tc(v.vCmp, Dv) });
      }
    }
    length = to;
    compressed = cTo;
  };
  let worst = 0, differ = 0, rowsSeen = 0, echo = true, repeat = true;
  try {
    await grow(prefix);
    for (const step of steps) {
      if (length + step > T) break;
      const from = length;
      await grow(length + step);
      const q = slice(v.q, from, length, HQ * Dk), gates = slice(v.gates, from, length, HQ * 3);
      const idx = supplied && Int32Array.from(slice(Float64Array.from(supplied), from, length, H * n));
      const args = (backend, dt) => ({
        q: keep(backend.tensor(q, [B, step, HQ, Dk], dt)),
        gates: keep(backend.tensor(gates, [B, step, HQ, 3], dt)),
      });
      const mineArgs = { cache: caches[0].cache, ...args(cuda, dtype), ...(idx ? { blockIndices: keep(cuda.tensor(idx, [B, step, H, n], 'int32')) } : {}) };
      const mine = keep(await cuda.nsaDecode(mineArgs));
      const again = keep(await cuda.nsaDecode(mineArgs));
      const chosen = await mine.blockIndices.read();
      const out = await mine.output.read(), out2 = await again.output.read(), chosen2 = await again.blockIndices.read();
      repeat &&= out.every((x, i) => Object.is(x, out2[i])) && chosen.every((x, i) => x === chosen2[i]);
      addToDigest(out);
      addToDigest(chosen);
      if (idx) echo &&= chosen.every((x, i) => x === idx[i]);
      const rArgs = args(ref, 'float64');
      const theirs = keep(await ref.nsaDecode({ cache: caches[1].cache, ...rArgs, blockIndices: keep(ref.tensor(chosen, [B, step, H, n], 'int32')) }));
      worst = Math.max(worst, relativeError(Float64Array.from(out), await host(theirs.output)));
      if (!idx) {
        const own = keep(await ref.nsaDecode({ cache: caches[1].cache, ...rArgs }));
        const refChoice = await own.blockIndices.read();
        for (let r = 0; r < B * step * H; r++) {
          rowsSeen++;
          for (let k = 0; k < n; k++) if (chosen[r * n + k] !== refChoice[r * n + k]) { differ++; break; }
        }
      }
    }
  } finally {
    for (const x of made.reverse()) x?.dispose?.();
  }
  const tol = tolerance(dtype);
  const rows = [{ case: c.name, quantity: `decode output (${steps.length} steps from ${prefix})`, error: worst, tolerance: tol, ok: worst < tol }];
  if (c.supplied) rows.push({ case: c.name, quantity: 'blockIndices echo', error: echo ? 0 : Infinity, tolerance: tol, ok: echo });
  else rows.push({ case: c.name, quantity: `selection (${differ}/${rowsSeen} rows differ from the reference's own)`, error: differ, tolerance: 1, ok: differ === 0 });
  rows.push({ case: c.name, quantity: 'repeat bit-equal', error: repeat ? 0 : Infinity, tolerance: 1, ok: repeat });
  return rows;
}

const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : '';
const rows = [];
for (const c of cases.filter((x) => x.name.includes(only))) {
  try {
    rows.push(...(await decodeCase(c)));
  } catch (error) {
    rows.push({ case: c.name, quantity: `error: ${error.message}`, error: Infinity, tolerance: 0, ok: false });
  }
  console.error(`${c.name} done`);
}
console.log(formatParity(rows));
const failed = rows.filter((r) => !r.ok).length;
console.log(`\n${rows.length - failed} passed, ${failed} failed; output digest ${digest.toString(16)}`);
process.exitCode = failed ? 1 : 0;
