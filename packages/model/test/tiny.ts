import { SeededRandom } from '@nsa/core';
import { createModelConfig, initialValues, parameterSpecs, TransformerLM, type AttentionKind, type ModelConfig } from '../src/index.js';
import { backend } from './helpers.js';

/** A model small enough for finite differences, with every parameter randomised (gains too). */
export function tinyConfig(attention: AttentionKind, overrides: Partial<ModelConfig> = {}): ModelConfig {
  return createModelConfig({
    vocabSize: 11,
    dModel: 8,
    layers: 2,
    heads: 2,
    kvHeads: 1,
    headDim: 4,
    ffnHidden: 8,
    compressorHidden: 4,
    attention,
    nsa: { compressBlock: 4, compressStride: 2, selectBlock: 4, selectCount: 3, initialBlocks: 1, localBlocks: 1, window: 4 },
    ...overrides,
  });
}

export function tinyModel(config: ModelConfig, seed = 3): TransformerLM {
  const values = initialValues(parameterSpecs(config), seed);
  const rng = new SeededRandom(seed + 100);
  for (const v of values.values()) for (let i = 0; i < v.length; i++) v[i] += 0.1 * rng.normal();
  return new TransformerLM(backend, config, values);
}

export function randomIds(count: number, vocab: number, seed: number): Int32Array {
  const rng = new SeededRandom(seed);
  return Int32Array.from({ length: count }, () => rng.int(vocab));
}
