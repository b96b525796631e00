// A fixed-capacity decoding cache (NSA-SPEC.md, "Decoding"): raw keys/values of the selection and
// window branches, and the compressed keys/values the caller's φ made from them.
import {
  checkTensor,
  compressedCount,
  createNSAConfig,
  NSAError,
  NSAShapeError,
  type FloatDType,
  type NSACache,
  type NSACacheOptions,
  type NSAConfig,
  type Tensor,
} from '@nsa/core';
import { floatData, REFERENCE_BACKEND } from './tensor.js';

const FLOAT_DTYPES: readonly FloatDType[] = ['float64', 'float32', 'float16', 'bfloat16'];

export class ReferenceNSACache implements NSACache {
  readonly backend = REFERENCE_BACKEND;
  readonly config: NSAConfig;
  readonly batch: number;
  readonly dtype: FloatDType;
  readonly capacity: number;
  /** Compressed blocks the capacity allows: compressedCount(capacity). */
  readonly compressedCapacity: number;
  #length = 0;
  #compressedLength = 0;
  #store: CacheStore | undefined;

  constructor(options: NSACacheOptions) {
    const { batch, capacity, dtype } = options;
    // Re-validate so a hand-made config object cannot slip through.
    this.config = createNSAConfig({ ...options.config });
    if (!Number.isInteger(batch) || batch < 1) throw new NSAShapeError(`cache batch = ${batch} must be a positive integer`);
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new NSAShapeError(`cache capacity = ${capacity} must be a positive integer`);
    }
    if (!FLOAT_DTYPES.includes(dtype)) throw new NSAShapeError(`cache dtype ${dtype} must be one of ${FLOAT_DTYPES.join(', ')}`);
    this.batch = batch;
    this.capacity = capacity;
    this.dtype = dtype;
    this.compressedCapacity = compressedCount(capacity, this.config);
    const { kvHeads: H, headDimK: Dk, headDimV: Dv } = this.config;
    const raw = batch * capacity * H;
    const cmp = batch * this.compressedCapacity * H;
    this.#store = {
      kSlc: new Float64Array(raw * Dk),
      vSlc: new Float64Array(raw * Dv),
      kWin: new Float64Array(raw * Dk),
      vWin: new Float64Array(raw * Dv),
      kCmp: new Float64Array(cmp * Dk),
      vCmp: new Float64Array(cmp * Dv),
    };
  }

  get length(): number {
    return this.#length;
  }

  get compressedLength(): number {
    return this.#compressedLength;
  }

  /** The storage, [B, capacity, H, D] raw and [B, compressedCapacity, H, D] compressed. */
  get store(): CacheStore {
    if (!this.#store) throw new NSAError('NSA_DISPOSED', 'NSA cache was used after dispose()');
    return this.#store;
  }

  async append(tokens: { kSlc: Tensor; vSlc: Tensor; kWin: Tensor; vWin: Tensor }): Promise<void> {
    const store = this.store;
    const { kvHeads: H, headDimK: Dk, headDimV: Dv } = this.config;
    const t = this.#checkBlock('kSlc', tokens?.kSlc, [this.batch, null, H, Dk]);
    for (const [name, dim] of [['vSlc', Dv], ['kWin', Dk], ['vWin', Dv]] as const) {
      this.#checkBlock(name, tokens[name], [this.batch, t, H, dim]);
    }
    if (this.#length + t > this.capacity) {
      throw new NSAShapeError(
        `cache overflow: appending ${t} tokens to ${this.#length} would exceed the capacity of ${this.capacity}`,
      );
    }
    copyRows(floatData(tokens.kSlc), store.kSlc, this.batch, t, this.capacity, this.#length, H * Dk);
    copyRows(floatData(tokens.vSlc), store.vSlc, this.batch, t, this.capacity, this.#length, H * Dv);
    copyRows(floatData(tokens.kWin), store.kWin, this.batch, t, this.capacity, this.#length, H * Dk);
    copyRows(floatData(tokens.vWin), store.vWin, this.batch, t, this.capacity, this.#length, H * Dv);
    this.#length += t;
  }

  async appendCompressed(blocks: { kCmp: Tensor; vCmp: Tensor }): Promise<void> {
    const store = this.store;
    const { kvHeads: H, headDimK: Dk, headDimV: Dv } = this.config;
    const c = this.#checkBlock('kCmp', blocks?.kCmp, [this.batch, null, H, Dk]);
    this.#checkBlock('vCmp', blocks.vCmp, [this.batch, c, H, Dv]);
    const complete = compressedCount(this.#length, this.config);
    if (this.#compressedLength + c > complete) {
      throw new NSAShapeError(
        `appending ${c} compressed blocks to ${this.#compressedLength} would exceed the ${complete} blocks that ` +
          `${this.#length} cached tokens complete: append the raw tokens first`,
      );
    }
    const cap = this.compressedCapacity;
    copyRows(floatData(blocks.kCmp), store.kCmp, this.batch, c, cap, this.#compressedLength, H * Dk);
    copyRows(floatData(blocks.vCmp), store.vCmp, this.batch, c, cap, this.#compressedLength, H * Dv);
    this.#compressedLength += c;
  }

  dispose(): void {
    this.#store = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #checkBlock(name: string, t: Tensor | undefined, shape: (number | null)[]): number {
    const checked = checkTensor(name, t, shape, REFERENCE_BACKEND);
    if (checked.dtype !== this.dtype) throw new NSAShapeError(`${name} has dtype ${checked.dtype}, expected the cache's ${this.dtype}`);
    return checked.shape[1];
  }
}

export interface CacheStore {
  readonly kSlc: Float64Array;
  readonly vSlc: Float64Array;
  readonly kWin: Float64Array;
  readonly vWin: Float64Array;
  readonly kCmp: Float64Array;
  readonly vCmp: Float64Array;
}

/** Copies src [B, rows, width] into dst [B, capacity, width] starting at row `at`. */
function copyRows(src: Float64Array, dst: Float64Array, B: number, rows: number, capacity: number, at: number, width: number): void {
  for (let b = 0; b < B; b++) {
    dst.set(src.subarray(b * rows * width, (b + 1) * rows * width), (b * capacity + at) * width);
  }
}
