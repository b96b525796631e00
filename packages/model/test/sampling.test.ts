import { SeededRandom } from '@nsa/core';
import { describe, expect, it } from 'vitest';
import { filteredDistribution, generate, sampleToken } from '../src/index.js';
import { tinyConfig, tinyModel } from './tiny.js';

const logits = [0, Math.log(2), Math.log(4), 0, -50];

describe('sampling', () => {
  it('temperature, top-k and top-p give the hand-computed distributions', () => {
    const all = filteredDistribution([0, Math.log(2), Math.log(4), 0], {});
    expect(all.map((d) => d.token)).toEqual([2, 1, 0, 3]);
    expect(all.map((d) => d.p)).toEqual([4 / 8, 2 / 8, 1 / 8, 1 / 8].map((p) => expect.closeTo(p, 12) as unknown as number));
    const k2 = filteredDistribution([0, Math.log(2), Math.log(4), 0], { topK: 2 });
    expect(k2.map((d) => [d.token, d.p])).toEqual([[2, expect.closeTo(2 / 3, 12)], [1, expect.closeTo(1 / 3, 12)]]);
    // top-p 0.7: 0.5 < 0.7 <= 0.75 keeps two tokens.
    expect(filteredDistribution([0, Math.log(2), Math.log(4), 0], { topP: 0.7 }).map((d) => d.token)).toEqual([2, 1]);
    // temperature 0.5 squares the odds: 16 : 4 : 1 : 1.
    expect(filteredDistribution([0, Math.log(2), Math.log(4), 0], { temperature: 0.5 })[0].p).toBeCloseTo(16 / 22, 12);
  });

  it('temperature 0 is greedy; sampling is reproducible per seed and follows the distribution', () => {
    expect(sampleToken(logits, { temperature: 0 }, new SeededRandom(1))).toBe(2);
    const draw = (seed: number) => {
      const rng = new SeededRandom(seed);
      return Array.from({ length: 50 }, () => sampleToken(logits, {}, rng));
    };
    expect(new Set(draw(3)).size).toBeGreaterThan(1);
    expect(draw(3)).toEqual(draw(3));
    const rng = new SeededRandom(4);
    const counts = [0, 0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) counts[sampleToken(logits, { topK: 2 }, rng)]++;
    expect(counts[2] / 4000).toBeGreaterThan(0.62);
    expect(counts[2] / 4000).toBeLessThan(0.71);
    expect(counts[0] + counts[3] + counts[4]).toBe(0);
  });

  it('generate honours seed, stop tokens, stop sequences and rejects bad options', async () => {
    const model = tinyModel(tinyConfig('nsa'), 11);
    const a = await generate(model, [1, 2, 3], { maxTokens: 8, seed: 5, temperature: 1.5 });
    const b = await generate(model, [1, 2, 3], { maxTokens: 8, seed: 5, temperature: 1.5 });
    expect(a).toEqual(b);
    const stopAt = a.tokens[3];
    const stopped = await generate(model, [1, 2, 3], { maxTokens: 8, seed: 5, temperature: 1.5, stopTokens: [stopAt] });
    expect(stopped.stopReason).toBe('stopToken');
    expect(stopped.tokens).toEqual(a.tokens.slice(0, a.tokens.indexOf(stopAt) + 1));
    const seq = await generate(model, [1, 2, 3], { maxTokens: 8, seed: 5, temperature: 1.5, stopSequences: [a.tokens.slice(2, 4)] });
    expect(seq.stopReason).toBe('stopSequence');
    expect(seq.tokens.slice(-2)).toEqual(a.tokens.slice(2, 4));
    await expect(generate(model, [1], { maxTokens: 2, topP: 0 })).rejects.toThrow(/topP = 0 is invalid/);
    await expect(generate(model, [1], { maxTokens: 2, temperature: -1 })).rejects.toThrow(/temperature/);
  });
});
