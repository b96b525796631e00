// Decoding: a GPU-resident cache (raw keys/values per branch, compressed keys/values) and a
// decode step that runs the forward kernels for TQ queries at positions Tk - TQ .. Tk - 1.
// A step reads only what it uses: c(t) compressed, the selected blocks and the window.
import {
  NSAShapeError,
  UnsupportedError,
  checkCacheAppend,
  checkCacheAppendCompressed,
  type FloatDType,
  type NSACache,
  type NSACacheOptions,
  type NSAConfig,
  type Tensor,
} from '@nsa/core';
import { guarded, type DeviceContext } from './device.js';
import { BACKEND_NAME, createStorageBuffer, gpuTensor } from './tensor.js';
import type { Sequence } from './tiling.js';
import { Workspace } from './workspace.js';

export class WebGPUNSACache implements NSACache {
  readonly backend = BACKEND_NAME;
  readonly config: NSAConfig;
  readonly batch: number;
  readonly dtype: FloatDType;
  readonly capacity: number;
  /** Compressed blocks the capacity allows. */
  readonly compressedCapacity: number;
  #length = 0;
  #compressedLength = 0;
  #disposed = false;
  readonly raw: { kSlc: GPUBuffer; vSlc: GPUBuffer; kWin: GPUBuffer; vWin: GPUBuffer };
  readonly compressed: { kCmp: GPUBuffer; vCmp: GPUBuffer };
  /** Decode steps' persistent buffers and bind groups (a repeated step creates no GPU object). */
  readonly workspace: Workspace;

  constructor(
    readonly ctx: DeviceContext,
    options: NSACacheOptions,
    /** From checkNSACacheOptions, which the backend runs first. */
    compressedCapacity: number,
  ) {
    const { config, batch, dtype, capacity } = options;
    this.config = config;
    this.batch = batch;
    this.dtype = dtype;
    this.capacity = capacity;
    this.compressedCapacity = compressedCapacity;
    const es = dtype === 'float16' ? 2 : 4;
    const { kvHeads: H, headDimK: DK, headDimV: DV } = config;
    const raw = (D: number, name: string) => createStorageBuffer(ctx, batch * capacity * H * D * es, `cache ${name}`);
    const cmp = (D: number, name: string) => createStorageBuffer(ctx, batch * Math.max(1, this.compressedCapacity) * H * D * es, `cache ${name}`);
    this.raw = { kSlc: raw(DK, 'kSlc'), vSlc: raw(DV, 'vSlc'), kWin: raw(DK, 'kWin'), vWin: raw(DV, 'vWin') };
    this.compressed = { kCmp: cmp(DK, 'kCmp'), vCmp: cmp(DV, 'vCmp') };
    this.workspace = new Workspace(ctx);
  }

  get length(): number {
    return this.#length;
  }

  get compressedLength(): number {
    return this.#compressedLength;
  }

  /** Sequences of a decode step with TQ queries. */
  sequences(TQ: number): Sequence[] {
    const seqs: Sequence[] = [];
    for (let b = 0; b < this.batch; b++) {
      seqs.push({
        qRow: b * TQ,
        nq: TQ,
        qPos: this.#length - TQ,
        keyBase: b * this.capacity,
        cmpBase: b * this.compressedCapacity,
        seqLen: this.#length,
        cmpLen: this.#compressedLength,
        bindRows: { raw: this.capacity, cmp: Math.max(1, this.compressedCapacity) },
      });
    }
    return seqs;
  }

  async append(tokens: { kSlc: Tensor; vSlc: Tensor; kWin: Tensor; vWin: Tensor }): Promise<void> {
    this.#assertLive();
    const { headDimK: DK, headDimV: DV } = this.config;
    const t = checkCacheAppend(this, tokens);
    await this.#copyRows(
      [
        [tokens.kSlc, this.raw.kSlc, DK],
        [tokens.vSlc, this.raw.vSlc, DV],
        [tokens.kWin, this.raw.kWin, DK],
        [tokens.vWin, this.raw.vWin, DV],
      ],
      t,
      this.#length,
      this.capacity,
      'append',
    );
    this.#length += t;
  }

  async appendCompressed(blocks: { kCmp: Tensor; vCmp: Tensor }): Promise<void> {
    this.#assertLive();
    const { headDimK: DK, headDimV: DV } = this.config;
    const c = checkCacheAppendCompressed(this, blocks);
    await this.#copyRows(
      [
        [blocks.kCmp, this.compressed.kCmp, DK],
        [blocks.vCmp, this.compressed.vCmp, DV],
      ],
      c,
      this.#compressedLength,
      this.compressedCapacity,
      'appendCompressed',
    );
    this.#compressedLength += c;
  }

  async #copyRows(list: [Tensor, GPUBuffer, number][], t: number, at: number, cap: number, what: string): Promise<void> {
    if (t === 0) return;
    const es = this.dtype === 'float16' ? 2 : 4;
    const H = this.config.kvHeads;
    for (const [, , D] of list) {
      if ((H * D * es) % 4 !== 0) throw new UnsupportedError(`${what}: rows of ${H * D} float16 values are not 4-byte aligned (use an even kvHeads * headDim)`);
    }
    await guarded(this.ctx, `cache.${what}`, () => {
      const encoder = this.ctx.device.createCommandEncoder({ label: `cache.${what}` });
      for (const [src, dst, D] of list) {
        const row = H * D * es;
        for (let b = 0; b < this.batch; b++) {
          encoder.copyBufferToBuffer(gpuTensor(src).buffer, b * t * row, dst, (b * cap + at) * row, t * row);
        }
      }
      this.ctx.device.queue.submit([encoder.finish()]);
    });
  }

  #assertLive(): void {
    if (this.#disposed) throw new NSAShapeError('the NSA cache was used after dispose()');
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const b of [...Object.values(this.raw), ...Object.values(this.compressed)]) b.destroy();
    this.workspace.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
