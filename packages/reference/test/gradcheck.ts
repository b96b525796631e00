// Central finite differences for gradient tests.
import { seededRandom } from './random.js';

/**
 * Compares `analytic` (dL/dx) with (L(x + eps) - L(x - eps)) / 2eps at `samples` random entries
 * of x (all entries if x is smaller); returns max |num - ana| / max |ana| over those entries.
 * `loss` must read x live (x is perturbed in place and restored).
 */
export function gradError(x: Float64Array, analytic: Float64Array, loss: () => number, samples = 40, seed = 1, eps = 1e-5): number {
  const rand = seededRandom(seed);
  const picks = x.length <= samples ? [...x.keys()] : Array.from({ length: samples }, () => Math.floor(rand() * x.length));
  let err = 0;
  let scale = 0;
  for (let i = 0; i < analytic.length; i++) scale = Math.max(scale, Math.abs(analytic[i]));
  for (const i of picks) {
    const keep = x[i];
    x[i] = keep + eps;
    const up = loss();
    x[i] = keep - eps;
    const down = loss();
    x[i] = keep;
    err = Math.max(err, Math.abs((up - down) / (2 * eps) - analytic[i]));
  }
  if (scale === 0) throw new Error('analytic gradient is all zeros: the check would prove nothing');
  return err / scale;
}

export function dotLoss(out: Float64Array, dOut: Float64Array): number {
  let s = 0;
  for (let i = 0; i < out.length; i++) s += out[i] * dOut[i];
  return s;
}
