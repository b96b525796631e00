import { NSAShapeError } from '@nsa/core';
import { nsaOperatorConfig } from '../config.js';
import { DenseLayerDecoder } from '../layers/dense-attention.js';
import { linear } from '../layers/linear.js';
import { NSALayerDecoder } from '../layers/nsa-attention.js';
import type { TransformerLM } from '../model.js';
import { Scope } from '../util/scope.js';

/**
 * Incremental decoding of one sequence: `feed` runs new tokens through the model against the
 * cached state of the earlier ones (NSA cache per layer, or a key/value cache for dense attention)
 * and returns the logits of the last new token.
 */
export class IncrementalDecoder {
  readonly #layers: (NSALayerDecoder | DenseLayerDecoder)[];
  #length = 0;

  constructor(
    readonly model: TransformerLM,
    readonly capacity: number,
  ) {
    const { config, backend } = model;
    this.#layers = [];
    for (let i = 0; i < config.layers; i++) {
      this.#layers.push(
        config.attention === 'nsa'
          ? new NSALayerDecoder(backend.createNSACache({ config: nsaOperatorConfig(config), batch: 1, dtype: model.dtype, capacity }))
          : new DenseLayerDecoder(),
      );
    }
  }

  /** Tokens consumed so far. */
  get length(): number {
    return this.#length;
  }

  /** Consumes tokens (a whole prompt, or one token) and returns the next-token logits [V]. */
  async feed(tokens: readonly number[]): Promise<Float64Array> {
    if (tokens.length === 0) throw new NSAShapeError('feed needs at least one token');
    if (this.#length + tokens.length > this.capacity) {
      throw new NSAShapeError(`decoder capacity ${this.capacity} exceeded (${this.#length} + ${tokens.length} tokens)`);
    }
    const scope = new Scope();
    try {
      const ctx = this.model.context(scope);
      const { ops, config } = ctx;
      const ids = ops.tensor(tokens, [tokens.length], 'int32');
      let x = await ops.embedding(ctx.param('embed'), ids);
      for (let i = 0; i < config.layers; i++) {
        const p = `layers.${i}`;
        const normed1 = await ops.rmsNorm(x, ctx.param(`${p}.attnNorm`), config.normEps);
        const x1 = await ops.add(x, await this.#layers[i].step(ctx, `${p}.attn`, normed1));
        const normed2 = await ops.rmsNorm(x1, ctx.param(`${p}.mlpNorm`), config.normEps);
        const w = (n: string) => ctx.param(`${p}.mlp.${n}`);
        const act = await ops.swiglu(await linear(ops, normed2, w('wGate')), await linear(ops, normed2, w('wUp')));
        x = await ops.add(x1, await linear(ops, act, w('wDown')));
      }
      const last = await ops.sliceRows(x, tokens.length - 1, 1);
      const normed = await ops.rmsNorm(last, ctx.param('finalNorm'), config.normEps);
      const logits = await linear(ops, normed, ctx.param('lmHead'));
      this.#length += tokens.length;
      return Float64Array.from(await logits.read());
    } finally {
      scope.dispose();
    }
  }

  dispose(): void {
    for (const layer of this.#layers) layer.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
