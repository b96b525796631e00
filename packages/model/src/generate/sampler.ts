import { NSAConfigError } from '@nsa/core';
import type { SeededRandom } from '@nsa/core';

export interface SamplingOptions {
  /** 0 = greedy (argmax). Default 1. */
  readonly temperature?: number;
  /** Keep only the k most likely tokens (0 = all). */
  readonly topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1 = all). */
  readonly topP?: number;
}

export function checkSampling(options: SamplingOptions): void {
  const { temperature = 1, topK = 0, topP = 1 } = options;
  if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new NSAConfigError('temperature', temperature, 'must be a finite number >= 0');
  if (!Number.isInteger(topK) || topK < 0) throw new NSAConfigError('topK', topK, 'must be an integer >= 0');
  if (!(topP > 0 && topP <= 1)) throw new NSAConfigError('topP', topP, 'must be in (0, 1]');
}

/** The token index with the largest logit (lowest index on ties). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * The next-token distribution after temperature, top-k and top-p, as (token, probability) pairs
 * sorted by probability, descending; probabilities sum to 1.
 */
export function filteredDistribution(logits: ArrayLike<number>, options: SamplingOptions): { token: number; p: number }[] {
  const { temperature = 1, topK = 0, topP = 1 } = options;
  const order = Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
  const kept = topK > 0 ? order.slice(0, topK) : order;
  const max = logits[kept[0]];
  let weights = kept.map((i) => Math.exp((logits[i] - max) / temperature));
  let total = weights.reduce((a, b) => a + b, 0);
  let cut = kept.length;
  if (topP < 1) {
    let mass = 0;
    for (let i = 0; i < kept.length; i++) {
      mass += weights[i] / total;
      if (mass >= topP) {
        cut = i + 1;
        break;
      }
    }
  }
  weights = weights.slice(0, cut);
  total = weights.reduce((a, b) => a + b, 0);
  return weights.map((w, i) => ({ token: kept[i], p: w / total }));
}

/** Draws the next token. Temperature 0 is greedy. */
export function sampleToken(logits: ArrayLike<number>, options: SamplingOptions, rng: SeededRandom): number {
  if ((options.temperature ?? 1) === 0) return argmax(logits);
  const dist = filteredDistribution(logits, options);
  let u = rng.uniform();
  for (const { token, p } of dist) {
    u -= p;
    if (u < 0) return token;
  }
  return dist[dist.length - 1].token;
}
