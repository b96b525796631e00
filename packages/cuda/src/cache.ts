// Decoding cache on the GPU: raw keys/values of the selection and window branches
// [B, capacity, H, D] and compressed keys/values [B, compressedCount(capacity), H, D].
import {
  BYTES_PER_ELEMENT,
  NSAShapeError,
  checkTensor,
  compressedCount,
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
    if (!Number.isInteger(batch) || batch < 1) throw new NSAShapeError(`cache batch must be a positive integer (got ${batch})`);
    if (!Number.isInteger(capacity) || capacity < 1) throw new NSAShapeError(`cache capacity must be a positive integer (got ${capacity})`);
    if (!backend.dtypes.includes(dtype)) throw new NSAShapeError(`cache dtype ${dtype} is not supported by backend 'cuda'`);
    this.config = config;
    this.batch = batch;
    this.dtype = dtype;
    this.capacity = capacity;
    this.compressedCapacity = compressedCount(capacity, config);
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
    const t = tokens.kSlc?.shape?.[1];
    const { kvHeads: H, headDimK: Dk, headDimV: Dv } = this.config;
    for (const name of ['kSlc', 'vSlc', 'kWin', 'vWin'] as const) {
      const D = name[0] === 'k' ? Dk : Dv;
      checkTensor(name, tokens[name], [this.batch, t, H, D], 'cuda');
      if (tokens[name].dtype !== this.dtype) throw new NSAShapeError(`${name} has dtype ${tokens[name].dtype}, expected ${this.dtype} (the cache's)`);
    }
    if (this.#length + t > this.capacity) {
      throw new NSAShapeError(`cache overflow: ${this.#length} + ${t} tokens exceed capacity ${this.capacity}`);
    }
    for (const name of ['kSlc', 'vSlc', 'kWin', 'vWin'] as const) {
      copyRows(this.#raw[name], tokens[name] as CudaTensor, this.#length, this.capacity, t, this.batch);
    }
    this.#length += t;
  }

  async appendCompressed(blocks: { kCmp: Tensor; vCmp: Tensor }): Promise<void> {
    this.#live();
    const c = blocks.kCmp?.shape?.[1];
    const { kvHeads: H, headDimK: Dk, headDimV: Dv } = this.config;
    checkTensor('kCmp', blocks.kCmp, [this.batch, c, H, Dk], 'cuda');
    checkTensor('vCmp', blocks.vCmp, [this.batch, c, H, Dv], 'cuda');
    for (const t of [blocks.kCmp, blocks.vCmp]) {
      if (t.dtype !== this.dtype) throw new NSAShapeError(`compressed block has dtype ${t.dtype}, expected ${this.dtype}`);
    }
    if (this.#compressed + c > this.compressedCapacity) {
      throw new NSAShapeError(`compressed cache overflow: ${this.#compressed} + ${c} blocks exceed ${this.compressedCapacity}`);
    }
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
