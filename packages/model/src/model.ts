import type { FloatDType, ModelBackend, Tensor } from '@nsa/core';
import { NSAShapeError } from '@nsa/core';
import type { ModelConfig } from './config.js';
import { Gradients, type LayerContext } from './layers/context.js';
import { denseAttentionBackward, denseAttentionForward, type DenseAttentionSaved } from './layers/dense-attention.js';
import { linear, linearBackward } from './layers/linear.js';
import { mlpBackward, mlpForward, type MLPSaved } from './layers/mlp.js';
import { nsaAttentionBackward, nsaAttentionForward, type NSAAttentionSaved } from './layers/nsa-attention.js';
import { initialValues, parameterSpecs, type ParamSpec } from './params.js';
import { Scope, scoped } from './util/scope.js';

interface BlockSaved {
  readonly x: Tensor;
  readonly normed1: Tensor;
  readonly attn: NSAAttentionSaved | DenseAttentionSaved;
  readonly x1: Tensor;
  readonly normed2: Tensor;
  readonly mlp: MLPSaved;
}

interface ForwardSaved {
  readonly ids: Tensor;
  /** Rows whose logits were computed, when not all of them (see `loss`). */
  readonly rows?: Tensor;
  readonly blocks: BlockSaved[];
  readonly xFinal: Tensor;
  readonly normedFinal: Tensor;
}

export interface LossResult {
  /** Mean cross-entropy over the counted targets. */
  readonly loss: number;
  /** Targets counted (those not -1). */
  readonly count: number;
  /** Parameter gradients, owned by the scope passed in. */
  readonly grads?: Gradients;
}

/**
 * The decoder-only transformer: token embedding, `layers` pre-norm blocks of attention (NSA or
 * dense) and a SwiGLU MLP, a final RMSNorm and an untied LM head. Parameters live on the backend.
 */
export class TransformerLM {
  readonly specs: readonly ParamSpec[];
  readonly params = new Map<string, Tensor>();

  constructor(
    readonly backend: ModelBackend,
    readonly config: ModelConfig,
    values: Map<string, Float64Array>,
    readonly dtype: FloatDType = 'float64',
  ) {
    this.specs = parameterSpecs(config);
    this.setParameters(values);
  }

  /** A freshly initialised model; the same seed gives the same weights. */
  static init(backend: ModelBackend, config: ModelConfig, seed: number, dtype: FloatDType = 'float64'): TransformerLM {
    return new TransformerLM(backend, config, initialValues(parameterSpecs(config), seed), dtype);
  }

  get parameterCount(): number {
    return this.specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
  }

  /** Replaces every parameter with host values (checked by name and size). */
  setParameters(values: Map<string, Float64Array>): void {
    for (const spec of this.specs) {
      const data = values.get(spec.name);
      const size = spec.shape.reduce((a, b) => a * b, 1);
      if (!data) throw new NSAShapeError(`parameter ${spec.name} is missing`);
      if (data.length !== size) throw new NSAShapeError(`parameter ${spec.name} has ${data.length} values, expected ${size}`);
    }
    for (const spec of this.specs) {
      this.params.get(spec.name)?.dispose();
      this.params.set(spec.name, this.backend.tensor(values.get(spec.name)!, spec.shape, this.dtype));
    }
  }

  /** Copies every parameter to the host. */
  async readParameters(): Promise<Map<string, Float64Array>> {
    const out = new Map<string, Float64Array>();
    for (const spec of this.specs) out.set(spec.name, Float64Array.from(await this.params.get(spec.name)!.read()));
    return out;
  }

  /** A context whose results belong to `scope`. */
  context(scope: Scope): LayerContext {
    return {
      ops: scoped(this.backend, scope),
      persistent: this.backend,
      config: this.config,
      param: (name) => {
        const p = this.params.get(name);
        if (!p) throw new NSAShapeError(`no parameter named ${name}`);
        return p;
      },
    };
  }

  /**
   * Mean next-token loss of ids [B, T] against targets [B, T] (-1 = not counted) and, with
   * `withGradient`, every parameter's gradient. Tensors made belong to `scope`.
   */
  async loss(ids: Int32Array, targets: Int32Array, B: number, T: number, scope: Scope, withGradient = true): Promise<LossResult> {
    if (ids.length !== B * T || targets.length !== B * T) {
      throw new NSAShapeError(`ids and targets need B*T = ${B * T} entries (got ${ids.length} and ${targets.length})`);
    }
    const ctx = this.context(scope);
    // Logits only where a target counts: the LM head is the widest matmul, and tasks such as the
    // needle score a few tokens per sequence.
    const counted: number[] = [];
    for (let i = 0; i < targets.length; i++) if (targets[i] >= 0) counted.push(i);
    const sparse = counted.length < targets.length;
    const rows = sparse ? Int32Array.from(counted) : undefined;
    const { logits, saved } = await this.#forward(ctx, ids, B, T, rows);
    const targetTensor = ctx.ops.tensor(sparse ? counted.map((i) => targets[i]) : targets, [rows?.length ?? B * T], 'int32');
    const ce = await ctx.ops.softmaxCrossEntropy(logits, targetTensor, withGradient);
    if (!withGradient || !ce.dLogits) return { loss: ce.loss, count: ce.count };
    const grads = new Gradients();
    await this.#backward(ctx, saved, ce.dLogits, grads);
    return { loss: ce.loss, count: ce.count, grads };
  }

  /** Logits [B*T, V] of every position, or [rows, V] of the given flat positions, on the host. */
  async logits(ids: Int32Array, B: number, T: number, rows?: Int32Array): Promise<Float64Array> {
    const scope = new Scope();
    try {
      const { logits } = await this.#forward(this.context(scope), ids, B, T, rows);
      return Float64Array.from(await logits.read());
    } finally {
      scope.dispose();
    }
  }

  async #forward(
    ctx: LayerContext,
    idsHost: Int32Array,
    B: number,
    T: number,
    rowsHost?: Int32Array,
  ): Promise<{ logits: Tensor; saved: ForwardSaved }> {
    const { ops, config } = ctx;
    const ids = ops.tensor(idsHost, [B * T], 'int32');
    let x = await ops.embedding(ctx.param('embed'), ids);
    const blocks: BlockSaved[] = [];
    for (let i = 0; i < config.layers; i++) {
      const p = `layers.${i}`;
      const normed1 = await ops.rmsNorm(x, ctx.param(`${p}.attnNorm`), config.normEps);
      const attn =
        config.attention === 'nsa'
          ? await nsaAttentionForward(ctx, `${p}.attn`, normed1, B, T)
          : await denseAttentionForward(ctx, `${p}.attn`, normed1, B, T);
      const x1 = await ops.add(x, attn.output);
      const normed2 = await ops.rmsNorm(x1, ctx.param(`${p}.mlpNorm`), config.normEps);
      const mlp = await mlpForward(ctx, `${p}.mlp`, normed2);
      blocks.push({ x, normed1, attn: attn.saved, x1, normed2, mlp: mlp.saved });
      x = await ops.add(x1, mlp.output);
    }
    const normedAll = await ops.rmsNorm(x, ctx.param('finalNorm'), config.normEps);
    // Gathering rows is an embedding lookup into the activations; its backward scatters back.
    const rows = rowsHost ? ops.tensor(rowsHost, [rowsHost.length], 'int32') : undefined;
    const normedFinal = rows ? await ops.embedding(normedAll, rows) : normedAll;
    const logits = await linear(ops, normedFinal, ctx.param('lmHead'));
    return { logits, saved: { ids, rows, blocks, xFinal: x, normedFinal } };
  }

  async #backward(ctx: LayerContext, saved: ForwardSaved, dLogits: Tensor, grads: Gradients): Promise<void> {
    const { ops, config } = ctx;
    const eps = config.normEps;
    const dSelected = await linearBackward(ops, saved.normedFinal, ctx.param('lmHead'), dLogits, grads, 'lmHead');
    const dNormed = saved.rows ? await ops.embeddingBackward(saved.rows, dSelected, saved.xFinal.shape[0]) : dSelected;
    const final = await ops.rmsNormBackward(saved.xFinal, ctx.param('finalNorm'), eps, dNormed);
    await grads.add(ops, 'finalNorm', final.dWeight);
    let dx = final.dx;
    for (let i = config.layers - 1; i >= 0; i--) {
      const p = `layers.${i}`;
      const b = saved.blocks[i];
      const dNormed2 = await mlpBackward(ctx, `${p}.mlp`, b.mlp, dx, grads);
      const n2 = await ops.rmsNormBackward(b.x1, ctx.param(`${p}.mlpNorm`), eps, dNormed2);
      await grads.add(ops, `${p}.mlpNorm`, n2.dWeight);
      const dx1 = await ops.add(dx, n2.dx);
      const dNormed1 =
        config.attention === 'nsa'
          ? await nsaAttentionBackward(ctx, `${p}.attn`, b.attn as NSAAttentionSaved, dx1, grads)
          : await denseAttentionBackward(ctx, `${p}.attn`, b.attn as DenseAttentionSaved, dx1, grads);
      const n1 = await ops.rmsNormBackward(b.x, ctx.param(`${p}.attnNorm`), eps, dNormed1);
      await grads.add(ops, `${p}.attnNorm`, n1.dWeight);
      dx = await ops.add(dx1, n1.dx);
    }
    await grads.add(ops, 'embed', await ops.embeddingBackward(saved.ids, dx, config.vocabSize));
  }

  dispose(): void {
    for (const p of this.params.values()) p.dispose();
    this.params.clear();
  }
}
