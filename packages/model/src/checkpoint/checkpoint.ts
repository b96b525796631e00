import { NSAError, type ModelBackend } from '@nsa/core';
import { createModelConfig, type ModelConfig } from '../config.js';
import { TransformerLM } from '../model.js';
import { parameterSpecs, type ParamSpec } from '../params.js';
import { readSafetensors, writeSafetensors, type NamedTensor, type SafetensorsFile } from './safetensors.js';

export const CHECKPOINT_FORMAT = 'nsa-model/1';

/** A checkpoint does not fit the model: every problem is listed, one per line. */
export class CheckpointMismatchError extends NSAError {
  constructor(
    readonly path: string,
    readonly problems: readonly string[],
  ) {
    super('NSA_CHECKPOINT_MISMATCH', `checkpoint ${path} does not match the model:\n  ${problems.join('\n  ')}`);
  }
}

/** Extra state a training checkpoint carries: optimizer moments and the trainer's JSON state. */
export interface TrainingState {
  readonly optimizer: Map<string, Float64Array>;
  readonly trainer: Record<string, unknown>;
}

/** Saves the model (and optionally the training state) as one safetensors file, atomically. */
export async function saveCheckpoint(path: string, model: TransformerLM, training?: TrainingState): Promise<void> {
  const tensors = new Map<string, NamedTensor>();
  const params = await model.readParameters();
  for (const spec of model.specs) tensors.set(spec.name, { dtype: 'F64', shape: spec.shape, data: params.get(spec.name)! });
  if (training) {
    for (const spec of model.specs) {
      for (const moment of ['m', 'v']) {
        tensors.set(`optimizer.${moment}.${spec.name}`, { dtype: 'F64', shape: spec.shape, data: training.optimizer.get(`${moment}.${spec.name}`)! });
      }
    }
  }
  const metadata: Record<string, string> = { format: CHECKPOINT_FORMAT, config: JSON.stringify(model.config) };
  if (training) metadata.trainer = JSON.stringify(training.trainer);
  await writeSafetensors(path, tensors, metadata);
}

/** Lists every difference between the file's tensors and the specs (names, shapes, dtypes). */
export function checkTensors(file: SafetensorsFile, specs: readonly ParamSpec[], prefix = ''): string[] {
  const problems: string[] = [];
  for (const spec of specs) {
    const name = prefix + spec.name;
    const t = file.tensors.get(name);
    if (!t) {
      problems.push(`missing tensor ${name} (expected [${spec.shape.join(', ')}] F64)`);
      continue;
    }
    if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
      problems.push(`tensor ${name} has shape [${t.shape.join(', ')}], expected [${spec.shape.join(', ')}]`);
    }
    if (t.dtype !== 'F64' && t.dtype !== 'F32') problems.push(`tensor ${name} has dtype ${t.dtype}, expected F64 or F32`);
  }
  return problems;
}

function configOf(file: SafetensorsFile, path: string): ModelConfig {
  if (file.metadata.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointMismatchError(path, [`metadata format is ${JSON.stringify(file.metadata.format)}, expected "${CHECKPOINT_FORMAT}"`]);
  }
  try {
    return createModelConfig(JSON.parse(file.metadata.config) as ModelConfig);
  } catch (error) {
    throw new CheckpointMismatchError(path, [`metadata config is invalid: ${(error as Error).message}`]);
  }
}

/** Config fields where `actual` differs from `expected`. */
function configDifferences(expected: ModelConfig, actual: ModelConfig): string[] {
  const flat = (c: ModelConfig) => ({ ...c, ...Object.fromEntries(Object.entries(c.nsa).map(([k, v]) => [`nsa.${k}`, v])), nsa: undefined });
  const a = flat(actual) as Record<string, unknown>;
  const e = flat(expected) as Record<string, unknown>;
  return Object.keys(e)
    .filter((k) => e[k] !== a[k])
    .map((k) => `config.${k} is ${JSON.stringify(a[k])} in the checkpoint, expected ${JSON.stringify(e[k])}`);
}

export interface LoadedCheckpoint {
  readonly model: TransformerLM;
  readonly training?: TrainingState;
}

/**
 * Loads a checkpoint onto a backend. With `expected`, the file's config must equal it. Names,
 * shapes and dtypes are checked and every mismatch reported together.
 */
export async function loadCheckpoint(path: string, backend: ModelBackend, expected?: ModelConfig): Promise<LoadedCheckpoint> {
  const file = await readSafetensors(path);
  const config = configOf(file, path);
  const problems = expected ? configDifferences(expected, config) : [];
  const specs = parameterSpecs(expected ?? config);
  problems.push(...checkTensors(file, specs));
  const known = new Set(specs.flatMap((s) => [s.name, `optimizer.m.${s.name}`, `optimizer.v.${s.name}`]));
  for (const name of file.tensors.keys()) if (!known.has(name)) problems.push(`unexpected tensor ${name}`);
  if (problems.length > 0) throw new CheckpointMismatchError(path, problems);
  const values = new Map(specs.map((s) => [s.name, Float64Array.from(file.tensors.get(s.name)!.data)]));
  const model = new TransformerLM(backend, config, values);
  if (!file.metadata.trainer) return { model };
  const optimizer = new Map<string, Float64Array>();
  const optimizerProblems = checkTensors(file, specs, 'optimizer.m.').concat(checkTensors(file, specs, 'optimizer.v.'));
  if (optimizerProblems.length > 0) throw new CheckpointMismatchError(path, optimizerProblems);
  for (const s of specs) {
    optimizer.set(`m.${s.name}`, Float64Array.from(file.tensors.get(`optimizer.m.${s.name}`)!.data));
    optimizer.set(`v.${s.name}`, Float64Array.from(file.tensors.get(`optimizer.v.${s.name}`)!.data));
  }
  return { model, training: { optimizer, trainer: JSON.parse(file.metadata.trainer) as Record<string, unknown> } };
}
