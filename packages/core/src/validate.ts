// Shape, dtype and ownership checks shared by every backend, so all of them reject bad input
// with the same precise message before touching data.
import type {
  AttentionArgs,
  AttentionBackwardArgs,
  NSABackwardArgs,
  NSACache,
  NSACacheOptions,
  NSADecodeArgs,
  NSAForwardArgs,
} from './backend.js';
import type { NSAConfig } from './config.js';
import type { FloatDType } from './dtype.js';
import { NSAShapeError, UnsupportedError } from './errors.js';
import { compressedCount, varlenLayout, type VarlenLayout } from './shapes.js';
import type { Tensor } from './tensor.js';

/** Sizes of one NSA call, read off validated inputs. */
export interface NSADims {
  readonly B: number;
  readonly T: number;
  readonly C: number;
  readonly HQ: number;
  readonly H: number;
  readonly G: number;
  readonly Dk: number;
  readonly Dv: number;
  readonly n: number;
  readonly dtype: FloatDType;
  /** Present for varlen calls. */
  readonly varlen?: VarlenLayout;
}

function fmt(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Throws unless `t` is a live tensor of `backend` with exactly `shape` (null = any size there). */
export function checkTensor(
  name: string,
  t: Tensor | undefined,
  shape: readonly (number | null)[],
  backend: string,
): Tensor {
  if (!t || typeof t !== 'object' || !Array.isArray(t.shape)) {
    throw new NSAShapeError(`${name} is missing (expected a tensor of shape ${fmt(shape.map((d) => d ?? '*') as number[])})`);
  }
  if (t.disposed) throw new NSAShapeError(`${name} was disposed before use`);
  if (t.backend !== backend) {
    throw new NSAShapeError(`${name} belongs to backend '${t.backend}', not '${backend}': create it with this backend's tensor()`);
  }
  const ok = t.shape.length === shape.length && shape.every((d, i) => d === null || d === t.shape[i]);
  if (!ok) {
    const want = shape.map((d) => (d === null ? '*' : String(d))).join(', ');
    throw new NSAShapeError(`${name} has shape ${fmt(t.shape)}, expected [${want}]`);
  }
  return t;
}

function checkDType(name: string, t: Tensor, dtype: string): void {
  if (t.dtype !== dtype) throw new NSAShapeError(`${name} has dtype ${t.dtype}, expected ${dtype} (like q)`);
}

function checkFloat(q: Tensor, dtypes: readonly FloatDType[], backend: string): FloatDType {
  if (!(dtypes as readonly string[]).includes(q.dtype)) {
    throw new UnsupportedError(`backend '${backend}' does not support dtype ${q.dtype} (supported: ${dtypes.join(', ')})`);
  }
  return q.dtype as FloatDType;
}

/** Validates every input of `nsaForward` (and the shared part of `nsaBackward`). */
export function checkNSAForward(args: NSAForwardArgs, backend: string, dtypes: readonly FloatDType[]): NSADims {
  const config: NSAConfig = args.config;
  if (!config || typeof config.compressBlock !== 'number') {
    throw new NSAShapeError('config is missing: pass createNSAConfig({...})');
  }
  const q = checkTensor('q', args.q, [null, null, null, null], backend);
  const [B, T, HQ, Dk] = q.shape;
  const dtype = checkFloat(q, dtypes, backend);
  if (HQ !== config.heads) throw new NSAShapeError(`q has ${HQ} heads (dim 2) but config.heads = ${config.heads}`);
  if (Dk !== config.headDimK) throw new NSAShapeError(`q has head dim ${Dk} (dim 3) but config.headDimK = ${config.headDimK}`);
  const H = config.kvHeads;
  const Dv = config.headDimV;
  let varlen: VarlenLayout | undefined;
  let C: number;
  if (args.cuSeqlens !== undefined) {
    if (B !== 1) throw new NSAShapeError(`varlen (cuSeqlens) needs batch 1, got q with B = ${B}`);
    varlen = varlenLayout(args.cuSeqlens, T, config);
    C = varlen.compressedOffsets[varlen.compressedOffsets.length - 1];
  } else {
    C = compressedCount(T, config);
  }
  const named: [string, Tensor, (number | null)[]][] = [
    ['kCmp', args.kCmp, [B, C, H, Dk]],
    ['vCmp', args.vCmp, [B, C, H, Dv]],
    ['kSlc', args.kSlc, [B, T, H, Dk]],
    ['vSlc', args.vSlc, [B, T, H, Dv]],
    ['kWin', args.kWin, [B, T, H, Dk]],
    ['vWin', args.vWin, [B, T, H, Dv]],
    ['gates', args.gates, [B, T, HQ, 3]],
  ];
  for (const [name, t, shape] of named) {
    checkTensor(name, t, shape, backend);
    checkDType(name, t, dtype);
  }
  const n = config.selectCount;
  if (args.blockIndices !== undefined) {
    const bi = checkTensor('blockIndices', args.blockIndices, [B, T, H, n], backend);
    if (bi.dtype !== 'int32') throw new NSAShapeError(`blockIndices has dtype ${bi.dtype}, expected int32`);
  }
  return { B, T, C, HQ, H, G: HQ / H, Dk, Dv, n, dtype, varlen };
}

/** Validates `nsaBackward`: the forward inputs, the forward result and dOutput. */
export function checkNSABackward(args: NSABackwardArgs, backend: string, dtypes: readonly FloatDType[]): NSADims {
  const dims = checkNSAForward({ ...args, blockIndices: undefined }, backend, dtypes);
  if (!args.forward || !args.forward.output) throw new NSAShapeError('forward is missing: pass the result of nsaForward');
  if (args.forward.saved?.backend !== backend) {
    throw new NSAShapeError(`forward came from backend '${args.forward.saved?.backend}', not '${backend}'`);
  }
  checkTensor('forward.blockIndices', args.forward.blockIndices, [dims.B, dims.T, dims.H, dims.n], backend);
  checkTensor('forward.output', args.forward.output, [dims.B, dims.T, dims.HQ, dims.Dv], backend);
  checkTensor('dOutput', args.dOutput, [dims.B, dims.T, dims.HQ, dims.Dv], backend);
  checkDType('dOutput', args.dOutput, dims.dtype);
  return dims;
}

/** Sizes of one decode step. */
export interface NSADecodeDims extends Omit<NSADims, 'T' | 'C' | 'varlen'> {
  /** New queries. */
  readonly TQ: number;
  /** Cached tokens; the queries sit at Tk - TQ .. Tk - 1. */
  readonly Tk: number;
  readonly C: number;
}

/** Validates a decode step against its cache. */
export function checkNSADecode(args: NSADecodeArgs, backend: string): NSADecodeDims {
  const cache: NSACache = args.cache;
  if (!cache || cache.backend !== backend) {
    throw new NSAShapeError(`cache belongs to backend '${cache?.backend}', not '${backend}'`);
  }
  const { config, batch: B } = cache;
  const q = checkTensor('q', args.q, [B, null, config.heads, config.headDimK], backend);
  const TQ = q.shape[1];
  const Tk = cache.length;
  checkDType('q', q, cache.dtype);
  if (TQ < 1 || TQ > Tk) throw new NSAShapeError(`q has ${TQ} queries but the cache holds ${Tk} tokens (need 1 <= TQ <= Tk)`);
  const C = compressedCount(Tk, config);
  if (cache.compressedLength !== C) {
    throw new NSAShapeError(
      `cache holds ${cache.compressedLength} compressed blocks but ${Tk} tokens need ${C}: appendCompressed the missing blocks first`,
    );
  }
  checkTensor('gates', args.gates, [B, TQ, config.heads, 3], backend);
  checkDType('gates', args.gates, cache.dtype);
  const H = config.kvHeads;
  if (args.blockIndices !== undefined) {
    const bi = checkTensor('blockIndices', args.blockIndices, [B, TQ, H, config.selectCount], backend);
    if (bi.dtype !== 'int32') throw new NSAShapeError(`blockIndices has dtype ${bi.dtype}, expected int32`);
  }
  return {
    B,
    TQ,
    Tk,
    C,
    HQ: config.heads,
    H,
    G: config.heads / H,
    Dk: config.headDimK,
    Dv: config.headDimV,
    n: config.selectCount,
    dtype: cache.dtype,
  };
}

/** Sizes of one dense attention call. */
export interface AttentionDims {
  readonly B: number;
  readonly TQ: number;
  readonly Tk: number;
  readonly HQ: number;
  readonly H: number;
  readonly G: number;
  readonly Dk: number;
  readonly Dv: number;
  readonly scale: number;
  readonly dtype: FloatDType;
  readonly varlen?: VarlenLayout;
}

/** Validates dense attention inputs. */
export function checkAttention(args: AttentionArgs, backend: string, dtypes: readonly FloatDType[]): AttentionDims {
  const q = checkTensor('q', args.q, [null, null, null, null], backend);
  const [B, TQ, HQ, Dk] = q.shape;
  const dtype = checkFloat(q, dtypes, backend);
  const k = checkTensor('k', args.k, [B, null, null, Dk], backend);
  const [, Tk, H] = k.shape;
  const v = checkTensor('v', args.v, [B, Tk, H, null], backend);
  checkDType('k', k, dtype);
  checkDType('v', v, dtype);
  if (H < 1 || HQ % H !== 0) throw new NSAShapeError(`q has ${HQ} heads, not a multiple of the ${H} key/value heads`);
  if (TQ > Tk) throw new NSAShapeError(`q has ${TQ} queries but k holds ${Tk} tokens (need TQ <= Tk)`);
  const scale = args.scale ?? 1 / Math.sqrt(Dk);
  if (!Number.isFinite(scale) || scale <= 0) throw new NSAShapeError(`scale = ${scale} must be a finite number > 0`);
  let varlen: VarlenLayout | undefined;
  if (args.cuSeqlens !== undefined) {
    if (B !== 1) throw new NSAShapeError(`varlen (cuSeqlens) needs batch 1, got B = ${B}`);
    if (TQ !== Tk) throw new NSAShapeError(`varlen needs TQ = Tk (got ${TQ} and ${Tk})`);
    varlen = varlenLayout(args.cuSeqlens, Tk, { compressBlock: 1, compressStride: 1 });
  }
  return { B, TQ, Tk, HQ, H, G: HQ / H, Dk, Dv: v.shape[3], scale, dtype, varlen };
}

/** Validates dense attention backward. */
export function checkAttentionBackward(
  args: AttentionBackwardArgs,
  backend: string,
  dtypes: readonly FloatDType[],
): AttentionDims {
  const dims = checkAttention(args, backend, dtypes);
  if (args.forward?.saved?.backend !== backend) {
    throw new NSAShapeError(`forward came from backend '${args.forward?.saved?.backend}', not '${backend}'`);
  }
  checkTensor('dOutput', args.dOutput, [dims.B, dims.TQ, dims.HQ, dims.Dv], backend);
  checkDType('dOutput', args.dOutput, dims.dtype);
  return dims;
}

/** Validates `createNSACache` options; returns how many compressed blocks the capacity allows. */
export function checkNSACacheOptions(options: NSACacheOptions, backend: string, dtypes: readonly FloatDType[]): number {
  const { config, batch, dtype, capacity } = options;
  if (!config || typeof config.compressBlock !== 'number') {
    throw new NSAShapeError('cache config is missing: pass createNSAConfig({...})');
  }
  if (!Number.isInteger(batch) || batch < 1) throw new NSAShapeError(`cache batch = ${batch} must be a positive integer`);
  if (!Number.isInteger(capacity) || capacity < 1) throw new NSAShapeError(`cache capacity = ${capacity} must be a positive integer`);
  if (!(dtypes as readonly string[]).includes(dtype)) {
    throw new UnsupportedError(`backend '${backend}' cannot hold a cache of dtype ${dtype} (supported: ${dtypes.join(', ')})`);
  }
  return compressedCount(capacity, config);
}

function checkCacheBlock(cache: NSACache, name: string, t: Tensor | undefined, shape: (number | null)[]): number {
  const checked = checkTensor(name, t, shape, cache.backend);
  if (checked.dtype !== cache.dtype) throw new NSAShapeError(`${name} has dtype ${checked.dtype}, expected the cache's ${cache.dtype}`);
  return checked.shape[1];
}

/** Validates `cache.append(tokens)`; returns the number of tokens t. */
export function checkCacheAppend(cache: NSACache, tokens: { kSlc: Tensor; vSlc: Tensor; kWin: Tensor; vWin: Tensor }): number {
  const { kvHeads: H, headDimK: Dk, headDimV: Dv } = cache.config;
  const t = checkCacheBlock(cache, 'kSlc', tokens?.kSlc, [cache.batch, null, H, Dk]);
  for (const [name, dim] of [['vSlc', Dv], ['kWin', Dk], ['vWin', Dv]] as const) {
    checkCacheBlock(cache, name, tokens[name], [cache.batch, t, H, dim]);
  }
  if (cache.length + t > cache.capacity) {
    throw new NSAShapeError(`cache overflow: appending ${t} tokens to ${cache.length} would exceed the capacity of ${cache.capacity}`);
  }
  return t;
}

/**
 * Validates `cache.appendCompressed(blocks)`; returns the number of blocks c. A compressed block
 * may only be appended once the raw tokens it summarises are in the cache.
 */
export function checkCacheAppendCompressed(cache: NSACache, blocks: { kCmp: Tensor; vCmp: Tensor }): number {
  const { kvHeads: H, headDimK: Dk, headDimV: Dv } = cache.config;
  const c = checkCacheBlock(cache, 'kCmp', blocks?.kCmp, [cache.batch, null, H, Dk]);
  checkCacheBlock(cache, 'vCmp', blocks.vCmp, [cache.batch, c, H, Dv]);
  const complete = compressedCount(cache.length, cache.config);
  if (cache.compressedLength + c > complete) {
    throw new NSAShapeError(
      `appending ${c} compressed blocks to ${cache.compressedLength} would exceed the ${complete} blocks that ` +
        `${cache.length} cached tokens complete: append the raw tokens first`,
    );
  }
  return c;
}
