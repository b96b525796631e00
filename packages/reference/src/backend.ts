// The reference backend: validates with core's helpers, runs the host functions in float64 and
// rounds every result to the inputs' dtype.
import {
  checkAttention,
  checkAttentionBackward,
  checkNSABackward,
  checkNSADecode,
  checkNSAForward,
  disposeAll,
  isDType,
  mapNSAInputs,
  NSAError,
  NSAShapeError,
  type AttentionArgs,
  type AttentionBackwardArgs,
  type AttentionForwardResult,
  type AttentionGradients,
  type Backend,
  type DType,
  type FloatDType,
  type NSABackwardArgs,
  type NSACacheOptions,
  type NSADecodeArgs,
  type NSADecodeResult,
  type NSAForwardArgs,
  type NSAForwardResult,
  type NSAGradients,
  type NSAInputs,
  type NSASaved,
} from '@nsa/core';
import { ReferenceNSACache } from './decode-cache.js';
import { ReferenceDenseOps } from './dense/ops.js';
import { attentionBackwardHost, attentionForwardHost } from './dense-attention.js';
import { nsaBackwardHost } from './nsa-backward.js';
import { nsaDecodeHost } from './nsa-decode.js';
import { nsaForwardHost } from './nsa-forward.js';
import { ReferenceSaved } from './saved.js';
import { floatData, intData, REFERENCE_BACKEND, ReferenceTensor, roundArray } from './tensor.js';

/** Implements Backend and, through ReferenceDenseOps, the model's DenseOps (a ModelBackend). */
export class ReferenceBackend extends ReferenceDenseOps implements Backend {
  readonly name = REFERENCE_BACKEND;
  readonly device = 'CPU (pure TypeScript, float64)';
  readonly dtypes: readonly FloatDType[] = Object.freeze(['float64', 'float32', 'float16', 'bfloat16'] as FloatDType[]);
  readonly #lifetime = { disposed: false };

  tensor(values: ArrayLike<number>, shape: readonly number[], dtype: DType): ReferenceTensor {
    this.#assertLive();
    if (!isDType(dtype)) throw new NSAShapeError(`unknown dtype ${String(dtype)}`);
    return ReferenceTensor.from(values, shape, dtype, this.#lifetime);
  }

  async nsaForward(args: NSAForwardArgs): Promise<NSAForwardResult> {
    this.#assertLive();
    const dims = checkNSAForward(args, this.name, this.dtypes);
    const result = nsaForwardHost(mapNSAInputs(args, floatData), args.config, {
      B: dims.B,
      T: dims.T,
      cuSeqlens: args.cuSeqlens,
      blockIndices: args.blockIndices ? intData(args.blockIndices) : undefined,
    });
    const output = this.#wrap(roundArray(result.output, dims.dtype), [dims.B, dims.T, dims.HQ, dims.Dv], dims.dtype);
    const blockIndices = this.#wrap(result.blockIndices, [dims.B, dims.T, dims.H, dims.n], 'int32');
    const saved = new ReferenceSaved(result.lse);
    return { output, blockIndices, saved, dispose: () => disposeAll([output, blockIndices, saved]) };
  }

  async nsaBackward(args: NSABackwardArgs): Promise<NSAGradients> {
    this.#assertLive();
    const dims = checkNSABackward(args, this.name, this.dtypes);
    const grads = nsaBackwardHost(mapNSAInputs(args, floatData), args.config, {
      B: dims.B,
      T: dims.T,
      cuSeqlens: args.cuSeqlens,
      blockIndices: intData(args.forward.blockIndices),
      dOutput: floatData(args.dOutput),
      lse: savedOf(args.forward.saved).lse,
    });
    const wrap = (data: Float64Array, like: keyof NSAInputs) => this.#wrap(roundArray(data, dims.dtype), args[like].shape, dims.dtype);
    const result = {
      dq: wrap(grads.dq, 'q'),
      dkCmp: wrap(grads.dkCmp, 'kCmp'),
      dvCmp: wrap(grads.dvCmp, 'vCmp'),
      dkSlc: wrap(grads.dkSlc, 'kSlc'),
      dvSlc: wrap(grads.dvSlc, 'vSlc'),
      dkWin: wrap(grads.dkWin, 'kWin'),
      dvWin: wrap(grads.dvWin, 'vWin'),
      dGates: wrap(grads.dGates, 'gates'),
    };
    return { ...result, dispose: () => disposeAll(result) };
  }

  createNSACache(options: NSACacheOptions): ReferenceNSACache {
    this.#assertLive();
    return new ReferenceNSACache(options);
  }

  async nsaDecode(args: NSADecodeArgs): Promise<NSADecodeResult> {
    this.#assertLive();
    const dims = checkNSADecode(args, this.name);
    const cache = args.cache;
    if (!(cache instanceof ReferenceNSACache)) throw new NSAShapeError('cache was not made by ReferenceBackend.createNSACache');
    const result = nsaDecodeHost({
      config: cache.config,
      store: cache.store,
      batch: cache.batch,
      capacity: cache.capacity,
      compressedCapacity: cache.compressedCapacity,
      length: cache.length,
      q: floatData(args.q),
      gates: floatData(args.gates),
      TQ: dims.TQ,
      blockIndices: args.blockIndices ? intData(args.blockIndices) : undefined,
    });
    const output = this.#wrap(roundArray(result.output, dims.dtype), [dims.B, dims.TQ, dims.HQ, dims.Dv], dims.dtype);
    const blockIndices = this.#wrap(result.blockIndices, [dims.B, dims.TQ, dims.H, dims.n], 'int32');
    return { output, blockIndices, dispose: () => disposeAll([output, blockIndices]) };
  }

  async attentionForward(args: AttentionArgs): Promise<AttentionForwardResult> {
    this.#assertLive();
    const dims = checkAttention(args, this.name, this.dtypes);
    const result = attentionForwardHost(floatData(args.q), floatData(args.k), floatData(args.v), {
      ...dims,
      cuSeqlens: args.cuSeqlens,
    });
    const output = this.#wrap(roundArray(result.output, dims.dtype), [dims.B, dims.TQ, dims.HQ, dims.Dv], dims.dtype);
    const saved = new ReferenceSaved(result.lse);
    return { output, saved, dispose: () => disposeAll([output, saved]) };
  }

  async attentionBackward(args: AttentionBackwardArgs): Promise<AttentionGradients> {
    this.#assertLive();
    const dims = checkAttentionBackward(args, this.name, this.dtypes);
    const grads = attentionBackwardHost(
      floatData(args.q),
      floatData(args.k),
      floatData(args.v),
      floatData(args.dOutput),
      { ...dims, cuSeqlens: args.cuSeqlens },
      savedOf(args.forward.saved).lse,
    );
    const dq = this.#wrap(roundArray(grads.dq, dims.dtype), args.q.shape, dims.dtype);
    const dk = this.#wrap(roundArray(grads.dk, dims.dtype), args.k.shape, dims.dtype);
    const dv = this.#wrap(roundArray(grads.dv, dims.dtype), args.v.shape, dims.dtype);
    return { dq, dk, dv, dispose: () => disposeAll([dq, dk, dv]) };
  }

  /** Work runs synchronously inside each call, so there is never anything queued. */
  async synchronize(): Promise<void> {
    this.#assertLive();
  }

  /** Makes the backend and every tensor it made unusable. */
  dispose(): void {
    this.#lifetime.disposed = true;
  }

  #wrap(data: Float64Array | Int32Array, shape: readonly number[], dtype: DType): ReferenceTensor {
    return new ReferenceTensor(data, shape, dtype, this.#lifetime);
  }

  #assertLive(): void {
    if (this.#lifetime.disposed) throw new NSAError('NSA_DISPOSED', "backend 'reference' was used after dispose()");
  }
}

export function createReferenceBackend(): ReferenceBackend {
  return new ReferenceBackend();
}


function savedOf(saved: NSASaved): ReferenceSaved {
  if (!(saved instanceof ReferenceSaved)) throw new NSAShapeError('forward.saved was not made by the reference backend');
  return saved;
}
