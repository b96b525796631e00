// The shape of nsa_cuda.node as this package uses it. Internal: not exported from the package.

/** Device memory owned by JavaScript (stream-ordered allocation on the addon's stream). */
export interface DeviceBuffer {
  readonly bytes: number;
  free(): void;
  upload(data: ArrayBufferView, offsetBytes?: number): void;
  download(bytes?: number): Promise<ArrayBuffer>;
  copyFrom(src: DeviceBuffer, dstOffset: number, srcOffset: number, bytes: number): void;
  copy2d(src: DeviceBuffer, dstOffset: number, dstPitch: number, srcOffset: number, srcPitch: number, widthBytes: number, rows: number): void;
  fill(byte: number): void;
}

export interface DeviceInfo {
  readonly available: boolean;
  readonly reason: string;
  readonly count: number;
  readonly name?: string;
  readonly major?: number;
  readonly minor?: number;
  readonly multiprocessors?: number;
  readonly memoryBytes?: number;
  readonly driverVersion: number;
  readonly runtimeVersion: number;
}

/** Sequences of one call: see SeqTable in native/tile.cuh. */
export interface NativeSeq {
  readonly table: DeviceBuffer;
  readonly host: Int32Array;
  readonly S: number;
  readonly rows: number;
  readonly maxKeys: number;
}

export interface NativeNSAConfig {
  l: number;
  d: number;
  ls: number;
  n: number;
  initialBlocks: number;
  localBlocks: number;
  window: number;
  HQ: number;
  H: number;
  Dk: number;
  Dv: number;
  scale: number;
}

export interface NativeNSAForward {
  dtype: number;
  cfg: NativeNSAConfig;
  seq: NativeSeq;
  q: DeviceBuffer;
  kCmp: DeviceBuffer;
  vCmp: DeviceBuffer;
  kSlc: DeviceBuffer;
  vSlc: DeviceBuffer;
  kWin: DeviceBuffer;
  vWin: DeviceBuffer;
  gates: DeviceBuffer;
  out: DeviceBuffer;
  oCmp: DeviceBuffer;
  oSlc?: DeviceBuffer;
  oWin?: DeviceBuffer;
  lse?: DeviceBuffer;
  blockIn?: DeviceBuffer;
  blockOut: DeviceBuffer;
}

export interface NativeNSABackward extends NativeNSAForward {
  dOut: DeviceBuffer;
  dq: DeviceBuffer;
  dkCmp: DeviceBuffer;
  dvCmp: DeviceBuffer;
  dkSlc: DeviceBuffer;
  dvSlc: DeviceBuffer;
  dkWin: DeviceBuffer;
  dvWin: DeviceBuffer;
  dGates: DeviceBuffer;
  blocks: DeviceBuffer;
}

export interface NativeAttention {
  dtype: number;
  seq: NativeSeq;
  HQ: number;
  H: number;
  Dk: number;
  Dv: number;
  scale: number;
  q: DeviceBuffer;
  k: DeviceBuffer;
  v: DeviceBuffer;
  out: DeviceBuffer;
  lse?: DeviceBuffer;
}

export interface NativeAttentionBackward extends NativeAttention {
  dOut: DeviceBuffer;
  dq: DeviceBuffer;
  dk: DeviceBuffer;
  dv: DeviceBuffer;
}

export interface NativeAddon {
  DeviceBuffer: new (bytes: number) => DeviceBuffer;
  deviceInfo(): DeviceInfo;
  init(): void;
  synchronize(): Promise<void>;
  recordEvent(): number;
  elapsedMs(start: number, end: number): number;
  clearEvents(): void;
  nsaForward(args: NativeNSAForward): void;
  nsaBackward(args: NativeNSABackward): void;
  attentionForward(args: NativeAttention): void;
  attentionBackward(args: NativeAttentionBackward): void;
  meanCompress(args: { dtype: number; x: DeviceBuffer; out: DeviceBuffer; B: number; T: number; H: number; D: number; l: number; d: number }): void;
  randomNormal(args: { dtype: number; dst: DeviceBuffer; n: number; seed: number; stddev?: number; mean?: number }): void;
  convert(args: { dtype: number; src: DeviceBuffer; dst: DeviceBuffer; n: number; toF32: boolean }): void;
  /** Benchmarks: keeps the GPU busy for `us` µs, so calls queued after it run back to back. */
  holdGpu(args: { us: number }): void;
}

/** dtype codes of the addon. */
export const DTYPE_CODE = { float32: 0, float16: 1, bfloat16: 2 } as const;
