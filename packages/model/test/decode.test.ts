import { describe, expect, it } from 'vitest';
import { generate, IncrementalDecoder } from '../src/index.js';
import { relErr } from './helpers.js';
import { randomIds, tinyConfig, tinyModel } from './tiny.js';

describe.each(['nsa', 'dense'] as const)('%s cached decoding', (attention) => {
  it('gives the logits of re-running the whole sequence, after a prefill and token by token', async () => {
    const config = tinyConfig(attention, { nsa: { compressBlock: 4, compressStride: 2, selectBlock: 4, selectCount: 3, initialBlocks: 1, localBlocks: 1, window: 4 } });
    const model = tinyModel(config, 7);
    const T = 23; // crosses several compressed and selection blocks
    const ids = Array.from(randomIds(T, config.vocabSize, 8));
    const full = await model.logits(Int32Array.from(ids), 1, T);
    const V = config.vocabSize;
    const decoder = new IncrementalDecoder(model, T);
    const prompt = 5;
    const rows: Float64Array[] = [await decoder.feed(ids.slice(0, prompt))];
    for (let t = prompt; t < T; t++) rows.push(await decoder.feed([ids[t]]));
    decoder.dispose();
    for (let i = 0; i < rows.length; i++) {
      const t = prompt - 1 + i;
      const want = full.subarray(t * V, (t + 1) * V);
      expect(relErr(rows[i], want), `position ${t}`).toBeLessThan(1e-12);
    }
  });

  it('greedy generation equals argmax of full re-runs', async () => {
    const config = tinyConfig(attention);
    const model = tinyModel(config, 9);
    const prompt = Array.from(randomIds(6, config.vocabSize, 10));
    const { tokens, stopReason } = await generate(model, prompt, { maxTokens: 10, temperature: 0 });
    expect(stopReason).toBe('maxTokens');
    const seq = [...prompt];
    for (let i = 0; i < 10; i++) {
      const logits = await model.logits(Int32Array.from(seq), 1, seq.length);
      const last = logits.subarray((seq.length - 1) * config.vocabSize);
      let best = 0;
      for (let v = 1; v < config.vocabSize; v++) if (last[v] > last[best]) best = v;
      seq.push(best);
    }
    expect(tokens).toEqual(seq.slice(prompt.length));
  });
});

describe('decoder limits', () => {
  it('refuses to run past its capacity with a precise error', async () => {
    const model = tinyModel(tinyConfig('nsa'));
    const decoder = new IncrementalDecoder(model, 4);
    await decoder.feed([1, 2, 3]);
    await expect(decoder.feed([4, 5])).rejects.toThrow(/capacity 4 exceeded \(3 \+ 2 tokens\)/);
    decoder.dispose();
  });
});
