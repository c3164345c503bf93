/**
 * IEEE 754 half precision (binary16) conversions for the wire: float32 → float16 with
 * round-to-nearest-even (overflow to ±Infinity, gradual underflow to subnormals, NaN kept NaN)
 * and float16 → float32 (exact, through a 65536-entry table built on first use).
 * Node 20 has no Float16Array, so halves are raw bits in a Uint16Array.
 */

export function float32ToFloat16(src: Float32Array, out = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i];
    const sign = (b >>> 16) & 0x8000;
    const exp = (b >>> 23) & 0xff;
    const mant = b & 0x7fffff;
    const e = exp - 112; // rebias 127 → 15
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0); // Infinity, or a quiet NaN
    } else if (e >= 0x1f) {
      out[i] = sign | 0x7c00; // too large: Infinity
    } else if (e <= 0) {
      // Subnormal half: value / 2^-24 = (1.mant) * 2^(e - 14), i.e. the 24-bit significand >> (14 - e).
      const shift = 14 - e;
      if (shift > 24) {
        out[i] = sign;
        continue;
      } // below half the smallest subnormal: ±0
      const full = mant | 0x800000;
      let m = full >>> shift;
      const rest = full & ((1 << shift) - 1);
      const halfway = 1 << (shift - 1);
      if (rest > halfway || (rest === halfway && m & 1)) m++; // may carry into the smallest normal
      out[i] = sign | m;
    } else {
      let h = sign | (e << 10) | (mant >>> 13);
      const rest = mant & 0x1fff;
      if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++; // a carry bumps the exponent, up to Infinity
      out[i] = h;
    }
  }
  return out;
}

let table: Uint32Array | undefined;

function halfToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return sign | 0x7f800000 | (mant << 13);
  if (exp !== 0) return sign | ((exp + 112) << 23) | (mant << 13);
  if (mant === 0) return sign;
  let e = 113; // normalise the subnormal
  while (!(mant & 0x400)) {
    mant <<= 1;
    e--;
  }
  return sign | (e << 23) | ((mant & 0x3ff) << 13);
}

export function float16ToFloat32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  if (!table) {
    table = new Uint32Array(0x10000);
    for (let h = 0; h < 0x10000; h++) table[h] = halfToFloatBits(h);
  }
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) bits[i] = table[src[i]];
  return out;
}
