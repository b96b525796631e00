import { describe, expect, it } from 'vitest';
import {
  bfloat16BitsToFloat32,
  decodeHalf,
  encode,
  float16BitsToFloat32,
  float32ToBFloat16Bits,
  float32ToFloat16Bits,
  roundToDType,
  shapeSize,
} from '../src/index.js';

describe('float16', () => {
  it('round-trips every finite half exactly', () => {
    const wrong: number[] = [];
    for (let bits = 0; bits < 0x10000; bits++) {
      if ((bits & 0x7c00) === 0x7c00) continue;
      if (float32ToFloat16Bits(float16BitsToFloat32(bits)) !== bits) wrong.push(bits);
    }
    expect(wrong).toEqual([]);
  });

  it('rounds to nearest even, saturates to inf, keeps NaN', () => {
    expect(float16BitsToFloat32(float32ToFloat16Bits(1 + 2 ** -11))).toBe(1); // tie -> even
    expect(float16BitsToFloat32(float32ToFloat16Bits(1 + 3 * 2 ** -11))).toBe(1 + 2 ** -9);
    expect(float16BitsToFloat32(float32ToFloat16Bits(70000))).toBe(Infinity);
    expect(float16BitsToFloat32(float32ToFloat16Bits(-70000))).toBe(-Infinity);
    expect(Number.isNaN(float16BitsToFloat32(float32ToFloat16Bits(Number.NaN)))).toBe(true);
    expect(float16BitsToFloat32(float32ToFloat16Bits(2 ** -24))).toBe(2 ** -24);
    expect(float16BitsToFloat32(float32ToFloat16Bits(2 ** -26))).toBe(0);
  });
});

describe('bfloat16', () => {
  it('keeps 8 significant bits with round to nearest even', () => {
    expect(bfloat16BitsToFloat32(float32ToBFloat16Bits(1))).toBe(1);
    expect(bfloat16BitsToFloat32(float32ToBFloat16Bits(1 + 2 ** -8))).toBe(1);
    expect(bfloat16BitsToFloat32(float32ToBFloat16Bits(1 + 3 * 2 ** -8))).toBe(1 + 2 ** -6);
    expect(bfloat16BitsToFloat32(float32ToBFloat16Bits(-3.140625))).toBe(-3.140625);
    expect(Number.isNaN(bfloat16BitsToFloat32(float32ToBFloat16Bits(Number.NaN)))).toBe(true);
  });
});

describe('encode and round', () => {
  it('packs and unpacks each dtype', () => {
    const values = [0.1, -2.5, 3.75, 1e-3];
    expect([...decodeHalf(encode(values, 'float16') as Uint16Array, 'float16')]).toEqual(
      values.map((v) => roundToDType(v, 'float16')),
    );
    expect([...decodeHalf(encode(values, 'bfloat16') as Uint16Array, 'bfloat16')]).toEqual(
      values.map((v) => roundToDType(v, 'bfloat16')),
    );
    expect([...encode(values, 'float32')]).toEqual(values.map(Math.fround));
    expect([...encode([1.9, -2.2], 'int32')]).toEqual([1, -2]);
    expect(roundToDType(0.1, 'float64')).toBe(0.1);
  });

  it('sizes shapes and rejects bad dimensions', () => {
    expect(shapeSize([2, 3, 4])).toBe(24);
    expect(shapeSize([])).toBe(1);
    expect(() => shapeSize([2, -1])).toThrow(/invalid shape/);
    expect(() => shapeSize([1.5])).toThrow(/invalid shape/);
  });
});
