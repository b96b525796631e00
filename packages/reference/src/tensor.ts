import { DisposedTensorError, NSAShapeError, roundToDType, shapeSize, TensorBase, type DType, type HostArray } from '@nsa/core';

export const REFERENCE_BACKEND = 'reference';

/** A backend's disposed flag, shared by the tensors it made. */
export interface Lifetime {
  readonly disposed: boolean;
}

/** Host storage of a reference tensor: float64 for every float dtype, int32 for int32. */
export type ReferenceData = Float64Array | Int32Array;

/**
 * A tensor of the reference backend. Float data is held as float64 whose values are already
 * rounded to the tensor's dtype, so float16 math here sees exactly what a float16 GPU buffer holds.
 */
export class ReferenceTensor extends TensorBase {
  #data: ReferenceData | undefined;
  readonly #owner: Lifetime | undefined;

  /**
   * Takes ownership of `data` (no copy); values must already be rounded to `dtype`. `owner` is
   * the backend's lifetime: once it is disposed, the tensor's data is no longer usable.
   */
  constructor(data: ReferenceData, shape: readonly number[], dtype: DType, owner?: Lifetime) {
    super(shape, dtype, REFERENCE_BACKEND);
    this.#owner = owner;
    const wantInt = dtype === 'int32';
    if (wantInt !== data instanceof Int32Array) {
      throw new NSAShapeError(`reference ${dtype} tensor needs ${wantInt ? 'Int32Array' : 'Float64Array'} storage`);
    }
    if (data.length !== this.size) {
      throw new NSAShapeError(`data has ${data.length} elements but shape [${shape.join(', ')}] needs ${this.size}`);
    }
    this.#data = data;
  }

  /** Copies host values into a new tensor, rounding each to `dtype`. */
  static from(values: ArrayLike<number>, shape: readonly number[], dtype: DType, owner?: Lifetime): ReferenceTensor {
    const size = shapeSize(shape);
    if (values.length !== size) {
      throw new NSAShapeError(`got ${values.length} values for shape [${shape.join(', ')}] (${size} elements)`);
    }
    if (dtype === 'int32') {
      const data = new Int32Array(size);
      for (let i = 0; i < size; i++) {
        const v = values[i];
        if (!Number.isInteger(v)) throw new NSAShapeError(`int32 tensor value ${i} is ${v}, not an integer`);
        data[i] = v;
      }
      return new ReferenceTensor(data, shape, dtype, owner);
    }
    return new ReferenceTensor(roundArray(Float64Array.from(values), dtype), shape, dtype, owner);
  }

  /** Zero-copy host access (do not write unless you own the tensor). */
  get data(): ReferenceData {
    if (this.#data === undefined) throw new DisposedTensorError(`reference tensor [${this.shape.join(', ')}] ${this.dtype}`);
    if (this.#owner?.disposed) {
      throw new DisposedTensorError(`reference tensor [${this.shape.join(', ')}] ${this.dtype} (its backend was disposed)`);
    }
    return this.#data;
  }

  protected readData(): Promise<HostArray> {
    const data = this.data;
    if (data instanceof Int32Array) return Promise.resolve(data.slice());
    if (this.dtype === 'float64') return Promise.resolve(data.slice());
    return Promise.resolve(Float32Array.from(data));
  }

  protected release(): void {
    this.#data = undefined;
  }
}

/** Rounds every element of `data` to `dtype` in place and returns it. */
export function roundArray(data: Float64Array, dtype: DType): Float64Array {
  if (dtype === 'float64') return data;
  if (dtype === 'float32') {
    for (let i = 0; i < data.length; i++) data[i] = Math.fround(data[i]);
    return data;
  }
  for (let i = 0; i < data.length; i++) data[i] = roundToDType(data[i], dtype);
  return data;
}

/** A float tensor's storage (the caller has validated dtype and ownership). */
export function floatData(t: unknown): Float64Array {
  if (!(t instanceof ReferenceTensor)) throw new NSAShapeError('expected a reference tensor');
  const data = t.data;
  if (!(data instanceof Float64Array)) throw new NSAShapeError(`expected a float tensor, got ${t.dtype}`);
  return data;
}

/** An int32 tensor's storage. */
export function intData(t: unknown): Int32Array {
  if (!(t instanceof ReferenceTensor)) throw new NSAShapeError('expected a reference tensor');
  const data = t.data;
  if (!(data instanceof Int32Array)) throw new NSAShapeError(`expected an int32 tensor, got ${t.dtype}`);
  return data;
}
