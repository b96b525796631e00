import { NSAConfigError, type ModelBackend } from '@nsa/core';
import { loadCheckpoint, saveCheckpoint } from '../checkpoint/checkpoint.js';
import type { ModelConfig } from '../config.js';
import type { TransformerLM } from '../model.js';
import { Scope } from '../util/scope.js';
import { AdamW } from './adamw.js';
import { clipFactor, gradientNorm } from './clip.js';
import { learningRate } from './schedule.js';

/** Token ids [B, T] and next-token targets [B, T] (-1 = not counted in the loss). */
export interface Batch {
  readonly ids: Int32Array;
  readonly targets: Int32Array;
  readonly B: number;
  readonly T: number;
}

export interface TrainerOptions {
  /** Total steps of the schedule. */
  readonly steps: number;
  /** Peak learning rate. */
  readonly lr: number;
  /** Learning-rate floor at the end of the cosine (default lr / 10). */
  readonly minLr?: number;
  /** Warm-up steps (default 5% of steps). */
  readonly warmup?: number;
  readonly weightDecay?: number;
  readonly beta1?: number;
  readonly beta2?: number;
  /** Global gradient-norm clip (default 1; 0 = off). */
  readonly clip?: number;
}

export interface StepReport {
  /** 1-based number of the step just taken. */
  readonly step: number;
  readonly loss: number;
  readonly lr: number;
  /** Gradient norm before clipping. */
  readonly gradNorm: number;
  readonly tokens: number;
  readonly seconds: number;
}

/**
 * AdamW training with warm-up + cosine schedule and gradient clipping. Deterministic: the same
 * model, options and batches give the same weights. `save`/`resume` continue exactly where a run
 * stopped, provided the batch of step s depends only on s.
 */
export class Trainer {
  readonly optimizer: AdamW;
  readonly options: Required<TrainerOptions>;

  constructor(
    readonly model: TransformerLM,
    options: TrainerOptions,
  ) {
    if (!Number.isInteger(options.steps) || options.steps < 1) throw new NSAConfigError('steps', options.steps, 'must be a positive integer');
    this.options = {
      minLr: options.lr / 10,
      warmup: Math.floor(options.steps * 0.05),
      weightDecay: 0.1,
      beta1: 0.9,
      beta2: 0.95,
      clip: 1,
      ...options,
    };
    this.optimizer = new AdamW(model, this.options);
  }

  /** Steps taken so far. */
  get step(): number {
    return this.optimizer.step;
  }

  /** Learning rate of the next step. */
  get lr(): number {
    const { lr, minLr, warmup, steps } = this.options;
    return learningRate(Math.min(this.step, steps - 1), { peak: lr, min: minLr, warmup, total: steps });
  }

  async trainStep(batch: Batch): Promise<StepReport> {
    const started = performance.now();
    const scope = new Scope();
    try {
      const lr = this.lr;
      const { loss, grads } = await this.model.loss(batch.ids, batch.targets, batch.B, batch.T, scope, true);
      const gradNorm = await gradientNorm(this.model.backend, grads!);
      if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
        throw new NSAConfigError('training', `loss ${loss}, gradient norm ${gradNorm}`, 'diverged (lower the learning rate)');
      }
      await this.optimizer.update(grads!, lr, clipFactor(gradNorm, this.options.clip));
      return { step: this.step, loss, lr, gradNorm, tokens: batch.B * batch.T, seconds: (performance.now() - started) / 1000 };
    } finally {
      scope.dispose();
    }
  }

  /** Trains until `this.step === until`, asking `batchAt(step)` for each 0-based step's batch. */
  async run(batchAt: (step: number) => Batch, until: number, onStep?: (report: StepReport) => void): Promise<void> {
    while (this.step < until) {
      const report = await this.trainStep(batchAt(this.step));
      onStep?.(report);
    }
  }

  /** Weights, optimizer moments, step and options in one safetensors file (written atomically). */
  async save(path: string): Promise<void> {
    await saveCheckpoint(path, this.model, {
      optimizer: await this.optimizer.readState(),
      trainer: { step: this.step, options: this.options },
    });
  }

  /** Continues a run saved by `save`. */
  static async resume(path: string, backend: ModelBackend, expected?: ModelConfig): Promise<Trainer> {
    const { model, training } = await loadCheckpoint(path, backend, expected);
    if (!training) throw new NSAConfigError('checkpoint', path, 'holds no training state (it was saved without an optimizer)');
    const state = training.trainer as { step: number; options: TrainerOptions };
    const trainer = new Trainer(model, state.options);
    trainer.optimizer.setState(training.optimizer, state.step);
    return trainer;
  }

  dispose(): void {
    this.optimizer.dispose();
  }
}
