// A fixed-capacity decoding cache (NSA-SPEC.md, "Decoding"): raw keys/values of the selection and
// window branches, and the compressed keys/values the caller's φ made from them.
import {
  checkCacheAppend,
  checkCacheAppendCompressed,
  checkNSACacheOptions,
  createNSAConfig,
  NSAError,
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
    this.compressedCapacity = checkNSACacheOptions({ ...options, config: this.config }, REFERENCE_BACKEND, FLOAT_DTYPES);
    this.batch = batch;
    this.capacity = capacity;
    this.dtype = dtype;
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
    const t = checkCacheAppend(this, tokens);
    copyRows(floatData(tokens.kSlc), store.kSlc, this.batch, t, this.capacity, this.#length, H * Dk);
    copyRows(floatData(tokens.vSlc), store.vSlc, this.batch, t, this.capacity, this.#length, H * Dv);
    copyRows(floatData(tokens.kWin), store.kWin, this.batch, t, this.capacity, this.#length, H * Dk);
    copyRows(floatData(tokens.vWin), store.vWin, this.batch, t, this.capacity, this.#length, H * Dv);
    this.#length += t;
  }

  async appendCompressed(blocks: { kCmp: Tensor; vCmp: Tensor }): Promise<void> {
    const store = this.store;
    const { kvHeads: H, headDimK: Dk, headDimV: Dv } = this.config;
    const c = checkCacheAppendCompressed(this, blocks);
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
