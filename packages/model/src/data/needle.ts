import { NSAConfigError, type SeededRandom } from '@nsa/core';
import type { Batch } from '../train/trainer.js';

const code = (s: string): number => s.charCodeAt(0);
const FILLER = 'abcdefghijklmnopqrstuvwxyz    ';
/** Digits of the hidden value. */
export const NEEDLE_VALUE_DIGITS = 2;

/**
 * One needle-in-a-haystack example in bytes: filler of lowercase letters and spaces, with the
 * needle `K=DD;` (K an uppercase key, DD a random value) at a chosen depth, then the question
 * `?K=` and the answer `DD`. Keys and digits never occur in the filler, so the value can only
 * come from the needle.
 */
export interface NeedleExample {
  /** The whole sequence: context + question + answer, `length + 1` tokens. */
  readonly tokens: number[];
  /** Index of the first answer token in `tokens`. */
  readonly answerStart: number;
  readonly answer: number[];
  /** Where the needle starts in the sequence. */
  readonly needleAt: number;
}

/**
 * `length` is the context the model reads (tokens before the last one); `depth` in [0, 1] puts
 * the needle at the start (0) or end (1) of the filler.
 */
export function needleExample(rng: SeededRandom, length: number, depth: number): NeedleExample {
  const key = 65 + rng.int(26);
  const value = Array.from({ length: NEEDLE_VALUE_DIGITS }, () => 48 + rng.int(10));
  const needle = [key, code('='), ...value, code(';')];
  const question = [code('?'), key, code('=')];
  const fillerLength = length + 1 - needle.length - question.length - value.length;
  if (fillerLength < 0) throw new NSAConfigError('length', length, `is too short for a needle example (need >= ${length - fillerLength})`);
  if (!(depth >= 0 && depth <= 1)) throw new NSAConfigError('depth', depth, 'must be in [0, 1]');
  const filler = Array.from({ length: fillerLength }, () => code(FILLER[rng.int(FILLER.length)]));
  const needleAt = Math.round(depth * fillerLength);
  const tokens = [...filler.slice(0, needleAt), ...needle, ...filler.slice(needleAt), ...question, ...value];
  return { tokens, answerStart: tokens.length - value.length, answer: value, needleAt };
}

/**
 * A training batch of needle examples of context `length` at random depths. Only the answer
 * tokens are targets: the filler is random and carries nothing to learn.
 */
export function needleBatch(rng: SeededRandom, batchSize: number, length: number): Batch {
  const T = length;
  const ids = new Int32Array(batchSize * T);
  const targets = new Int32Array(batchSize * T).fill(-1);
  for (let b = 0; b < batchSize; b++) {
    // The two ends (needle first, or right before the question) are their own cases: give each
    // 1/8 of the examples rather than the vanishing share a uniform depth would.
    const r = rng.uniform();
    const ex = needleExample(rng, length, r < 0.125 ? 0 : r < 0.25 ? 1 : rng.uniform());
    for (let t = 0; t < T; t++) ids[b * T + t] = ex.tokens[t];
    for (let i = 0; i < ex.answer.length; i++) targets[b * T + ex.answerStart - 1 + i] = ex.answer[i];
  }
  return { ids, targets, B: batchSize, T };
}
