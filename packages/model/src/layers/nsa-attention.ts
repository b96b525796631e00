import { compressedCount, type NSACache, type NSAForwardResult, type Tensor } from '@nsa/core';
import { nsaOperatorConfig } from '../config.js';
import { appendRows } from './dense-attention.js';
import { compressorBackward, compressorForward, type CompressorSaved } from './compressor.js';
import { sum, type Gradients, type LayerContext } from './context.js';
import { linear, linearBackward } from './linear.js';
import { compressedRotary, tokenRotary } from './rotary.js';

/** Projections of the hidden state for the three branches (already rotated where they should be). */
interface Projections {
  readonly q: Tensor;
  readonly kSlc: Tensor;
  readonly vSlc: Tensor;
  readonly kWin: Tensor;
  readonly vWin: Tensor;
  readonly kRaw: Tensor;
  readonly vRaw: Tensor;
  readonly gateLogits: Tensor;
  readonly gates: Tensor;
}

export interface NSAAttentionSaved {
  readonly x: Tensor;
  readonly p: Projections;
  readonly kCmp: Tensor;
  readonly vCmp: Tensor;
  readonly phiK: CompressorSaved;
  readonly phiV: CompressorSaved;
  readonly forward: NSAForwardResult;
  readonly merged: Tensor;
}

/** x [M = B*T, D] -> every branch's projections for tokens at positions start .. start + T - 1. */
async function project(ctx: LayerContext, prefix: string, x: Tensor, B: number, T: number, start: number): Promise<Projections> {
  const { ops, config } = ctx;
  const { heads: HQ, kvHeads: H, headDim: Dh } = config;
  const proj = async (w: string, heads: number) => ops.reshape(await linear(ops, x, ctx.param(`${prefix}.${w}`)), [B, T, heads, Dh]);
  const rope = (t: Tensor) => tokenRotary(ops, t, config, start, false);
  const gateLogits = await linear(ops, x, ctx.param(`${prefix}.wg`));
  return {
    q: await rope(await proj('wq', HQ)),
    kSlc: await rope(await proj('wkSlc', H)),
    vSlc: await proj('wvSlc', H),
    kWin: await rope(await proj('wkWin', H)),
    vWin: await proj('wvWin', H),
    // φ sees keys without rotation; the compressed key is rotated at its block's centre below.
    kRaw: await proj('wkCmp', H),
    vRaw: await proj('wvCmp', H),
    gateLogits,
    gates: await ops.reshape(await ops.activation(gateLogits, 'sigmoid'), [B, T, HQ, 3]),
  };
}

/** The paper's attention layer: q, independent k/v per branch, φ for the compressed branch, sigmoid gates, NSA, output projection. */
export async function nsaAttentionForward(
  ctx: LayerContext,
  prefix: string,
  x: Tensor,
  B: number,
  T: number,
): Promise<{ output: Tensor; saved: NSAAttentionSaved }> {
  const { ops, config } = ctx;
  const p = await project(ctx, prefix, x, B, T, 0);
  const phiK = await compressorForward(ctx, `${prefix}.phiK`, p.kRaw);
  const phiV = await compressorForward(ctx, `${prefix}.phiV`, p.vRaw);
  const kCmp = await compressedRotary(ops, phiK.output, config, 0, false);
  const vCmp = phiV.output;
  const forward = await ops.nsaForward({
    config: nsaOperatorConfig(config),
    q: p.q,
    kCmp,
    vCmp,
    kSlc: p.kSlc,
    vSlc: p.vSlc,
    kWin: p.kWin,
    vWin: p.vWin,
    gates: p.gates,
  });
  const merged = await ops.reshape(forward.output, [B * T, config.heads * config.headDim]);
  const output = await linear(ops, merged, ctx.param(`${prefix}.wo`));
  return { output, saved: { x, p, kCmp, vCmp, phiK: phiK.saved, phiV: phiV.saved, forward, merged } };
}

export async function nsaAttentionBackward(
  ctx: LayerContext,
  prefix: string,
  saved: NSAAttentionSaved,
  dy: Tensor,
  grads: Gradients,
): Promise<Tensor> {
  const { ops, config } = ctx;
  const { x, p } = saved;
  const [B, T, HQ, Dh] = p.q.shape;
  const M = B * T;
  const dMerged = await linearBackward(ops, saved.merged, ctx.param(`${prefix}.wo`), dy, grads, `${prefix}.wo`);
  const g = await ops.nsaBackward({
    config: nsaOperatorConfig(config),
    q: p.q,
    kCmp: saved.kCmp,
    vCmp: saved.vCmp,
    kSlc: p.kSlc,
    vSlc: p.vSlc,
    kWin: p.kWin,
    vWin: p.vWin,
    gates: p.gates,
    forward: saved.forward,
    dOutput: await ops.reshape(dMerged, [B, T, HQ, Dh]),
  });
  const back = async (w: string, d: Tensor) => linearBackward(ops, x, ctx.param(`${prefix}.${w}`), await ops.reshape(d, [M, d.size / M]), grads, `${prefix}.${w}`);
  const unrope = (d: Tensor) => tokenRotary(ops, d, config, 0, true);
  const dGateLogits = await ops.activationBackward(p.gateLogits, 'sigmoid', await ops.reshape(g.dGates, [M, HQ * 3]));
  const dkRaw = await compressorBackward(ctx, `${prefix}.phiK`, saved.phiK, await compressedRotary(ops, g.dkCmp, config, 0, true), grads);
  const dvRaw = await compressorBackward(ctx, `${prefix}.phiV`, saved.phiV, g.dvCmp, grads);
  return sum(ops, [
    await back('wq', await unrope(g.dq)),
    await back('wkSlc', await unrope(g.dkSlc)),
    await back('wvSlc', g.dvSlc),
    await back('wkWin', await unrope(g.dkWin)),
    await back('wvWin', g.dvWin),
    await back('wkCmp', dkRaw),
    await back('wvCmp', dvRaw),
    await linearBackward(ops, x, ctx.param(`${prefix}.wg`), dGateLogits, grads, `${prefix}.wg`),
  ]);
}

/**
 * Decoding state of one NSA layer for one sequence: the operator's cache plus the raw
 * compression-branch keys/values of tokens whose compressed block is not complete yet.
 */
export class NSALayerDecoder {
  #rawK: Tensor | undefined;
  #rawV: Tensor | undefined;
  /** Position of the first row of rawK/rawV. */
  #rawStart = 0;

  constructor(readonly cache: NSACache) {}

  /** Runs the TQ new tokens x [TQ, D] (positions cache.length ..) through the layer; returns [TQ, D]. */
  async step(ctx: LayerContext, prefix: string, x: Tensor): Promise<Tensor> {
    const { ops, config } = ctx;
    const { kvHeads: H, headDim: Dh, heads: HQ } = config;
    const TQ = x.shape[0];
    const start = this.cache.length;
    const p = await project(ctx, prefix, x, 1, TQ, start);
    await this.cache.append({ kSlc: p.kSlc, vSlc: p.vSlc, kWin: p.kWin, vWin: p.vWin });
    const rows = async (t: Tensor) => ops.reshape(t, [TQ, H * Dh]);
    this.#rawK = await appendRows(ctx, this.#rawK, await rows(p.kRaw));
    this.#rawV = await appendRows(ctx, this.#rawV, await rows(p.vRaw));
    await this.#compressNewBlocks(ctx, prefix);
    const decoded = await ops.nsaDecode({ cache: this.cache, q: p.q, gates: p.gates });
    const merged = await ops.reshape(decoded.output, [TQ, HQ * Dh]);
    return linear(ops, merged, ctx.param(`${prefix}.wo`));
  }

  /** Appends the compressed blocks completed by the new tokens, then drops raw rows no future block needs. */
  async #compressNewBlocks(ctx: LayerContext, prefix: string): Promise<void> {
    const { ops, config } = ctx;
    const { compressStride: d } = config.nsa;
    const { kvHeads: H, headDim: Dh } = config;
    const done = this.cache.compressedLength;
    const total = compressedCount(this.cache.length, config.nsa);
    if (total > done && this.#rawK && this.#rawV) {
      const from = done * d - this.#rawStart;
      const count = this.cache.length - done * d;
      const tokens = async (raw: Tensor) => ops.reshape(await ops.sliceRows(raw, from, count), [1, count, H, Dh]);
      const k = await compressorForward(ctx, `${prefix}.phiK`, await tokens(this.#rawK));
      const v = await compressorForward(ctx, `${prefix}.phiV`, await tokens(this.#rawV));
      const kCmp = await compressedRotary(ops, k.output, config, done, false);
      await this.cache.appendCompressed({ kCmp, vCmp: v.output });
      const keepFrom = total * d;
      const drop = keepFrom - this.#rawStart;
      const left = this.#rawK.shape[0] - drop;
      const [oldK, oldV] = [this.#rawK, this.#rawV];
      this.#rawK = await ctx.persistent.sliceRows(oldK, drop, left);
      this.#rawV = await ctx.persistent.sliceRows(oldV, drop, left);
      oldK.dispose();
      oldV.dispose();
      this.#rawStart = keepFrom;
    }
  }

  dispose(): void {
    this.#rawK?.dispose();
    this.#rawV?.dispose();
    this.cache.dispose();
  }
}
