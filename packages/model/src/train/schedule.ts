import { NSAConfigError } from '@nsa/core';

export interface ScheduleOptions {
  /** Peak learning rate, reached at the end of warm-up. */
  readonly peak: number;
  /** Floor the cosine decays to. Default 0. */
  readonly min?: number;
  /** Linear warm-up steps. */
  readonly warmup: number;
  /** Total steps; the cosine reaches `min` at the last one. */
  readonly total: number;
}

/** Learning rate of 0-based `step`: linear warm-up to `peak`, then cosine decay to `min`. */
export function learningRate(step: number, options: ScheduleOptions): number {
  const { peak, min = 0, warmup, total } = options;
  if (!(peak > 0)) throw new NSAConfigError('peak', peak, 'must be > 0');
  if (!(min >= 0 && min <= peak)) throw new NSAConfigError('min', min, `must be in [0, peak = ${peak}]`);
  if (!Number.isInteger(warmup) || warmup < 0) throw new NSAConfigError('warmup', warmup, 'must be an integer >= 0');
  if (!Number.isInteger(total) || total < 1) throw new NSAConfigError('total', total, 'must be a positive integer');
  if (step < warmup) return (peak * (step + 1)) / warmup;
  const span = Math.max(1, total - 1 - warmup);
  const progress = Math.min(1, (step - warmup) / span);
  return min + 0.5 * (peak - min) * (1 + Math.cos(Math.PI * progress));
}
