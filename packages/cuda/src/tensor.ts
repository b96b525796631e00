// Device tensors: a shape and dtype over a DeviceBuffer. read() copies to the host off the
// JavaScript thread; dispose() frees the memory (stream-ordered, so queued work finishes first).
import { BYTES_PER_ELEMENT, TensorBase, decodeHalf, shapeSize, type DType, type HostArray } from '@nsa/core';
import type { DeviceBuffer, NativeAddon } from './native.js';

export class CudaTensor extends TensorBase {
  readonly buffer: DeviceBuffer;

  constructor(addon: NativeAddon, shape: readonly number[], dtype: DType, buffer?: DeviceBuffer) {
    super(shape, dtype, 'cuda');
    this.buffer = buffer ?? new addon.DeviceBuffer(shapeSize(shape) * BYTES_PER_ELEMENT[dtype]);
  }

  get bytes(): number {
    return this.size * BYTES_PER_ELEMENT[this.dtype];
  }

  protected async readData(): Promise<HostArray> {
    const raw = await this.buffer.download(this.bytes);
    switch (this.dtype) {
      case 'int32':
        return new Int32Array(raw);
      case 'float32':
        return new Float32Array(raw);
      case 'float64':
        return new Float64Array(raw);
      case 'float16':
      case 'bfloat16':
        return decodeHalf(new Uint16Array(raw), this.dtype);
    }
  }

  protected release(): void {
    this.buffer.free();
  }
}

/** The device buffer behind a validated tensor of this backend. */
export function bufferOf(t: { buffer?: DeviceBuffer } | object): DeviceBuffer {
  return (t as CudaTensor).buffer;
}
