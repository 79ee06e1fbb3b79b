// Conversions between float32 and the two 16-bit float formats checkpoints use (IEEE half "F16",
// bfloat16 "BF16"). Narrowing rounds to nearest, ties to even, like PyTorch's .half()/.bfloat16().

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 (a JS number is first rounded to float32) -> IEEE half bits. Overflow gives ±inf. */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | (mant ? 0x7e00 : 0x7c00); // NaN stays NaN (quiet), inf stays inf
  const e = exp - 127 + 15; // half's biased exponent
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Half subnormal (or zero): the result counts units of 2^-24.
    if (exp === 0) return sign; // float32 subnormals are far below half's smallest step
    const m = mant | 0x800000;
    const shift = 126 - exp; // value / 2^-24 = m / 2^shift
    if (shift >= 25) return sign; // below half a unit: rounds to zero
    return sign | roundShift(m, shift);
  }
  // Normal: drop 13 mantissa bits; a carry out of the mantissa bumps the exponent, up to inf.
  return sign | (((e << 10) | (mant >>> 13)) + roundIncrement(mant, 13));
}

/** IEEE half bits -> float32 value (exact). */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** float32 -> bfloat16 bits (the top 16 bits of the float32, rounded). */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return (b >>> 16) | 0x40; // quiet NaN
  // No overflow past 2^32 is possible here: the largest non-NaN pattern is 0xff800000.
  return Math.floor((b + 0x7fff + ((b >>> 16) & 1)) / 0x10000) & 0xffff;
}

/** bfloat16 bits -> float32 value (exact). */
export function bf16BitsToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

export function f32ArrayToF16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16Bits(src[i]);
  return out;
}

export function f16ArrayToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f16BitsToF32(src[i]);
  return out;
}

export function f32ArrayToBf16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToBf16Bits(src[i]);
  return out;
}

export function bf16ArrayToF32(src: Uint16Array): Float32Array {
  // bf16 is the high half of a float32: widening is a shift.
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}

/** m >> shift, rounded to nearest with ties to even. */
function roundShift(m: number, shift: number): number {
  return (m >>> shift) + roundIncrement(m, shift);
}

/** 1 when dropping the low `shift` bits of m must round up (nearest, ties to even), else 0. */
function roundIncrement(m: number, shift: number): number {
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rem > half || (rem === half && ((m >>> shift) & 1) === 1) ? 1 : 0;
}
