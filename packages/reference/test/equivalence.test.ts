import { describe, expect, it } from 'vitest';
import { addSelectionScores, attentionForwardHost, nsaBackwardHost, nsaForwardHost, type NSAHostInputs } from '../src/index.js';
import { createNSAConfig, varlenLayout } from '@nsa/core';
import { maxRelError, randomInputs, smallConfig } from './fixtures.js';
import { randomArray, seededRandom } from './random.js';

/** Rows [from, to) of a [1, T, ...] array. */
function slice(a: Float64Array, T: number, from: number, to: number): Float64Array {
  const width = a.length / T;
  return a.slice(from * width, to * width);
}

function onlyGate(x: NSAHostInputs, branch: number): NSAHostInputs {
  const gates = new Float64Array(x.gates.length);
  for (let i = branch; i < gates.length; i += 3) gates[i] = 1;
  return { ...x, gates };
}

describe('consistency', () => {
  it('B > 1 equals running each row alone (forward and backward)', () => {
    const config = smallConfig();
    const B = 3;
    const T = 35;
    const x = randomInputs(config, B, T, 31);
    const all = nsaForwardHost(x, config, { B, T });
    const dOut = randomArray(seededRandom(2), all.output.length);
    const gAll = nsaBackwardHost(x, config, { B, T, blockIndices: all.blockIndices, lse: all.lse, dOutput: dOut });
    for (let b = 0; b < B; b++) {
      const pick = (a: Float64Array) => a.slice((b * a.length) / B, ((b + 1) * a.length) / B);
      const one: NSAHostInputs = {
        q: pick(x.q), kCmp: pick(x.kCmp), vCmp: pick(x.vCmp), kSlc: pick(x.kSlc), vSlc: pick(x.vSlc),
        kWin: pick(x.kWin), vWin: pick(x.vWin), gates: pick(x.gates),
      };
      const r = nsaForwardHost(one, config, { B: 1, T });
      expect(r.output).toEqual(all.output.slice((b * all.output.length) / B, ((b + 1) * all.output.length) / B));
      expect(r.blockIndices).toEqual(all.blockIndices.slice((b * all.blockIndices.length) / B, ((b + 1) * all.blockIndices.length) / B));
      const g = nsaBackwardHost(one, config, { B: 1, T, blockIndices: r.blockIndices, dOutput: pick(dOut) });
      expect(g.dkCmp).toEqual(pick(gAll.dkCmp));
      expect(g.dq).toEqual(pick(gAll.dq));
    }
  });

  it('varlen equals running each sequence alone (forward and backward)', () => {
    const config = smallConfig();
    const cu = [0, 7, 40, 40, 73];
    const T = 73;
    const x = randomInputs(config, 1, T, 41, cu);
    const all = nsaForwardHost(x, config, { B: 1, T, cuSeqlens: cu });
    const dOut = randomArray(seededRandom(3), all.output.length);
    const gAll = nsaBackwardHost(x, config, { B: 1, T, cuSeqlens: cu, blockIndices: all.blockIndices, dOutput: dOut });
    const { compressedOffsets } = varlenLayout(cu, T, config);
    const C = compressedOffsets[compressedOffsets.length - 1];
    for (let s = 0; s + 1 < cu.length; s++) {
      const [a, b] = [cu[s], cu[s + 1]];
      const [ca, cb] = [compressedOffsets[s], compressedOffsets[s + 1]];
      const one: NSAHostInputs = {
        q: slice(x.q, T, a, b), kCmp: slice(x.kCmp, C, ca, cb), vCmp: slice(x.vCmp, C, ca, cb),
        kSlc: slice(x.kSlc, T, a, b), vSlc: slice(x.vSlc, T, a, b), kWin: slice(x.kWin, T, a, b),
        vWin: slice(x.vWin, T, a, b), gates: slice(x.gates, T, a, b),
      };
      const r = nsaForwardHost(one, config, { B: 1, T: b - a });
      expect(r.output).toEqual(slice(all.output, T, a, b));
      const g = nsaBackwardHost(one, config, { B: 1, T: b - a, blockIndices: r.blockIndices, dOutput: slice(dOut, T, a, b) });
      expect(g.dkSlc).toEqual(slice(gAll.dkSlc, T, a, b));
      expect(g.dvCmp).toEqual(slice(gAll.dvCmp, C, ca, cb));
      expect(g.dGates).toEqual(slice(gAll.dGates, T, a, b));
    }
  });

  it('with w >= T the window branch is plain causal attention', () => {
    const config = smallConfig({ window: 64 });
    const T = 50;
    const x = onlyGate(randomInputs(config, 2, T, 51), 2);
    const got = nsaForwardHost(x, config, { B: 2, T }).output;
    const dims = { B: 2, TQ: T, Tk: T, HQ: config.heads, H: config.kvHeads, Dk: config.headDimK, Dv: config.headDimV };
    const want = attentionForwardHost(x.q, x.kWin, x.vWin, dims).output;
    expect(maxRelError(got, want)).toBeLessThan(1e-13);
  });

  it('with n covering every block the selection branch is plain causal attention', () => {
    const config = smallConfig({ selectCount: 4 });
    const T = 64;
    const x = onlyGate(randomInputs(config, 1, T, 61), 1);
    const got = nsaForwardHost(x, config, { B: 1, T }).output;
    const dims = { B: 1, TQ: T, Tk: T, HQ: config.heads, H: config.kvHeads, Dk: config.headDimK, Dv: config.headDimV };
    const want = attentionForwardHost(x.q, x.kSlc, x.vSlc, dims).output;
    expect(maxRelError(got, want)).toBeLessThan(1e-13);
  });

  it('with l = l\' = d the selection scores equal the compressed probabilities', () => {
    const config = createNSAConfig({ compressBlock: 4, compressStride: 4, selectBlock: 4 });
    const p = randomArray(seededRandom(9), 13, 0, 1);
    const s = new Float64Array(13);
    addSelectionScores(p, 0, 13, config, s);
    expect(s).toEqual(p);
  });

  it('the selection scores are the geometric overlap: l 8, d 4, l\' 16', () => {
    // Compressed block i covers sub-blocks i, i+1; selection block j covers 4j .. 4j+3.
    const config = createNSAConfig({ compressBlock: 8, compressStride: 4, selectBlock: 16 });
    const p = Float64Array.from([1, 2, 4, 8, 16, 32], (v) => v / 64);
    const s = new Float64Array(2);
    addSelectionScores(p, 0, 6, config, s);
    // j=0: blocks 0,1,2 fully (2 sub-blocks each), block 3 half (sub-block 3) -> 2+4+8 + 8 = ...
    expect(s[0] * 64).toBe(2 * 1 + 2 * 2 + 2 * 4 + 1 * 8);
    expect(s[1] * 64).toBe(1 * 8 + 2 * 16 + 2 * 32);
  });
});
