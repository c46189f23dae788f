// Element types longctx stores and moves (DESIGN.md §1: storage may be fp32/fp16/bf16, compute
// is fp32), with exact scalar conversions. Vectorized conversions live with the kernels.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace longctx {

enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI64 };

constexpr size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
  }
  return 0;
}

std::string_view DTypeName(DType t);  // "f32", "f16", "bf16", "i32", "i64"

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE binary16 -> binary32, exact for every input (subnormals, inf, nan).
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return BitsFloat(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp != 0) return BitsFloat(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return BitsFloat(sign);
  // subnormal half: value = mant * 2^-24
  int e = -1;
  do {
    mant <<= 1;
    ++e;
  } while ((mant & 0x400u) == 0);
  return BitsFloat(sign | uint32_t(112 - e) << 23 | ((mant & 0x3ffu) << 13));
}

// binary32 -> binary16, round to nearest even; overflow -> inf, nan stays nan.
inline uint16_t FloatToHalf(float f) {
  const uint32_t x = FloatBits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520 -> inf
  if (ax < 0x33000001u) return sign;                         // < 2^-25 (ties to even) -> 0
  uint32_t exp = ax >> 23;
  uint32_t mant = ax & 0x7fffffu;
  if (exp < 113) {  // result is subnormal half
    mant |= 0x800000u;
    const uint32_t shift = 126 - exp;  // 14..24
    const uint32_t half_mant = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    uint32_t r = half_mant + ((rem > halfway || (rem == halfway && (half_mant & 1))) ? 1 : 0);
    return uint16_t(sign | r);
  }
  uint32_t r = ((exp - 112) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) ++r;  // may carry into exponent: correct
  return uint16_t(sign | r);
}

inline float BF16ToFloat(uint16_t b) { return BitsFloat(uint32_t(b) << 16); }

// binary32 -> bfloat16, round to nearest even; nan stays nan.
inline uint16_t FloatToBF16(float f) {
  uint32_t x = FloatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return uint16_t(x >> 16);
}

}  // namespace longctx
