// A host-memory stand-in for nsa_cuda.node, so the TypeScript layer (tensors, validation, argument
// plumbing) is tested on machines without a GPU. It records which native operators were called.
import type { DeviceBuffer, DeviceInfo, NativeAddon } from '../src/native.js';

export class HostBuffer implements DeviceBuffer {
  data: Uint8Array;
  freed = false;
  constructor(readonly bytes: number) {
    this.data = new Uint8Array(bytes);
  }
  free(): void {
    this.freed = true;
  }
  upload(src: ArrayBufferView, offset = 0): void {
    this.data.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength), offset);
  }
  async download(bytes = this.bytes): Promise<ArrayBuffer> {
    return this.data.slice(0, bytes).buffer;
  }
  copyFrom(src: DeviceBuffer, dstOffset: number, srcOffset: number, bytes: number): void {
    this.data.set((src as HostBuffer).data.subarray(srcOffset, srcOffset + bytes), dstOffset);
  }
  copy2d(src: DeviceBuffer, dstOffset: number, dstPitch: number, srcOffset: number, srcPitch: number, width: number, rows: number): void {
    for (let r = 0; r < rows; r++) this.copyFrom(src, dstOffset + r * dstPitch, srcOffset + r * srcPitch, width);
  }
  fill(byte: number): void {
    this.data.fill(byte);
  }
}

export function fakeAddon(info: Partial<DeviceInfo> = {}): NativeAddon & { calls: string[] } {
  const calls: string[] = [];
  const record = (name: string) => () => {
    calls.push(name);
  };
  return {
    calls,
    DeviceBuffer: HostBuffer,
    deviceInfo: () => ({ available: true, reason: 'Fake GPU (sm_90)', count: 1, driverVersion: 13000, runtimeVersion: 13000, ...info }),
    init: record('init'),
    synchronize: async () => {},
    recordEvent: () => 0,
    elapsedMs: () => 0,
    clearEvents: () => {},
    nsaForward: record('nsaForward'),
    nsaBackward: record('nsaBackward'),
    attentionForward: record('attentionForward'),
    attentionBackward: record('attentionBackward'),
    meanCompress: record('meanCompress'),
    randomNormal: record('randomNormal'),
    convert: record('convert'),
    holdGpu: record('holdGpu'),
  };
}
