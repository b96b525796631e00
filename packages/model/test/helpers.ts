import { SeededRandom, type Tensor } from '@nsa/core';
import { createReferenceBackend } from '@nsa/reference';

export const backend = createReferenceBackend();

export function randomTensor(shape: number[], seed: number, std = 1): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  return backend.tensor(new SeededRandom(seed).normals(size, std), shape, 'float64');
}

export async function host(t: Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.read());
}

export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-300);
}

/**
 * Central finite differences of a scalar function of `x`'s values, at up to `maxChecks` evenly
 * spread coordinates (all when omitted).
 */
export async function numericGradient(
  x: Float64Array,
  f: (values: Float64Array) => Promise<number>,
  indices: number[],
  h = 1e-5,
): Promise<number[]> {
  const out: number[] = [];
  for (const i of indices) {
    const saved = x[i];
    x[i] = saved + h;
    const up = await f(x);
    x[i] = saved - h;
    const down = await f(x);
    x[i] = saved;
    out.push((up - down) / (2 * h));
  }
  return out;
}

export function spread(size: number, count: number): number[] {
  if (size <= count) return Array.from({ length: size }, (_, i) => i);
  return Array.from({ length: count }, (_, i) => Math.floor(((i + 0.5) * size) / count));
}
