import type { AttentionForwardResult, Tensor } from '@nsa/core';
import { sum, type Gradients, type LayerContext } from './context.js';
import { linear, linearBackward } from './linear.js';
import { tokenRotary } from './rotary.js';

export interface DenseAttentionSaved {
  readonly x: Tensor;
  readonly q: Tensor;
  readonly k: Tensor;
  readonly v: Tensor;
  readonly forward: AttentionForwardResult;
  readonly merged: Tensor;
}

async function project(ctx: LayerContext, prefix: string, x: Tensor, T: number, start: number) {
  const { ops, config } = ctx;
  const { heads: HQ, kvHeads: H, headDim: Dh } = config;
  const B = x.shape[0] / T;
  const proj = async (w: string, heads: number) => ops.reshape(await linear(ops, x, ctx.param(`${prefix}.${w}`)), [B, T, heads, Dh]);
  return {
    q: await tokenRotary(ops, await proj('wq', HQ), config, start, false),
    k: await tokenRotary(ops, await proj('wk', H), config, start, false),
    v: await proj('wv', H),
  };
}

/** The baseline: the same block with full causal attention (one k/v projection, rotary on q and k). */
export async function denseAttentionForward(
  ctx: LayerContext,
  prefix: string,
  x: Tensor,
  B: number,
  T: number,
): Promise<{ output: Tensor; saved: DenseAttentionSaved }> {
  const { ops, config } = ctx;
  const { q, k, v } = await project(ctx, prefix, x, T, 0);
  const forward = await ops.attentionForward({ q, k, v });
  const merged = await ops.reshape(forward.output, [B * T, config.heads * config.headDim]);
  const output = await linear(ops, merged, ctx.param(`${prefix}.wo`));
  return { output, saved: { x, q, k, v, forward, merged } };
}

export async function denseAttentionBackward(
  ctx: LayerContext,
  prefix: string,
  saved: DenseAttentionSaved,
  dy: Tensor,
  grads: Gradients,
): Promise<Tensor> {
  const { ops, config } = ctx;
  const { x, q, k, v } = saved;
  const M = x.shape[0];
  const dMerged = await linearBackward(ops, saved.merged, ctx.param(`${prefix}.wo`), dy, grads, `${prefix}.wo`);
  const g = await ops.attentionBackward({ q, k, v, forward: saved.forward, dOutput: await ops.reshape(dMerged, q.shape) });
  const back = async (w: string, d: Tensor) => linearBackward(ops, x, ctx.param(`${prefix}.${w}`), await ops.reshape(d, [M, d.size / M]), grads, `${prefix}.${w}`);
  return sum(ops, [
    await back('wq', await tokenRotary(ops, g.dq, config, 0, true)),
    await back('wk', await tokenRotary(ops, g.dk, config, 0, true)),
    await back('wv', g.dv),
  ]);
}

/** Persistent rows of `held` followed by `rows`; frees the old tensor. */
export async function appendRows(ctx: LayerContext, held: Tensor | undefined, rows: Tensor): Promise<Tensor> {
  const joined = await ctx.persistent.concatRows(held ? [held, rows] : [rows]);
  held?.dispose();
  return joined;
}

/** Decoding state of one dense layer: rotated keys and values of every token so far. */
export class DenseLayerDecoder {
  #k: Tensor | undefined;
  #v: Tensor | undefined;
  #length = 0;

  async step(ctx: LayerContext, prefix: string, x: Tensor): Promise<Tensor> {
    const { ops, config } = ctx;
    const { kvHeads: H, headDim: Dh, heads: HQ } = config;
    const TQ = x.shape[0];
    const { q, k, v } = await project(ctx, prefix, x, TQ, this.#length);
    const rows = (t: Tensor) => ops.reshape(t, [TQ, H * Dh]);
    this.#k = await appendRows(ctx, this.#k, await rows(k));
    this.#v = await appendRows(ctx, this.#v, await rows(v));
    this.#length += TQ;
    const Tk = this.#length;
    const forward = await ops.attentionForward({
      q,
      k: await ops.reshape(this.#k, [1, Tk, H, Dh]),
      v: await ops.reshape(this.#v, [1, Tk, H, Dh]),
    });
    return linear(ops, await ops.reshape(forward.output, [TQ, HQ * Dh]), ctx.param(`${prefix}.wo`));
  }

  dispose(): void {
    this.#k?.dispose();
    this.#v?.dispose();
  }
}
