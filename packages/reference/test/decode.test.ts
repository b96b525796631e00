import { compressedCount, type NSAConfig } from '@nsa/core';
import { describe, expect, it } from 'vitest';
import { createReferenceBackend, nsaForwardHost, type NSAHostInputs, type ReferenceBackend } from '../src/index.js';
import { maxRelError, randomInputs, smallConfig } from './fixtures.js';

/** Rows [from, to) of a [B, T, ...rest] array as a new [B, to - from, ...rest] array. */
function rows(a: Float64Array, B: number, T: number, from: number, to: number): Float64Array {
  const width = a.length / (B * T);
  const out = new Float64Array(B * (to - from) * width);
  for (let b = 0; b < B; b++) out.set(a.subarray((b * T + from) * width, (b * T + to) * width), b * (to - from) * width);
  return out;
}

/** Decodes the whole sequence in chunks of the given sizes; returns the outputs and blocks, concatenated per row. */
async function decodeInChunks(be: ReferenceBackend, x: NSAHostInputs, config: NSAConfig, B: number, T: number, chunks: number[]) {
  const { kvHeads: H, headDimK: Dk, headDimV: Dv, heads: HQ } = config;
  const C = compressedCount(T, config);
  const cache = be.createNSACache({ config, batch: B, dtype: 'float64', capacity: T });
  const outs: Float64Array[] = [];
  const blocks: Int32Array[] = [];
  let at = 0;
  for (const size of chunks) {
    const to = at + size;
    const tensor = (a: Float64Array, n: number, from: number, end: number, D: number, heads = H) =>
      be.tensor(rows(a, B, n, from, end), [B, end - from, heads, D], 'float64');
    await cache.append({
      kSlc: tensor(x.kSlc, T, at, to, Dk),
      vSlc: tensor(x.vSlc, T, at, to, Dv),
      kWin: tensor(x.kWin, T, at, to, Dk),
      vWin: tensor(x.vWin, T, at, to, Dv),
    });
    const c0 = cache.compressedLength;
    const c1 = compressedCount(to, config);
    if (c1 > c0) await cache.appendCompressed({ kCmp: tensor(x.kCmp, C, c0, c1, Dk), vCmp: tensor(x.vCmp, C, c0, c1, Dv) });
    const result = await be.nsaDecode({
      cache,
      q: tensor(x.q, T, at, to, Dk, HQ),
      gates: tensor(x.gates, T, at, to, 3, HQ),
    });
    outs.push((await result.output.read()) as Float64Array);
    blocks.push((await result.blockIndices.read()) as Int32Array);
    at = to;
  }
  return { outs, blocks };
}

describe('decoding equals the full-sequence forward', () => {
  const config = smallConfig();
  const B = 2;
  const T = 45;
  const x = randomInputs(config, B, T, 21);
  const full = nsaForwardHost(x, config, { B, T });

  for (const [name, chunks] of [
    ['token by token', Array.from({ length: T }, () => 1)],
    ['prefill 20 then chunks of 3, 1, 7, ...', [20, 3, 1, 7, 2, 9, 3]],
    ['one prefill of everything', [T]],
  ] as const) {
    it(name, async () => {
      const be = createReferenceBackend();
      const { outs, blocks } = await decodeInChunks(be, x, config, B, T, [...chunks]);
      let at = 0;
      for (let k = 0; k < chunks.length; k++) {
        const to = at + chunks[k];
        expect(maxRelError(outs[k], rows(full.output, B, T, at, to))).toBeLessThan(1e-12);
        expect(blocks[k]).toEqual(new Int32Array(rows(Float64Array.from(full.blockIndices), B, T, at, to)));
        at = to;
      }
    });
  }

  it('accepts caller blockIndices in a decode step', async () => {
    const be = createReferenceBackend();
    const cache = be.createNSACache({ config, batch: 1, dtype: 'float64', capacity: 40 });
    const one = randomInputs(config, 1, 40, 4);
    const C = compressedCount(40, config);
    const { kvHeads: H, headDimK: Dk, headDimV: Dv, heads: HQ } = config;
    await cache.append({
      kSlc: be.tensor(one.kSlc, [1, 40, H, Dk], 'float64'),
      vSlc: be.tensor(one.vSlc, [1, 40, H, Dv], 'float64'),
      kWin: be.tensor(one.kWin, [1, 40, H, Dk], 'float64'),
      vWin: be.tensor(one.vWin, [1, 40, H, Dv], 'float64'),
    });
    await cache.appendCompressed({ kCmp: be.tensor(one.kCmp, [1, C, H, Dk], 'float64'), vCmp: be.tensor(one.vCmp, [1, C, H, Dv], 'float64') });
    const blocks = new Int32Array(H * 3).fill(-1);
    blocks[0] = 1;
    blocks[3] = 0;
    blocks[4] = 2;
    const res = await be.nsaDecode({
      cache,
      q: be.tensor(rows(one.q, 1, 40, 39, 40), [1, 1, HQ, Dk], 'float64'),
      gates: be.tensor(rows(one.gates, 1, 40, 39, 40), [1, 1, HQ, 3], 'float64'),
      blockIndices: be.tensor(blocks, [1, 1, H, 3], 'int32'),
    });
    const want = nsaForwardHost(one, config, {
      B: 1,
      T: 40,
      blockIndices: (() => {
        const all = nsaForwardHost(one, config, { B: 1, T: 40 }).blockIndices;
        all.set(blocks, 39 * H * 3);
        return all;
      })(),
    });
    expect(maxRelError((await res.output.read()) as Float64Array, rows(want.output, 1, 40, 39, 40))).toBeLessThan(1e-12);
    expect(await res.blockIndices.read()).toEqual(blocks);
  });
});
