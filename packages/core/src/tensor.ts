import { DisposedTensorError } from './errors.js';
import { shapeSize, type DType, type HostArray } from './dtype.js';

/**
 * A backend-owned n-dimensional array. Data stays on the backend's device between operations;
 * `read()` copies it to the host. Dispose what you create: GPU memory is not garbage collected.
 */
export interface Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Name of the backend that owns the data. */
  readonly backend: string;
  /** Number of elements. */
  readonly size: number;
  readonly disposed: boolean;
  /** Copies the data to the host: float64 -> Float64Array, int32 -> Int32Array, other floats -> Float32Array. */
  read(): Promise<HostArray>;
  /** Frees the data; idempotent. Any later use throws `DisposedTensorError`. */
  dispose(): void;
  [Symbol.dispose](): void;
}

/** Common bookkeeping for backend tensors: shape checks and the disposed state. */
export abstract class TensorBase implements Tensor {
  readonly shape: readonly number[];
  readonly size: number;
  #disposed = false;

  protected constructor(
    shape: readonly number[],
    readonly dtype: DType,
    readonly backend: string,
  ) {
    this.size = shapeSize(shape);
    this.shape = Object.freeze([...shape]);
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Throws if disposed; call at the start of every use. */
  assertLive(what = 'tensor'): void {
    if (this.#disposed) throw new DisposedTensorError(`${what} [${this.shape.join(', ')}] ${this.dtype}`);
  }

  read(): Promise<HostArray> {
    this.assertLive();
    return this.readData();
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.release();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  protected abstract readData(): Promise<HostArray>;
  protected abstract release(): void;
}

/** Disposes every tensor-like value in a record or list, skipping undefined. */
export function disposeAll(values: Iterable<{ dispose(): void } | undefined> | Record<string, { dispose(): void } | undefined>): void {
  const list = Symbol.iterator in values ? values : Object.values(values);
  for (const value of list as Iterable<{ dispose(): void } | undefined>) value?.dispose();
}
