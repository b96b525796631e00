import { createNSAConfig, NSAConfigError, type NSAConfig } from '@nsa/core';

export type AttentionKind = 'nsa' | 'dense';

/** The NSA fields the model chooses; heads and head dims come from the model itself. */
export interface NSAHyperParameters {
  readonly compressBlock: number;
  readonly compressStride: number;
  readonly selectBlock: number;
  readonly selectCount: number;
  readonly initialBlocks: number;
  readonly localBlocks: number;
  readonly window: number;
}

/** A decoder-only transformer: embedding, pre-norm blocks (attention + SwiGLU MLP), LM head. */
export interface ModelConfig {
  readonly vocabSize: number;
  readonly dModel: number;
  readonly layers: number;
  /** Query heads (HQ). */
  readonly heads: number;
  /** Key/value heads (H), divides heads. */
  readonly kvHeads: number;
  /** Head dim for queries, keys and values. */
  readonly headDim: number;
  /** SwiGLU hidden width. */
  readonly ffnHidden: number;
  readonly attention: AttentionKind;
  readonly nsa: NSAHyperParameters;
  /** Hidden width of the compressor MLP φ. */
  readonly compressorHidden: number;
  readonly ropeBase: number;
  readonly normEps: number;
}

export type ModelConfigInput = Partial<Omit<ModelConfig, 'nsa'>> & { nsa?: Partial<NSAHyperParameters> };

export const DEFAULT_MODEL_CONFIG: ModelConfig = Object.freeze({
  vocabSize: 256,
  dModel: 64,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  headDim: 16,
  ffnHidden: 128,
  attention: 'nsa',
  nsa: Object.freeze({
    compressBlock: 8,
    compressStride: 4,
    selectBlock: 16,
    selectCount: 4,
    initialBlocks: 1,
    localBlocks: 2,
    window: 16,
  }),
  compressorHidden: 32,
  ropeBase: 10000,
  normEps: 1e-5,
});

const POSITIVE = ['vocabSize', 'dModel', 'layers', 'heads', 'kvHeads', 'headDim', 'ffnHidden', 'compressorHidden'] as const;

/** Fills defaults and checks every field; NSA rules are checked by core's createNSAConfig. */
export function createModelConfig(input: ModelConfigInput = {}): ModelConfig {
  const config: ModelConfig = {
    ...DEFAULT_MODEL_CONFIG,
    ...input,
    nsa: { ...DEFAULT_MODEL_CONFIG.nsa, ...(input.nsa ?? {}) },
  };
  for (const field of POSITIVE) {
    const value = config[field];
    if (!Number.isInteger(value) || value < 1) throw new NSAConfigError(field, value, 'must be a positive integer');
  }
  if (config.attention !== 'nsa' && config.attention !== 'dense') {
    throw new NSAConfigError('attention', config.attention, "must be 'nsa' or 'dense'");
  }
  if (config.headDim % 2 !== 0) throw new NSAConfigError('headDim', config.headDim, 'must be even (rotary pairs)');
  if (!(config.ropeBase > 1)) throw new NSAConfigError('ropeBase', config.ropeBase, 'must be > 1');
  if (!(config.normEps > 0)) throw new NSAConfigError('normEps', config.normEps, 'must be > 0');
  nsaOperatorConfig(config); // validates the NSA fields and the head layout
  return Object.freeze({ ...config, nsa: Object.freeze(config.nsa) });
}

/** The operator config of one attention layer. */
export function nsaOperatorConfig(config: ModelConfig): NSAConfig {
  return createNSAConfig({
    ...config.nsa,
    heads: config.heads,
    kvHeads: config.kvHeads,
    headDimK: config.headDim,
    headDimV: config.headDim,
  });
}
