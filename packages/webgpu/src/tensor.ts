// GPU-resident tensors: one storage buffer each, read back through a mapped staging buffer.
import {
  BYTES_PER_ELEMENT,
  NSAShapeError,
  TensorBase,
  decodeHalf,
  encode,
  shapeSize,
  type DType,
  type HostArray,
} from '@nsa/core';
import { WebGPUError, guarded, type DeviceContext } from './device.js';

export const BACKEND_NAME = 'webgpu';

// The spec's flag values, spelled out so this module needs no GPUBufferUsage global at import time.
export const BUFFER_USAGE = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80 } as const;
const MAP_MODE_READ = 0x1;
const USAGE = BUFFER_USAGE.STORAGE | BUFFER_USAGE.COPY_SRC | BUFFER_USAGE.COPY_DST;

/** Bytes rounded up to a multiple of 4 (copies and bindings need it); never 0. */
export function paddedBytes(bytes: number): number {
  return Math.max(4, Math.ceil(bytes / 4) * 4);
}

/** Creates a storage buffer, with a precise error when it exceeds the device's maxBufferSize. */
export function createStorageBuffer(ctx: DeviceContext, bytes: number, label: string): GPUBuffer {
  if (ctx.lost) throw ctx.lost;
  const size = paddedBytes(bytes);
  if (size > ctx.limits.maxBufferSize) {
    throw new WebGPUError(
      'limit',
      `${label}: needs a ${size}-byte buffer but this device's maxBufferSize is ${ctx.limits.maxBufferSize}`,
    );
  }
  return ctx.device.createBuffer({ label, size, usage: USAGE });
}

export class WebGPUTensor extends TensorBase {
  constructor(
    readonly ctx: DeviceContext,
    readonly buffer: GPUBuffer,
    shape: readonly number[],
    dtype: DType,
  ) {
    super(shape, dtype, BACKEND_NAME);
  }

  /** Bytes of data (without padding). */
  get bytes(): number {
    return this.size * BYTES_PER_ELEMENT[this.dtype];
  }

  static empty(ctx: DeviceContext, shape: readonly number[], dtype: DType, label = 'tensor'): WebGPUTensor {
    const bytes = shapeSize(shape) * BYTES_PER_ELEMENT[dtype];
    return new WebGPUTensor(ctx, createStorageBuffer(ctx, bytes, `${label} [${shape.join(', ')}] ${dtype}`), shape, dtype);
  }

  static fromValues(ctx: DeviceContext, values: ArrayLike<number>, shape: readonly number[], dtype: DType): WebGPUTensor {
    const size = shapeSize(shape);
    if (values.length !== size) {
      throw new NSAShapeError(`tensor(): ${values.length} values do not fill shape [${shape.join(', ')}] (${size} elements)`);
    }
    if (dtype === 'float64' || dtype === 'bfloat16') {
      throw new NSAShapeError(`the webgpu backend stores float32, float16 and int32, not ${dtype}`);
    }
    const tensor = WebGPUTensor.empty(ctx, shape, dtype);
    const data = encode(values, dtype);
    const bytes = new Uint8Array(paddedBytes(data.byteLength));
    bytes.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    ctx.device.queue.writeBuffer(tensor.buffer, 0, bytes);
    return tensor;
  }

  protected async readData(): Promise<HostArray> {
    const ctx = this.ctx;
    const size = paddedBytes(this.bytes);
    const staging = await guarded(ctx, 'read()', () => {
      const buffer = ctx.device.createBuffer({ label: 'staging', size, usage: BUFFER_USAGE.MAP_READ | BUFFER_USAGE.COPY_DST });
      const encoder = ctx.device.createCommandEncoder();
      encoder.copyBufferToBuffer(this.buffer, 0, buffer, 0, size);
      ctx.device.queue.submit([encoder.finish()]);
      return buffer;
    });
    try {
      await staging.mapAsync(MAP_MODE_READ);
    } catch (error) {
      staging.destroy();
      throw ctx.lost ?? new WebGPUError('internal', `read(): mapping the staging buffer failed: ${String(error)}`, { cause: error });
    }
    const copy = staging.getMappedRange().slice(0, this.bytes);
    staging.unmap();
    staging.destroy();
    switch (this.dtype) {
      case 'int32':
        return new Int32Array(copy);
      case 'float16':
        return decodeHalf(new Uint16Array(copy), 'float16');
      default:
        return new Float32Array(copy);
    }
  }

  protected release(): void {
    this.buffer.destroy();
  }
}

/** Narrows a core Tensor that passed validation to ours. */
export function gpuTensor(t: { readonly backend: string }): WebGPUTensor {
  if (!(t instanceof WebGPUTensor)) throw new NSAShapeError('tensor does not belong to the webgpu backend');
  return t;
}
