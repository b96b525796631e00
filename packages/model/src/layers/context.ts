import type { ModelBackend, Tensor } from '@nsa/core';
import type { ModelConfig } from '../config.js';

/** What a layer needs during one step: the (scoped) backend, the config and the parameters. */
export interface LayerContext {
  /** The backend, with results owned by the current step's scope. */
  readonly ops: ModelBackend;
  /** The same backend, unscoped: for state that outlives a step (decoding caches). */
  readonly persistent: ModelBackend;
  readonly config: ModelConfig;
  param(name: string): Tensor;
}

/** Parameter gradients of one step, summed where a parameter is used more than once. */
export class Gradients {
  readonly #map = new Map<string, Tensor>();

  async add(ops: ModelBackend, name: string, grad: Tensor): Promise<void> {
    const existing = this.#map.get(name);
    this.#map.set(name, existing ? await ops.add(existing, grad) : grad);
  }

  get(name: string): Tensor | undefined {
    return this.#map.get(name);
  }

  entries(): IterableIterator<[string, Tensor]> {
    return this.#map.entries();
  }
}

/** Sums tensors of one shape. */
export async function sum(ops: ModelBackend, parts: readonly Tensor[]): Promise<Tensor> {
  let total = parts[0];
  for (let i = 1; i < parts.length; i++) total = await ops.add(total, parts[i]);
  return total;
}
