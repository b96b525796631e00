import type { Backend } from './backend.js';
import type { Tensor } from './tensor.js';

/**
 * The dense operations one transformer training step needs, beside the NSA operator.
 * Every op returns new tensors (except `adamw`, which updates its state in place) on the backend
 * that owns the inputs. Backward ops take the forward inputs again instead of opaque saved state,
 * so a backend needs to keep nothing alive between the two passes.
 *
 * Shapes: "rows" means every leading dimension flattened; a [B, T, H, D] tensor is [B*T*H, D]
 * rows of D for `rmsNorm`, and `rotary` treats it as T positions of H heads.
 */
export interface DenseOps {
  /** a [M, K] (or [K, M] with transposeA) times b [K, N] (or [N, K] with transposeB) -> [M, N]. Backward is matmul too. */
  matmul(a: Tensor, b: Tensor, options?: { transposeA?: boolean; transposeB?: boolean }): Promise<Tensor>;
  /** Same data, new shape (same element count). */
  reshape(x: Tensor, shape: readonly number[]): Promise<Tensor>;
  /** Elementwise a + b, same shapes. */
  add(a: Tensor, b: Tensor): Promise<Tensor>;
  /** Elementwise x * factor. */
  scale(x: Tensor, factor: number): Promise<Tensor>;
  /** Σ x² over all elements (for gradient-norm clipping). */
  sumOfSquares(x: Tensor): Promise<number>;
  /** Rows [start, start + count) of x along dim 0. */
  sliceRows(x: Tensor, start: number, count: number): Promise<Tensor>;
  /** Concatenates along dim 0 tensors whose other dims agree. */
  concatRows(parts: readonly Tensor[]): Promise<Tensor>;

  /** y = x / sqrt(mean(x²) + eps) * weight over the last dim; weight [D]. */
  rmsNorm(x: Tensor, weight: Tensor, eps: number): Promise<Tensor>;
  rmsNormBackward(x: Tensor, weight: Tensor, eps: number, dy: Tensor): Promise<{ dx: Tensor; dWeight: Tensor }>;

  /**
   * Rotary position embedding on x [B, T, H, D] (D even, pairs (i, i + D/2)), token t at position
   * `start + stride * t` (real-valued positions allowed). `inverse` rotates backwards, which is
   * exactly the backward pass (rotations are orthogonal).
   */
  rotary(x: Tensor, options: RotaryOptions): Promise<Tensor>;

  /** silu(gate) * up, same shapes. */
  swiglu(gate: Tensor, up: Tensor): Promise<Tensor>;
  swigluBackward(gate: Tensor, up: Tensor, dy: Tensor): Promise<{ dGate: Tensor; dUp: Tensor }>;
  /** Elementwise activation. */
  activation(x: Tensor, kind: ActivationKind): Promise<Tensor>;
  activationBackward(x: Tensor, kind: ActivationKind, dy: Tensor): Promise<Tensor>;

  /**
   * Mean softmax cross-entropy of logits [M, V] against int32 targets [M]; a target of -1 is
   * ignored. Returns the loss and, when `withGradient`, d(loss)/d(logits).
   */
  softmaxCrossEntropy(
    logits: Tensor,
    targets: Tensor,
    withGradient: boolean,
  ): Promise<{ loss: number; count: number; dLogits?: Tensor }>;

  /** table [V, D] gathered at int32 ids [M] -> [M, D]. */
  embedding(table: Tensor, ids: Tensor): Promise<Tensor>;
  /** The gradient of `embedding` for the table: dy [M, D] scatter-added into [vocab, D]. */
  embeddingBackward(ids: Tensor, dy: Tensor, vocab: number): Promise<Tensor>;

  /**
   * The compressor's input: x [B, T, H, D] cut into C = floor((T - l)/stride) + 1 blocks of l
   * tokens (T >= l, else C = 0), the position table pos [l, D] added, flattened to
   * [B, C, H, l*D] (block i = tokens i*stride .. i*stride + l - 1).
   */
  blockUnfold(x: Tensor, pos: Tensor, stride: number): Promise<Tensor>;
  blockUnfoldBackward(xShape: readonly number[], pos: Tensor, stride: number, dy: Tensor): Promise<{ dx: Tensor; dPos: Tensor }>;

  /** One AdamW step in place on param, m and v (decoupled weight decay); grad is multiplied by gradScale first. */
  adamw(state: AdamWTensors, options: AdamWStep): Promise<void>;
}

export type ActivationKind = 'silu' | 'sigmoid' | 'gelu';

export interface RotaryOptions {
  /** Position of token 0. Default 0. */
  readonly start?: number;
  /** Position step between tokens. Default 1. */
  readonly stride?: number;
  /** Frequency base θ. Default 10000. */
  readonly base?: number;
  readonly inverse?: boolean;
}

export interface AdamWTensors {
  readonly param: Tensor;
  readonly grad: Tensor;
  readonly m: Tensor;
  readonly v: Tensor;
}

export interface AdamWStep {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** 1-based step count for bias correction. */
  readonly step: number;
  /** Multiplies the gradient before use (gradient clipping). Default 1. */
  readonly gradScale?: number;
}

/** A backend that can run a whole model: the NSA operator plus the dense ops. */
export type ModelBackend = Backend & DenseOps;

const DENSE_METHODS = [
  'matmul',
  'reshape',
  'add',
  'scale',
  'sumOfSquares',
  'sliceRows',
  'concatRows',
  'rmsNorm',
  'rmsNormBackward',
  'rotary',
  'swiglu',
  'swigluBackward',
  'activation',
  'activationBackward',
  'softmaxCrossEntropy',
  'embedding',
  'embeddingBackward',
  'blockUnfold',
  'blockUnfoldBackward',
  'adamw',
] as const satisfies readonly (keyof DenseOps)[];

/** Whether a backend implements every dense op (GPU backends may not yet). */
export function hasDenseOps(backend: Backend): backend is ModelBackend {
  const record = backend as unknown as Record<string, unknown>;
  return DENSE_METHODS.every((name) => typeof record[name] === 'function');
}

/** Names of the dense ops a backend lacks (empty when it has them all). */
export function missingDenseOps(backend: Backend): string[] {
  const record = backend as unknown as Record<string, unknown>;
  return DENSE_METHODS.filter((name) => typeof record[name] !== 'function');
}
