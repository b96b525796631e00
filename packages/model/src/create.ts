import type { FloatDType, ModelBackend } from '@nsa/core';
import { resolveModelBackend, type ModelBackendResolution, type ResolveModelBackendOptions } from './backend.js';
import { createModelConfig, type ModelConfigInput } from './config.js';
import { TransformerLM } from './model.js';

export interface CreateModelOptions extends ResolveModelBackendOptions {
  /** 'auto' (default), a backend name, or a backend instance. */
  readonly backend?: string | ModelBackend;
  readonly config?: ModelConfigInput;
  /** Initialisation seed (default 0). */
  readonly seed?: number;
  /** Parameter dtype; default float64 where the backend has it, else float32. */
  readonly dtype?: FloatDType;
}

export interface CreatedModel {
  readonly model: TransformerLM;
  /** Which backend the model runs on and why. */
  readonly resolution: ModelBackendResolution;
}

/** Resolves a backend and initialises a model on it. */
export async function createModel(options: CreateModelOptions = {}): Promise<CreatedModel> {
  const choice = options.backend ?? 'auto';
  const resolution: ModelBackendResolution =
    typeof choice === 'string'
      ? await resolveModelBackend(choice, options)
      : { backend: choice, name: choice.name, reason: 'passed in by the caller', skipped: [] };
  const config = createModelConfig(options.config);
  const dtype = options.dtype ?? (resolution.backend.dtypes.includes('float64') ? 'float64' : 'float32');
  const model = TransformerLM.init(resolution.backend, config, options.seed ?? 0, dtype);
  return { model, resolution };
}
