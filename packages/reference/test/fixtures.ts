// Random NSA inputs for tests, and comparison helpers.
import { compressedCount, createNSAConfig, varlenLayout, type NSAConfig, type NSAConfigInput } from '@nsa/core';
import type { NSAHostInputs } from '../src/index.js';
import { randomArray, seededRandom } from './random.js';

/** Small config for tests: l 8, d 4, l' 16, n 3, w 16 unless overridden. */
export function smallConfig(over: NSAConfigInput = {}): NSAConfig {
  return createNSAConfig({
    compressBlock: 8,
    compressStride: 4,
    selectBlock: 16,
    selectCount: 3,
    initialBlocks: 1,
    localBlocks: 1,
    window: 16,
    heads: 4,
    kvHeads: 2,
    headDimK: 6,
    headDimV: 5,
    ...over,
  });
}

/** Fresh random inputs; gates in (0.1, 0.9), q scaled up so softmaxes are not flat. */
export function randomInputs(config: NSAConfig, B: number, T: number, seed: number, cuSeqlens?: number[]): NSAHostInputs {
  const rand = seededRandom(seed);
  const { heads: HQ, kvHeads: H, headDimK: Dk, headDimV: Dv } = config;
  const C = cuSeqlens ? varlenLayout(cuSeqlens, T, config).compressedOffsets[cuSeqlens.length - 1] : compressedCount(T, config);
  return {
    q: randomArray(rand, B * T * HQ * Dk, -2, 2),
    kCmp: randomArray(rand, B * C * H * Dk),
    vCmp: randomArray(rand, B * C * H * Dv),
    kSlc: randomArray(rand, B * T * H * Dk),
    vSlc: randomArray(rand, B * T * H * Dv),
    kWin: randomArray(rand, B * T * H * Dk),
    vWin: randomArray(rand, B * T * H * Dv),
    gates: randomArray(rand, B * T * HQ * 3, 0.1, 0.9),
  };
}

/** max |a - b| / max(1e-300, max |b|). */
export function maxRelError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let err = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return err / Math.max(scale, 1e-300);
}

export function allFinite(a: ArrayLike<number>): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}
