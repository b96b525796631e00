import type { NSAConfig } from './config.js';
import type { DType, FloatDType } from './dtype.js';
import type { Tensor } from './tensor.js';

/**
 * The operator's tensor inputs (NSA-SPEC.md). Layout is token-major and row-major:
 * q [B, T, HQ, Dk]; kCmp [B, C, H, Dk], vCmp [B, C, H, Dv] (already compressed by the caller's φ);
 * kSlc/kWin [B, T, H, Dk], vSlc/vWin [B, T, H, Dv]; gates [B, T, HQ, 3] in the order cmp, slc, win.
 * Every float input has the same dtype. A caller that wants shared keys passes one tensor twice.
 */
export interface NSAInputs {
  readonly q: Tensor;
  readonly kCmp: Tensor;
  readonly vCmp: Tensor;
  readonly kSlc: Tensor;
  readonly vSlc: Tensor;
  readonly kWin: Tensor;
  readonly vWin: Tensor;
  readonly gates: Tensor;
}

/** Each of the eight inputs through `f` (a backend's device buffers or host arrays, say). */
export function mapNSAInputs<T>(args: NSAInputs, f: (t: Tensor) => T): { readonly [K in keyof NSAInputs]: T } {
  return {
    q: f(args.q),
    kCmp: f(args.kCmp),
    vCmp: f(args.vCmp),
    kSlc: f(args.kSlc),
    vSlc: f(args.vSlc),
    kWin: f(args.kWin),
    vWin: f(args.vWin),
    gates: f(args.gates),
  };
}

export interface NSAForwardArgs extends NSAInputs {
  readonly config: NSAConfig;
  /** int32 [B, T, H, n], ascending, -1 padded: skip the selection scores and use these blocks. */
  readonly blockIndices?: Tensor;
  /**
   * Varlen: B = 1 and the T tokens are packed sequences with these cumulative offsets
   * (length S + 1, from 0 to T). kCmp/vCmp then hold each sequence's compressed blocks, packed
   * in the same order (offsets from `varlenLayout`).
   */
  readonly cuSeqlens?: ArrayLike<number>;
}

/** Opaque per-backend state that the backward pass needs (softmax statistics, say). */
export interface NSASaved {
  readonly backend: string;
  dispose(): void;
}

export interface NSAForwardResult {
  /** [B, T, HQ, Dv] in the inputs' dtype. */
  readonly output: Tensor;
  /** int32 [B, T, H, n]: the blocks used (a copy when the caller supplied them). */
  readonly blockIndices: Tensor;
  readonly saved: NSASaved;
  /** Disposes output, blockIndices and saved. */
  dispose(): void;
}

export interface NSABackwardArgs extends NSAInputs {
  readonly config: NSAConfig;
  readonly cuSeqlens?: ArrayLike<number>;
  /** The result of `nsaForward` on the same inputs. */
  readonly forward: NSAForwardResult;
  /** Gradient of the loss with respect to the output, [B, T, HQ, Dv]. */
  readonly dOutput: Tensor;
}

/** Gradients, each shaped and typed like its input. The block choice is a constant. */
export interface NSAGradients {
  readonly dq: Tensor;
  readonly dkCmp: Tensor;
  readonly dvCmp: Tensor;
  readonly dkSlc: Tensor;
  readonly dvSlc: Tensor;
  readonly dkWin: Tensor;
  readonly dvWin: Tensor;
  readonly dGates: Tensor;
  dispose(): void;
}

export interface NSACacheOptions {
  readonly config: NSAConfig;
  readonly batch: number;
  readonly dtype: FloatDType;
  /** Most raw tokens the cache will hold. */
  readonly capacity: number;
}

/**
 * Decoding state for B sequences of equal length: raw keys/values of the selection and window
 * branches, and the compressed keys/values that the caller's φ made from them.
 */
export interface NSACache {
  readonly backend: string;
  readonly config: NSAConfig;
  readonly batch: number;
  readonly dtype: FloatDType;
  readonly capacity: number;
  /** Raw tokens held (Tk). */
  readonly length: number;
  /** Compressed blocks held; must equal compressedCount(length) before a decode step. */
  readonly compressedLength: number;
  /** Appends t raw tokens: kSlc/kWin [B, t, H, Dk], vSlc/vWin [B, t, H, Dv]. */
  append(tokens: { kSlc: Tensor; vSlc: Tensor; kWin: Tensor; vWin: Tensor }): Promise<void>;
  /** Appends c compressed blocks: kCmp [B, c, H, Dk], vCmp [B, c, H, Dv]. */
  appendCompressed(blocks: { kCmp: Tensor; vCmp: Tensor }): Promise<void>;
  dispose(): void;
  [Symbol.dispose](): void;
}

export interface NSADecodeArgs {
  readonly cache: NSACache;
  /** [B, TQ, HQ, Dk]: queries at positions Tk - TQ .. Tk - 1 of the cache. */
  readonly q: Tensor;
  /** [B, TQ, HQ, 3]. */
  readonly gates: Tensor;
  /** int32 [B, TQ, H, n], optional. */
  readonly blockIndices?: Tensor;
}

export interface NSADecodeResult {
  /** [B, TQ, HQ, Dv]. */
  readonly output: Tensor;
  /** int32 [B, TQ, H, n]. */
  readonly blockIndices: Tensor;
  dispose(): void;
}

/**
 * Dense causal attention, the baseline. q [B, TQ, HQ, Dk], k [B, Tk, H, Dk], v [B, Tk, H, Dv] with
 * TQ <= Tk: the queries sit at positions Tk - TQ .. Tk - 1 (TQ = 1 is a decode step). With
 * cuSeqlens, B = 1 and TQ = Tk.
 */
export interface AttentionArgs {
  readonly q: Tensor;
  readonly k: Tensor;
  readonly v: Tensor;
  /** Defaults to 1/sqrt(Dk). */
  readonly scale?: number;
  readonly cuSeqlens?: ArrayLike<number>;
}

export interface AttentionForwardResult {
  /** [B, TQ, HQ, Dv]. */
  readonly output: Tensor;
  readonly saved: NSASaved;
  dispose(): void;
}

export interface AttentionBackwardArgs extends AttentionArgs {
  readonly forward: AttentionForwardResult;
  readonly dOutput: Tensor;
}

export interface AttentionGradients {
  readonly dq: Tensor;
  readonly dk: Tensor;
  readonly dv: Tensor;
  dispose(): void;
}

/**
 * What every backend implements: the NSA operator (forward, backward, decode through a cache) and
 * dense causal attention. Operations resolve when their results are ready to use; data stays on
 * the backend's device.
 */
export interface Backend {
  readonly name: string;
  /** Human-readable device, e.g. "NVIDIA H100 80GB HBM3 (sm_90)". */
  readonly device: string;
  /** Float dtypes the operators accept. */
  readonly dtypes: readonly FloatDType[];
  /** Copies host values into a new tensor (rounded to dtype). */
  tensor(values: ArrayLike<number>, shape: readonly number[], dtype: DType): Tensor;

  nsaForward(args: NSAForwardArgs): Promise<NSAForwardResult>;
  nsaBackward(args: NSABackwardArgs): Promise<NSAGradients>;
  createNSACache(options: NSACacheOptions): NSACache;
  nsaDecode(args: NSADecodeArgs): Promise<NSADecodeResult>;

  attentionForward(args: AttentionArgs): Promise<AttentionForwardResult>;
  attentionBackward(args: AttentionBackwardArgs): Promise<AttentionGradients>;

  /** Resolves when all queued device work has finished (for timing). */
  synchronize(): Promise<void>;
  /** Frees the backend's device resources; tensors it made become unusable. */
  dispose(): void;
}
