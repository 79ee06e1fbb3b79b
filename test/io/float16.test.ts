// float32 <-> half / bfloat16 bit patterns against values worked out by hand from IEEE 754.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  f32ToF16Bits, f16BitsToF32, f32ToBf16Bits, bf16BitsToF32,
  f32ArrayToF16, f16ArrayToF32, f32ArrayToBf16, bf16ArrayToF32,
} from '../../src/io/float16.js';

test('f32 -> f16: exact values, extremes, subnormals', () => {
  const cases: [number, number][] = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [65504, 0x7bff],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [Infinity, 0x7c00], [-Infinity, 0xfc00],
    [1e10, 0x7c00], // overflow
    [0.1, 0x2e66], // 0.1 = 1.6 * 2^-4: mantissa 0.6*1024 = 614.4 -> 614 = 0x266, exponent 11 -> 0x2c00
  ];
  for (const [x, bits] of cases) assert.equal(f32ToF16Bits(x), bits, `f16(${x})`);
  assert.equal(f32ToF16Bits(NaN) & 0x7c00, 0x7c00);
  assert.notEqual(f32ToF16Bits(NaN) & 0x3ff, 0);
});

test('f32 -> f16 rounds to nearest, ties to even', () => {
  // 1 + 2^-11 is halfway between 1 (0x3c00, even) and 1 + 2^-10 (0x3c01): ties go to the even one.
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00);
  // 1 + 3*2^-11 is halfway between 0x3c01 and 0x3c02 (even).
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  // Just above the halfway point rounds up.
  assert.equal(f32ToF16Bits(1 + 2 ** -11 + 2 ** -20), 0x3c01);
  // 65519 rounds down to 65504, 65520 (halfway to 65536) rounds to even, i.e. up to inf.
  assert.equal(f32ToF16Bits(65519), 0x7bff);
  assert.equal(f32ToF16Bits(65520), 0x7c00);
  // Subnormal ties: 2^-25 is half the smallest step -> 0 (even); 3*2^-25 = 1.5 steps -> 2 steps.
  assert.equal(f32ToF16Bits(2 ** -25), 0x0000);
  assert.equal(f32ToF16Bits(3 * 2 ** -25), 0x0002);
  assert.equal(f32ToF16Bits(2 ** -25 + 2 ** -35), 0x0001);
  // Rounding up out of the subnormals lands on the smallest normal.
  assert.equal(f32ToF16Bits(2 ** -14 - 2 ** -26), 0x0400);
});

test('f16 -> f32', () => {
  const cases: [number, number][] = [
    [0x3c00, 1], [0xc000, -2], [0x7bff, 65504], [0x0001, 2 ** -24], [0x03ff, 1023 * 2 ** -24],
    [0x0400, 2 ** -14], [0x3555, 0.333251953125], [0x7c00, Infinity], [0xfc00, -Infinity],
  ];
  for (const [bits, x] of cases) assert.equal(f16BitsToF32(bits), x, `f16 0x${bits.toString(16)}`);
  assert.ok(Number.isNaN(f16BitsToF32(0x7e00)));
  assert.ok(Object.is(f16BitsToF32(0x8000), -0));
});

test('f32 <-> bf16', () => {
  const cases: [number, number][] = [
    [1, 0x3f80], [-2, 0xc000], [0, 0x0000], [Infinity, 0x7f80],
    [Math.PI, 0x4049], // float32 pi = 0x40490fdb; the dropped half 0x0fdb is below 0x8000
    [1 + 2 ** -8, 0x3f80], // tie -> even (0x3f80)
    [1 + 3 * 2 ** -8, 0x3f82], // tie -> even (0x3f82)
    [1 + 2 ** -8 + 2 ** -20, 0x3f81],
    [3.4028234663852886e38, 0x7f80], // float32 max rounds up to inf
  ];
  for (const [x, bits] of cases) assert.equal(f32ToBf16Bits(x), bits, `bf16(${x})`);
  assert.equal(f32ToBf16Bits(NaN), 0x7fc0);
  assert.equal(bf16BitsToF32(0x3f80), 1);
  assert.equal(bf16BitsToF32(0x4049), 3.140625);
  assert.equal(bf16BitsToF32(0xc000), -2);
});

test('array conversions match the scalar ones and round-trip representable values', () => {
  const xs = new Float32Array([1, -2, 0.5, 65504, 2 ** -24, 0.1]);
  assert.deepEqual([...f32ArrayToF16(xs)], [0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x2e66]);
  assert.deepEqual([...f16ArrayToF32(new Uint16Array([0x3c00, 0xc000, 0x0001]))], [1, -2, 2 ** -24]);
  assert.deepEqual([...f32ArrayToBf16(new Float32Array([1, -2, Math.PI]))], [0x3f80, 0xc000, 0x4049]);
  assert.deepEqual([...bf16ArrayToF32(new Uint16Array([0x3f80, 0xc000, 0x4049, 0x8000]))], [1, -2, 3.140625, -0]);
});
