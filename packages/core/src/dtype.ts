import { NSAShapeError } from './errors.js';

/** Element types. `float64` is the reference backend's oracle precision; GPUs use the other four. */
export type DType = 'float64' | 'float32' | 'float16' | 'bfloat16' | 'int32';
export type FloatDType = Exclude<DType, 'int32'>;

/** What `Tensor.read()` returns: float64 -> Float64Array, int32 -> Int32Array, other floats -> Float32Array. */
export type HostArray = Float64Array | Float32Array | Int32Array;

export const DTYPES: readonly DType[] = ['float64', 'float32', 'float16', 'bfloat16', 'int32'];

export const BYTES_PER_ELEMENT: Readonly<Record<DType, number>> = {
  float64: 8,
  float32: 4,
  float16: 2,
  bfloat16: 2,
  int32: 4,
};

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && (DTYPES as readonly string[]).includes(value);
}

export function isFloatDType(dtype: DType): dtype is FloatDType {
  return dtype !== 'int32';
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 bits -> IEEE half bits, round to nearest even; overflow -> inf. */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  return sign | half;
}

/** IEEE half bits -> number. */
export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** float32 -> bfloat16 bits, round to nearest even; NaN stays NaN. */
export function float32ToBFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0];
  if ((x & 0x7fffffff) > 0x7f800000) return (x >>> 16) | 0x40;
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/** bfloat16 bits -> number. */
export function bfloat16BitsToFloat32(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0];
}

/** Rounds a value to what `dtype` can hold (the value a backend storing that dtype sees). */
export function roundToDType(value: number, dtype: DType): number {
  switch (dtype) {
    case 'float64':
      return value;
    case 'float32':
      return Math.fround(value);
    case 'float16':
      return float16BitsToFloat32(float32ToFloat16Bits(value));
    case 'bfloat16':
      return bfloat16BitsToFloat32(float32ToBFloat16Bits(value));
    case 'int32':
      return value | 0;
  }
}

/** Packs numbers into the bit layout a GPU buffer of `dtype` holds. */
export function encode(values: ArrayLike<number>, dtype: DType): Float64Array | Float32Array | Uint16Array | Int32Array {
  const n = values.length;
  switch (dtype) {
    case 'float64':
      return Float64Array.from(values);
    case 'float32':
      return Float32Array.from(values);
    case 'int32':
      return Int32Array.from(values);
    case 'float16': {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = float32ToFloat16Bits(values[i]);
      return out;
    }
    case 'bfloat16': {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = float32ToBFloat16Bits(values[i]);
      return out;
    }
  }
}

/** Unpacks 16-bit float storage into float32. */
export function decodeHalf(bits: Uint16Array, dtype: 'float16' | 'bfloat16'): Float32Array {
  const out = new Float32Array(bits.length);
  const convert = dtype === 'float16' ? float16BitsToFloat32 : bfloat16BitsToFloat32;
  for (let i = 0; i < bits.length; i++) out[i] = convert(bits[i]);
  return out;
}

/** Elements in a shape; throws on a negative or fractional dimension. */
export function shapeSize(shape: readonly number[]): number {
  let size = 1;
  for (const dim of shape) {
    if (!Number.isInteger(dim) || dim < 0) throw new NSAShapeError(`invalid shape [${shape.join(', ')}]`);
    size *= dim;
  }
  return size;
}
