import { DisposedTensorError, type NSASaved } from '@nsa/core';
import { REFERENCE_BACKEND } from './tensor.js';

/** What the reference forward keeps for backward: each branch's log-sum-exp per query head. */
export class ReferenceSaved implements NSASaved {
  readonly backend = REFERENCE_BACKEND;
  #lse: Float64Array | undefined;

  constructor(lse: Float64Array) {
    this.#lse = lse;
  }

  get lse(): Float64Array {
    if (!this.#lse) throw new DisposedTensorError('forward result (saved statistics)');
    return this.#lse;
  }

  dispose(): void {
    this.#lse = undefined;
  }
}
