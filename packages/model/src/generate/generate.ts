import { NSAConfigError, SeededRandom } from '@nsa/core';
import type { TransformerLM } from '../model.js';
import { IncrementalDecoder } from './decoder.js';
import { checkSampling, sampleToken, type SamplingOptions } from './sampler.js';

export interface GenerateOptions extends SamplingOptions {
  /** Most new tokens. */
  readonly maxTokens: number;
  /** Seed of the sampling stream (default 0). */
  readonly seed?: number;
  /** Stop after producing any of these tokens (it is included in the output). */
  readonly stopTokens?: readonly number[];
  /** Stop once the output ends with any of these token sequences (included in the output). */
  readonly stopSequences?: readonly (readonly number[])[];
}

export interface GenerateResult {
  readonly tokens: number[];
  readonly stopReason: 'maxTokens' | 'stopToken' | 'stopSequence';
}

/** Prefills the prompt through the cache, then decodes token by token. */
export async function generate(model: TransformerLM, prompt: readonly number[], options: GenerateOptions): Promise<GenerateResult> {
  checkSampling(options);
  if (!Number.isInteger(options.maxTokens) || options.maxTokens < 0) {
    throw new NSAConfigError('maxTokens', options.maxTokens, 'must be an integer >= 0');
  }
  if (prompt.length === 0) throw new NSAConfigError('prompt', '[]', 'needs at least one token');
  const rng = new SeededRandom(options.seed ?? 0);
  const stopTokens = new Set(options.stopTokens ?? []);
  const tokens: number[] = [];
  if (options.maxTokens === 0) return { tokens, stopReason: 'maxTokens' };
  const decoder = new IncrementalDecoder(model, prompt.length + options.maxTokens);
  try {
    let logits = await decoder.feed(prompt);
    while (true) {
      const next = sampleToken(logits, options, rng);
      tokens.push(next);
      if (stopTokens.has(next)) return { tokens, stopReason: 'stopToken' };
      if (options.stopSequences?.some((s) => s.length > 0 && endsWith(tokens, s))) return { tokens, stopReason: 'stopSequence' };
      if (tokens.length >= options.maxTokens) return { tokens, stopReason: 'maxTokens' };
      logits = await decoder.feed([next]);
    }
  } finally {
    decoder.dispose();
  }
}

function endsWith(tokens: readonly number[], suffix: readonly number[]): boolean {
  if (suffix.length > tokens.length) return false;
  const offset = tokens.length - suffix.length;
  return suffix.every((t, i) => tokens[offset + i] === t);
}
