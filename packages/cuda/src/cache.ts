// Decoding cache on the GPU: raw keys/values of the selection and window branches
// [B, capacity, H, D] and compressed keys/values [B, compressedCount(capacity), H, D].
import {
  BYTES_PER_ELEMENT,
  NSAShapeError,
  checkCacheAppend,
  checkCacheAppendCompressed,
  checkNSACacheOptions,
  disposeAll,
  type FloatDType,
  type NSACache,
  type NSACacheOptions,
  type NSAConfig,
  type Tensor,
} from '@nsa/core';
import type { CudaBackend } from './backend.js';
import type { DeviceBuffer } from './native.js';
import type { CudaTensor } from './tensor.js';

export class CudaNSACache implements NSACache {
  readonly backend = 'cuda';
  readonly config: NSAConfig;
  readonly batch: number;
  readonly dtype: FloatDType;
  readonly capacity: number;
  readonly compressedCapacity: number;
  #length = 0;
  #compressed = 0;
  readonly #raw: Record<'kSlc' | 'vSlc' | 'kWin' | 'vWin', CudaTensor>;
  readonly #cmp: Record<'kCmp' | 'vCmp', CudaTensor>;
  #disposed = false;

  constructor(backend: CudaBackend, options: NSACacheOptions) {
    const { config, batch, dtype, capacity } = options;
    this.compressedCapacity = checkNSACacheOptions(options, 'cuda', backend.dtypes);
    this.config = config;
    this.batch = batch;
    this.dtype = dtype;
    this.capacity = capacity;
    const { kvHeads: H, headDimK: Dk, headDimV: Dv } = config;
    this.#raw = {
      kSlc: backend.empty([batch, capacity, H, Dk], dtype),
      vSlc: backend.empty([batch, capacity, H, Dv], dtype),
      kWin: backend.empty([batch, capacity, H, Dk], dtype),
      vWin: backend.empty([batch, capacity, H, Dv], dtype),
    };
    const C = Math.max(1, this.compressedCapacity);
    this.#cmp = { kCmp: backend.empty([batch, C, H, Dk], dtype), vCmp: backend.empty([batch, C, H, Dv], dtype) };
  }

  get length(): number {
    return this.#length;
  }

  get compressedLength(): number {
    return this.#compressed;
  }

  /** Device buffers for the decode kernel. */
  buffers(): Record<'kCmp' | 'vCmp' | 'kSlc' | 'vSlc' | 'kWin' | 'vWin', DeviceBuffer> {
    this.#live();
    return {
      kCmp: this.#cmp.kCmp.buffer,
      vCmp: this.#cmp.vCmp.buffer,
      kSlc: this.#raw.kSlc.buffer,
      vSlc: this.#raw.vSlc.buffer,
      kWin: this.#raw.kWin.buffer,
      vWin: this.#raw.vWin.buffer,
    };
  }

  async append(tokens: { kSlc: Tensor; vSlc: Tensor; kWin: Tensor; vWin: Tensor }): Promise<void> {
    this.#live();
    const t = checkCacheAppend(this, tokens);
    for (const name of ['kSlc', 'vSlc', 'kWin', 'vWin'] as const) {
      copyRows(this.#raw[name], tokens[name] as CudaTensor, this.#length, this.capacity, t, this.batch);
    }
    this.#length += t;
  }

  async appendCompressed(blocks: { kCmp: Tensor; vCmp: Tensor }): Promise<void> {
    this.#live();
    const c = checkCacheAppendCompressed(this, blocks);
    copyRows(this.#cmp.kCmp, blocks.kCmp as CudaTensor, this.#compressed, this.compressedCapacity, c, this.batch);
    copyRows(this.#cmp.vCmp, blocks.vCmp as CudaTensor, this.#compressed, this.compressedCapacity, c, this.batch);
    this.#compressed += c;
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    disposeAll(this.#raw);
    disposeAll(this.#cmp);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #live(): void {
    if (this.#disposed) throw new NSAShapeError('the NSA cache was used after dispose()');
  }
}

/** dst[b, at .. at+t) = src[b, 0 .. t) for every batch row b (dst holds `capacity` rows per batch). */
function copyRows(dst: CudaTensor, src: CudaTensor, at: number, capacity: number, t: number, batch: number): void {
  if (t === 0) return;
  const rowBytes = (src.size / (batch * t)) * BYTES_PER_ELEMENT[src.dtype];
  dst.buffer.copy2d(src.buffer, at * rowBytes, capacity * rowBytes, 0, t * rowBytes, t * rowBytes, batch);
}
