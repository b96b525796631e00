import type { SeededRandom } from '@nsa/core';
import type { Batch } from '../train/trainer.js';

const SYLLABLES = ['ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'vi', 'so', 'pe', 'du', 'ga', 'hi'];

/**
 * A synthetic language with long-range structure, in bytes. A document opens by naming a few
 * characters (`@1=kalo @2=mine ...`); its sentences are Zipf-distributed words with nested,
 * balanced brackets, and they refer back to characters as `@1`, after which the name defined at
 * the top must be repeated. Predicting those names needs the header, however far back it is;
 * closing brackets need the nesting depth.
 */
export function syntheticDocument(rng: SeededRandom, length: number): number[] {
  const word = (n: number) => Array.from({ length: n }, () => SYLLABLES[rng.int(SYLLABLES.length)]).join('');
  const vocabulary = Array.from({ length: 40 }, () => word(1 + rng.int(2)));
  const names = Array.from({ length: 3 }, () => word(2));
  let text = names.map((n, i) => `@${i + 1}=${n}`).join(' ') + '.\n';
  let depth = 0;
  while (text.length < length) {
    const r = rng.uniform();
    if (r < 0.1) {
      const i = rng.int(names.length);
      text += `@${i + 1} ${names[i]} `;
    } else if (r < 0.16 && depth < 3) {
      text += '(';
      depth++;
    } else if (r < 0.22 && depth > 0) {
      text += ') ';
      depth--;
    } else {
      // Zipf-like: low indices are much more frequent.
      const index = Math.floor(vocabulary.length * rng.uniform() ** 2.5);
      text += vocabulary[index] + (rng.uniform() < 0.1 ? '. ' : ' ');
    }
  }
  return Array.from(text.slice(0, length), (c) => c.charCodeAt(0));
}

/** Next-token batch over synthetic documents: every position is a target. */
export function syntheticBatch(rng: SeededRandom, batchSize: number, T: number): Batch {
  const ids = new Int32Array(batchSize * T);
  const targets = new Int32Array(batchSize * T);
  for (let b = 0; b < batchSize; b++) {
    const doc = syntheticDocument(rng, T + 1);
    for (let t = 0; t < T; t++) {
      ids[b * T + t] = doc[t];
      targets[b * T + t] = doc[t + 1];
    }
  }
  return { ids, targets, B: batchSize, T };
}
