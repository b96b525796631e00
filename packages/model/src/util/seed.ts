import { SeededRandom } from '@nsa/core';

/** A seed for an independent sub-stream: the same seed and keys always give the same stream. */
export function deriveSeed(seed: number, ...keys: number[]): number {
  let h = (seed >>> 0) ^ 0x811c9dc5;
  for (const k of keys) {
    h = Math.imul(h ^ (k >>> 0), 0x01000193);
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
    h ^= h >>> 12;
  }
  return h >>> 0;
}

/** A generator for the sub-stream (seed, ...keys). */
export function streamOf(seed: number, ...keys: number[]): SeededRandom {
  return new SeededRandom(deriveSeed(seed, ...keys));
}
