import type { FloatDType, NSAConfigInput } from '@nsa/core';

/** One parity case of the NSA operator. */
export interface NSACase {
  readonly name: string;
  readonly config: NSAConfigInput;
  readonly B: number;
  readonly T: number;
  readonly dtype: FloatDType;
  /** Packed sequence offsets (then B = 1). */
  readonly cuSeqlens?: readonly number[];
  /** Feed random valid blockIndices to both sides instead of letting each select. */
  readonly suppliedBlockIndices?: boolean;
  /** Also decode: fill the cache with `prefix` tokens, then run steps of these query counts. */
  readonly decode?: { readonly prefix: number; readonly steps: readonly number[] };
}

/** One parity case of dense causal attention (TQ <= Tk; TQ < Tk is decoding). */
export interface AttentionCase {
  readonly name: string;
  readonly B: number;
  readonly TQ: number;
  readonly Tk: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly Dk: number;
  readonly Dv: number;
  readonly dtype: FloatDType;
  readonly cuSeqlens?: readonly number[];
}

export type Scale = 'ci' | 'gpu';

/** Small blocks so short sequences exercise every rule (several selection blocks, a full window). */
const SMALL = { compressBlock: 16, compressStride: 8, selectBlock: 32, selectCount: 4, window: 64 };

/**
 * The grid of the CUDA and WebGPU issues: G in {1, 4, 16}; (Dk, Dv) in {(64,64), (128,128),
 * (192,128)}; B > 1; varlen; decode; caller-supplied blockIndices; the paper defaults.
 * 'ci' keeps T small for a 2-core machine running SwiftShader; 'gpu' goes to T = 4096.
 */
export function nsaCases(scale: Scale, dtypes: readonly FloatDType[]): NSACase[] {
  const gpu = scale === 'gpu';
  const T = gpu ? 1024 : 160;
  const blocks = gpu ? {} : SMALL;
  const cases: NSACase[] = [];
  for (const dtype of dtypes) {
    for (const [heads, kvHeads] of [
      [4, 4],
      [16, 4],
      [16, 1],
    ]) {
      for (const [Dk, Dv] of [
        [64, 64],
        [128, 128],
        [192, 128],
      ]) {
        if (!gpu && dtype !== dtypes[0] && Dk !== 64) continue; // keep CI small: one dtype covers all dims
        cases.push({
          name: `G=${heads / kvHeads} HQ=${heads} Dk=${Dk} Dv=${Dv} T=${T} ${dtype}`,
          config: { ...blocks, heads, kvHeads, headDimK: Dk, headDimV: Dv },
          B: 1,
          T,
          dtype,
        });
      }
    }
    const small = { ...blocks, heads: 8, kvHeads: 2, headDimK: 64, headDimV: 32 };
    cases.push({ name: `B=3 ${dtype}`, config: small, B: 3, T: gpu ? 512 : 96, dtype });
    cases.push({
      name: `varlen ${dtype}`,
      config: small,
      B: 1,
      T: gpu ? 1500 : 200,
      cuSeqlens: gpu ? [0, 700, 701, 1200, 1500] : [0, 90, 91, 150, 200],
      dtype,
    });
    cases.push({ name: `supplied blockIndices ${dtype}`, config: small, B: 2, T: gpu ? 1024 : 128, dtype, suppliedBlockIndices: true });
    cases.push({
      name: `decode ${dtype}`,
      config: small,
      B: 2,
      T: gpu ? 1030 : 140,
      dtype,
      decode: { prefix: gpu ? 1000 : 120, steps: gpu ? [1, 1, 4, 1, 16, 8] : [1, 1, 3, 1, 8, 6] },
    });
  }
  const paperT = gpu ? 4096 : 1100;
  cases.push({
    name: `paper defaults T=${paperT} ${dtypes[0]}`,
    config: { heads: gpu ? 16 : 4, kvHeads: 1, headDimK: gpu ? 128 : 32, headDimV: gpu ? 128 : 32 },
    B: 1,
    T: paperT,
    dtype: dtypes[0],
  });
  return cases;
}

export function attentionCases(scale: Scale, dtypes: readonly FloatDType[]): AttentionCase[] {
  const gpu = scale === 'gpu';
  return dtypes.flatMap((dtype) => [
    { name: `dense G=4 ${dtype}`, B: 2, TQ: gpu ? 1024 : 96, Tk: gpu ? 1024 : 96, heads: 8, kvHeads: 2, Dk: 64, Dv: 64, dtype },
    { name: `dense Dk=192 Dv=128 ${dtype}`, B: 1, TQ: gpu ? 512 : 64, Tk: gpu ? 512 : 64, heads: 4, kvHeads: 4, Dk: 192, Dv: 128, dtype },
    { name: `dense decode TQ=1 ${dtype}`, B: 3, TQ: 1, Tk: gpu ? 4000 : 200, heads: 16, kvHeads: 1, Dk: 128, Dv: 128, dtype },
    { name: `dense decode TQ=5 ${dtype}`, B: 2, TQ: 5, Tk: gpu ? 777 : 77, heads: 4, kvHeads: 2, Dk: 64, Dv: 64, dtype },
    {
      name: `dense varlen ${dtype}`,
      B: 1,
      TQ: gpu ? 900 : 90,
      Tk: gpu ? 900 : 90,
      heads: 4,
      kvHeads: 2,
      Dk: 64,
      Dv: 64,
      dtype,
      cuSeqlens: gpu ? [0, 300, 301, 900] : [0, 30, 31, 90],
    },
  ]);
}
