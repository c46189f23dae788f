// The codec loops with AVX2 + F16C (compiled with -mavx2 -mf16c; chosen at run time).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "codec_kernels.h"
#include "longctx/core/dtype.h"

namespace longctx::cache::internal {
namespace {

bool AllFinite(const float* x, size_t n) {
  const __m256i exp = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(b, exp), exp));
  }
  bool ok = _mm256_testz_si256(bad, bad);
  for (; i < n; ++i) ok = ok && std::isfinite(x[i]);
  return ok;
}

void ToF16(const float* x, uint16_t* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
  for (; i < n; ++i) out[i] = FloatToHalf(x[i]);
}
void FromF16(const uint16_t* in, float* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) out[i] = HalfToFloat(in[i]);
}

// Finite x: bits + 0x7fff + ((bits >> 16) & 1), keep the high half (round to nearest even).
void ToBF16(const float* x, uint16_t* out, size_t n) {
  const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 8));
    a = _mm256_srli_epi32(
        _mm256_add_epi32(a, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(a, 16), one))), 16);
    b = _mm256_srli_epi32(
        _mm256_add_epi32(b, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(b, 16), one))), 16);
    // packus works within 128-bit lanes: a0 b0 a1 b1 -> reorder the quadwords to a0 a1 b0 b1.
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), p);
  }
  for (; i < n; ++i) out[i] = FloatToBF16(x[i]);
}
void FromBF16(const uint16_t* in, float* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  for (; i < n; ++i) out[i] = BF16ToFloat(in[i]);
}

void AbsMaxInto(const float* x, float* acc, size_t n) {
  const __m256 mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), mask);
    _mm256_storeu_ps(acc + i, _mm256_max_ps(_mm256_loadu_ps(acc + i), a));
  }
  for (; i < n; ++i) acc[i] = std::max(acc[i], std::fabs(x[i]));
}
float AbsMax(const float* x, size_t n) {
  const __m256 mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + i), mask));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float r = 0.0f;
  for (float v : lanes) r = std::max(r, v);
  for (; i < n; ++i) r = std::max(r, std::fabs(x[i]));
  return r;
}

// 8 products -> clamp to [-127, 127] -> round to nearest even -> 8 int8 at out.
inline void Store8(__m256 r, int8_t* out) {
  r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
  const __m256i v = _mm256_cvtps_epi32(_mm256_round_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packs_epi16(w, w));
}
int8_t QuantizeScalar(float r) {
  return int8_t(std::nearbyint(std::clamp(r, -127.0f, 127.0f)));
}
void Quantize(const float* x, const float* inv, int8_t* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) Store8(_mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(inv + i)), out + i);
  for (; i < n; ++i) out[i] = QuantizeScalar(x[i] * inv[i]);
}
void QuantizeOneInv(const float* x, float inv, int8_t* out, size_t n) {
  const __m256 s = _mm256_set1_ps(inv);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) Store8(_mm256_mul_ps(_mm256_loadu_ps(x + i), s), out + i);
  for (; i < n; ++i) out[i] = QuantizeScalar(x[i] * inv);
}
inline __m256 Load8(const int8_t* q) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q))));
}
void Dequantize(const int8_t* q, const float* scale, float* out, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(Load8(q + i), _mm256_loadu_ps(scale + i)));
  for (; i < n; ++i) out[i] = float(q[i]) * scale[i];
}
void DequantizeOne(const int8_t* q, float scale, float* out, size_t n) {
  const __m256 s = _mm256_set1_ps(scale);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(Load8(q + i), s));
  for (; i < n; ++i) out[i] = float(q[i]) * scale;
}

}  // namespace

const CodecKernels* Avx2CodecKernels() {
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  static const CodecKernels k{"avx2", AllFinite, ToF16,      FromF16,  ToBF16,
                              FromBF16, AbsMaxInto, AbsMax,  Quantize, QuantizeOneInv,
                              Dequantize, DequantizeOne};
  return supported ? &k : nullptr;
}

}  // namespace longctx::cache::internal
