import type { TransformerLM } from '../model.js';
import { streamOf } from '../util/seed.js';
import { needleExample, NEEDLE_VALUE_DIGITS } from './needle.js';

/**
 * Retrieval accuracy at one (context length, depth): the share of examples whose value the model
 * reproduces exactly by greedy decoding after the question (each digit fed back, not the truth).
 */
export async function needleAccuracy(model: TransformerLM, length: number, depth: number, examples: number, seed: number): Promise<number> {
  const rng = streamOf(seed, length, Math.round(depth * 1000));
  const cases = Array.from({ length: examples }, () => needleExample(rng, length, depth));
  const V = model.config.vocabSize;
  const prompts = cases.map((c) => c.tokens.slice(0, c.answerStart));
  const correct = new Array<boolean>(examples).fill(true);
  for (let digit = 0; digit < NEEDLE_VALUE_DIGITS; digit++) {
    const T = prompts[0].length;
    const ids = Int32Array.from(prompts.flat());
    const lastRows = Int32Array.from({ length: examples }, (_, b) => b * T + T - 1);
    const logits = await model.logits(ids, examples, T, lastRows);
    for (let b = 0; b < examples; b++) {
      const row = b * V;
      let best = 0;
      for (let v = 1; v < V; v++) if (logits[row + v] > logits[row + best]) best = v;
      if (best !== cases[b].answer[digit]) correct[b] = false;
      prompts[b].push(best);
    }
  }
  return correct.filter(Boolean).length / examples;
}
