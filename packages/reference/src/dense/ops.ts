import {
  checkTensor,
  NSAShapeError,
  shapeSize,
  type ActivationKind,
  type AdamWStep,
  type AdamWTensors,
  type DenseOps,
  type DType,
  type RotaryOptions,
  type Tensor,
} from '@nsa/core';
import { floatData, intData, REFERENCE_BACKEND, ReferenceTensor, roundArray } from '../tensor.js';
import { activationBackwardKernel, activationKernel, swigluBackwardKernel, swigluKernel } from './activation.js';
import { adamwKernel } from './adamw.js';
import { crossEntropyKernel } from './cross-entropy.js';
import { embeddingBackwardKernel, embeddingKernel } from './embedding.js';
import { matmulKernel } from './matmul.js';
import { rmsNormBackwardKernel, rmsNormKernel } from './norm.js';
import { rotaryKernel } from './rotary.js';
import { blockUnfoldBackwardKernel, blockUnfoldKernel } from './unfold.js';

const fmt = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

function out(data: Float64Array, shape: readonly number[], dtype: DType): ReferenceTensor {
  return new ReferenceTensor(roundArray(data, dtype), shape, dtype);
}

function live(name: string, t: Tensor): Tensor {
  return checkTensor(name, t, t?.shape ?? [], REFERENCE_BACKEND);
}

function sameShape(name: string, t: Tensor, like: Tensor): void {
  live(name, t);
  if (t.shape.length !== like.shape.length || t.shape.some((d, i) => d !== like.shape[i])) {
    throw new NSAShapeError(`${name} has shape ${fmt(t.shape)}, expected ${fmt(like.shape)}`);
  }
  if (t.dtype !== like.dtype) throw new NSAShapeError(`${name} has dtype ${t.dtype}, expected ${like.dtype}`);
}

function lastDim(t: Tensor): number {
  return t.shape[t.shape.length - 1];
}

/**
 * The model's dense operations in plain TypeScript (float64 math, results rounded to the inputs'
 * dtype). `ReferenceBackend` extends this class, which makes it a `ModelBackend`.
 */
export class ReferenceDenseOps implements DenseOps {
  async matmul(a: Tensor, b: Tensor, options: { transposeA?: boolean; transposeB?: boolean } = {}): Promise<Tensor> {
    live('a', a);
    live('b', b);
    if (a.shape.length !== 2 || b.shape.length !== 2) {
      throw new NSAShapeError(`matmul needs 2-D tensors, got a ${fmt(a.shape)} and b ${fmt(b.shape)}`);
    }
    if (a.dtype !== b.dtype) throw new NSAShapeError(`matmul dtypes differ: a ${a.dtype}, b ${b.dtype}`);
    const tA = options.transposeA ?? false;
    const tB = options.transposeB ?? false;
    const [M, K] = tA ? [a.shape[1], a.shape[0]] : a.shape;
    const [K2, N] = tB ? [b.shape[1], b.shape[0]] : b.shape;
    if (K !== K2) {
      throw new NSAShapeError(
        `matmul inner dims differ: a${tA ? 'ᵀ' : ''} ${fmt(a.shape)} has ${K}, b${tB ? 'ᵀ' : ''} ${fmt(b.shape)} has ${K2}`,
      );
    }
    return out(matmulKernel(floatData(a), floatData(b), M, K, N, tA, tB), [M, N], a.dtype);
  }

  async reshape(x: Tensor, shape: readonly number[]): Promise<Tensor> {
    live('x', x);
    if (shapeSize(shape) !== x.size) throw new NSAShapeError(`cannot reshape ${fmt(x.shape)} to ${fmt(shape)}`);
    // Shares storage: disposing a reference tensor only drops its handle, and no op writes in place except adamw.
    return new ReferenceTensor((x as ReferenceTensor).data, shape, x.dtype);
  }

  async add(a: Tensor, b: Tensor): Promise<Tensor> {
    live('a', a);
    sameShape('b', b, a);
    const x = floatData(a);
    const y = floatData(b);
    const z = new Float64Array(x.length);
    for (let i = 0; i < z.length; i++) z[i] = x[i] + y[i];
    return out(z, a.shape, a.dtype);
  }

  async scale(x: Tensor, factor: number): Promise<Tensor> {
    live('x', x);
    const data = floatData(x);
    const z = new Float64Array(data.length);
    for (let i = 0; i < z.length; i++) z[i] = data[i] * factor;
    return out(z, x.shape, x.dtype);
  }

  async sumOfSquares(x: Tensor): Promise<number> {
    live('x', x);
    const data = floatData(x);
    let sum = 0;
    for (let i = 0; i < data.length; i++) sum += data[i] * data[i];
    return sum;
  }

  async sliceRows(x: Tensor, start: number, count: number): Promise<Tensor> {
    live('x', x);
    const rows = x.shape[0];
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > rows) {
      throw new NSAShapeError(`sliceRows [${start}, ${start + count}) is outside the ${rows} rows of ${fmt(x.shape)}`);
    }
    const row = x.size / Math.max(rows, 1);
    const data = (x as ReferenceTensor).data;
    const part = data.slice(start * row, (start + count) * row);
    return new ReferenceTensor(part, [count, ...x.shape.slice(1)], x.dtype);
  }

  async concatRows(parts: readonly Tensor[]): Promise<Tensor> {
    if (parts.length === 0) throw new NSAShapeError('concatRows needs at least one tensor');
    const first = live('parts[0]', parts[0]);
    const tail = first.shape.slice(1);
    let rows = 0;
    parts.forEach((p, i) => {
      live(`parts[${i}]`, p);
      if (p.dtype !== first.dtype || p.shape.length !== first.shape.length || p.shape.slice(1).some((d, k) => d !== tail[k])) {
        throw new NSAShapeError(`concatRows: parts[${i}] is ${fmt(p.shape)} ${p.dtype}, expected [*, ${tail.join(', ')}] ${first.dtype}`);
      }
      rows += p.shape[0];
    });
    const isInt = first.dtype === 'int32';
    const size = rows * shapeSize(tail);
    const data = isInt ? new Int32Array(size) : new Float64Array(size);
    let offset = 0;
    for (const p of parts) {
      const src = (p as ReferenceTensor).data;
      (data as Float64Array).set(src as Float64Array, offset);
      offset += src.length;
    }
    return new ReferenceTensor(data, [rows, ...tail], first.dtype);
  }

  async rmsNorm(x: Tensor, weight: Tensor, eps: number): Promise<Tensor> {
    this.#checkNorm(x, weight);
    return out(rmsNormKernel(floatData(x), floatData(weight), eps), x.shape, x.dtype);
  }

  async rmsNormBackward(x: Tensor, weight: Tensor, eps: number, dy: Tensor): Promise<{ dx: Tensor; dWeight: Tensor }> {
    this.#checkNorm(x, weight);
    sameShape('dy', dy, x);
    const { dx, dw } = rmsNormBackwardKernel(floatData(x), floatData(weight), eps, floatData(dy));
    return { dx: out(dx, x.shape, x.dtype), dWeight: out(dw, weight.shape, weight.dtype) };
  }

  async rotary(x: Tensor, options: RotaryOptions = {}): Promise<Tensor> {
    live('x', x);
    if (x.shape.length !== 4 || lastDim(x) % 2 !== 0) {
      throw new NSAShapeError(`rotary needs x [B, T, H, D] with D even, got ${fmt(x.shape)}`);
    }
    const { start = 0, stride = 1, base = 10000, inverse = false } = options;
    return out(rotaryKernel(floatData(x), x.shape, start, stride, base, inverse), x.shape, x.dtype);
  }

  async swiglu(gate: Tensor, up: Tensor): Promise<Tensor> {
    live('gate', gate);
    sameShape('up', up, gate);
    return out(swigluKernel(floatData(gate), floatData(up)), gate.shape, gate.dtype);
  }

  async swigluBackward(gate: Tensor, up: Tensor, dy: Tensor): Promise<{ dGate: Tensor; dUp: Tensor }> {
    live('gate', gate);
    sameShape('up', up, gate);
    sameShape('dy', dy, gate);
    const { dGate, dUp } = swigluBackwardKernel(floatData(gate), floatData(up), floatData(dy));
    return { dGate: out(dGate, gate.shape, gate.dtype), dUp: out(dUp, gate.shape, gate.dtype) };
  }

  async activation(x: Tensor, kind: ActivationKind): Promise<Tensor> {
    live('x', x);
    return out(activationKernel(floatData(x), kind), x.shape, x.dtype);
  }

  async activationBackward(x: Tensor, kind: ActivationKind, dy: Tensor): Promise<Tensor> {
    live('x', x);
    sameShape('dy', dy, x);
    return out(activationBackwardKernel(floatData(x), kind, floatData(dy)), x.shape, x.dtype);
  }

  async softmaxCrossEntropy(
    logits: Tensor,
    targets: Tensor,
    withGradient: boolean,
  ): Promise<{ loss: number; count: number; dLogits?: Tensor }> {
    live('logits', logits);
    live('targets', targets);
    if (logits.shape.length !== 2) throw new NSAShapeError(`logits must be [M, V], got ${fmt(logits.shape)}`);
    const [M, V] = logits.shape;
    if (targets.dtype !== 'int32' || targets.shape.length !== 1 || targets.shape[0] !== M) {
      throw new NSAShapeError(`targets must be int32 [${M}], got ${targets.dtype} ${fmt(targets.shape)}`);
    }
    const ids = intData(targets);
    for (let i = 0; i < M; i++) {
      if (ids[i] < -1 || ids[i] >= V) throw new NSAShapeError(`targets[${i}] = ${ids[i]} is outside [-1, ${V})`);
    }
    const r = crossEntropyKernel(floatData(logits), ids, V, withGradient);
    return {
      loss: r.loss,
      count: r.count,
      dLogits: r.dLogits ? out(r.dLogits, logits.shape, logits.dtype) : undefined,
    };
  }

  async embedding(table: Tensor, ids: Tensor): Promise<Tensor> {
    const [V, D] = this.#checkEmbedding(table.shape, ids);
    live('table', table);
    const idx = intData(ids);
    this.#checkIds(idx, V);
    return out(embeddingKernel(floatData(table), idx, D), [idx.length, D], table.dtype);
  }

  async embeddingBackward(ids: Tensor, dy: Tensor, vocab: number): Promise<Tensor> {
    live('dy', dy);
    const [, D] = this.#checkEmbedding([vocab, lastDim(dy)], ids);
    const idx = intData(ids);
    if (dy.shape.length !== 2 || dy.shape[0] !== idx.length) {
      throw new NSAShapeError(`dy must be [${idx.length}, ${D}], got ${fmt(dy.shape)}`);
    }
    this.#checkIds(idx, vocab);
    return out(embeddingBackwardKernel(idx, floatData(dy), vocab, D), [vocab, D], dy.dtype);
  }

  async blockUnfold(x: Tensor, pos: Tensor, stride: number): Promise<Tensor> {
    const [B, , H, D] = this.#checkUnfold(x.shape, pos, stride);
    live('x', x);
    const l = pos.shape[0];
    const { y, C } = blockUnfoldKernel(floatData(x), x.shape, floatData(pos), l, stride);
    return out(y, [B, C, H, l * D], x.dtype);
  }

  async blockUnfoldBackward(
    xShape: readonly number[],
    pos: Tensor,
    stride: number,
    dy: Tensor,
  ): Promise<{ dx: Tensor; dPos: Tensor }> {
    const [B, T, H, D] = this.#checkUnfold(xShape, pos, stride);
    const l = pos.shape[0];
    const C = T >= l ? Math.floor((T - l) / stride) + 1 : 0;
    live('dy', dy);
    const want = [B, C, H, l * D];
    if (dy.shape.length !== 4 || dy.shape.some((d, i) => d !== want[i])) {
      throw new NSAShapeError(`dy has shape ${fmt(dy.shape)}, expected ${fmt(want)}`);
    }
    const { dx, dPos } = blockUnfoldBackwardKernel(xShape, l, stride, floatData(dy));
    return { dx: out(dx, xShape, dy.dtype), dPos: out(dPos, pos.shape, pos.dtype) };
  }

  async adamw(state: AdamWTensors, options: AdamWStep): Promise<void> {
    const { param, grad, m, v } = state;
    live('param', param);
    sameShape('grad', grad, param);
    sameShape('m', m, param);
    sameShape('v', v, param);
    if (!(options.step >= 1)) throw new NSAShapeError(`adamw step must be >= 1 (got ${options.step})`);
    const p = floatData(param);
    const mm = floatData(m);
    const vv = floatData(v);
    adamwKernel(p, floatData(grad), mm, vv, options);
    roundArray(p, param.dtype);
    roundArray(mm, m.dtype);
    roundArray(vv, v.dtype);
  }

  #checkNorm(x: Tensor, weight: Tensor): void {
    live('x', x);
    live('weight', weight);
    if (weight.shape.length !== 1 || weight.shape[0] !== lastDim(x)) {
      throw new NSAShapeError(`weight has shape ${fmt(weight.shape)}, expected [${lastDim(x)}] (x's last dim)`);
    }
  }

  #checkEmbedding(tableShape: readonly number[], ids: Tensor): [number, number] {
    live('ids', ids);
    if (tableShape.length !== 2) throw new NSAShapeError(`table must be [V, D], got ${fmt(tableShape)}`);
    if (ids.dtype !== 'int32' || ids.shape.length !== 1) {
      throw new NSAShapeError(`ids must be int32 [M], got ${ids.dtype} ${fmt(ids.shape)}`);
    }
    return [tableShape[0], tableShape[1]];
  }

  #checkIds(ids: Int32Array, V: number): void {
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] < 0 || ids[i] >= V) throw new NSAShapeError(`ids[${i}] = ${ids[i]} is outside the vocabulary [0, ${V})`);
    }
  }

  #checkUnfold(xShape: readonly number[], pos: Tensor, stride: number): number[] {
    live('pos', pos);
    if (xShape.length !== 4) throw new NSAShapeError(`blockUnfold needs x [B, T, H, D], got ${fmt(xShape)}`);
    if (pos.shape.length !== 2 || pos.shape[1] !== xShape[3]) {
      throw new NSAShapeError(`pos has shape ${fmt(pos.shape)}, expected [l, ${xShape[3]}]`);
    }
    if (!Number.isInteger(stride) || stride < 1) throw new NSAShapeError(`stride must be a positive integer (got ${stride})`);
    return [...xShape];
  }
}
