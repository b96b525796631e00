import { NSAConfigError, type Tensor } from '@nsa/core';
import type { Gradients } from '../layers/context.js';
import type { TransformerLM } from '../model.js';

export interface AdamWOptions {
  readonly beta1?: number;
  readonly beta2?: number;
  readonly eps?: number;
  /** Decoupled weight decay, applied to matrices only (not gains, embeddings or position tables). */
  readonly weightDecay?: number;
}

/** AdamW over a model's parameters; moments live on the backend beside the parameters. */
export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Updates applied so far. */
  step = 0;
  readonly #moments = new Map<string, { m: Tensor; v: Tensor }>();

  constructor(
    readonly model: TransformerLM,
    options: AdamWOptions = {},
  ) {
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.95;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.1;
    for (const [name, value] of [['beta1', this.beta1], ['beta2', this.beta2]] as const) {
      if (!(value >= 0 && value < 1)) throw new NSAConfigError(name, value, 'must be in [0, 1)');
    }
    if (!(this.eps > 0)) throw new NSAConfigError('eps', this.eps, 'must be > 0');
    if (!(this.weightDecay >= 0)) throw new NSAConfigError('weightDecay', this.weightDecay, 'must be >= 0');
    for (const spec of model.specs) {
      const zeros = new Float64Array(spec.shape.reduce((a, b) => a * b, 1));
      this.#moments.set(spec.name, {
        m: model.backend.tensor(zeros, spec.shape, model.dtype),
        v: model.backend.tensor(zeros, spec.shape, model.dtype),
      });
    }
  }

  /** One update of every parameter that has a gradient; gradScale clips. */
  async update(grads: Gradients, lr: number, gradScale = 1): Promise<void> {
    this.step++;
    const backend = this.model.backend;
    for (const spec of this.model.specs) {
      const grad = grads.get(spec.name);
      if (!grad) continue;
      const { m, v } = this.#moments.get(spec.name)!;
      await backend.adamw(
        { param: this.model.params.get(spec.name)!, grad, m, v },
        {
          lr,
          beta1: this.beta1,
          beta2: this.beta2,
          eps: this.eps,
          weightDecay: spec.decay ? this.weightDecay : 0,
          step: this.step,
          gradScale,
        },
      );
    }
  }

  /** Host copies of the moments, keyed `m.<param>` and `v.<param>`. */
  async readState(): Promise<Map<string, Float64Array>> {
    const out = new Map<string, Float64Array>();
    for (const [name, { m, v }] of this.#moments) {
      out.set(`m.${name}`, Float64Array.from(await m.read()));
      out.set(`v.${name}`, Float64Array.from(await v.read()));
    }
    return out;
  }

  /** Restores moments saved by `readState` and the step count. */
  setState(state: Map<string, Float64Array>, step: number): void {
    for (const spec of this.model.specs) {
      const old = this.#moments.get(spec.name)!;
      const m = state.get(`m.${spec.name}`);
      const v = state.get(`v.${spec.name}`);
      if (!m || !v) throw new NSAConfigError('optimizer state', spec.name, 'is missing from the checkpoint');
      this.#moments.set(spec.name, {
        m: this.model.backend.tensor(m, spec.shape, this.model.dtype),
        v: this.model.backend.tensor(v, spec.shape, this.model.dtype),
      });
      old.m.dispose();
      old.v.dispose();
    }
    this.step = step;
  }

  dispose(): void {
    for (const { m, v } of this.#moments.values()) {
      m.dispose();
      v.dispose();
    }
  }
}
