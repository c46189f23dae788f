#include "codec_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "longctx/core/dtype.h"

namespace longctx::cache::internal {
namespace {

bool AllFinite(const float* x, size_t n) {
  uint32_t bad = 0;  // branch-free, so the loop vectorises
  for (size_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, 4);
    bad |= uint32_t((b & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

void ToF16(const float* x, uint16_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = FloatToHalf(x[i]);
}
void FromF16(const uint16_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = HalfToFloat(in[i]);
}
void ToBF16(const float* x, uint16_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = FloatToBF16(x[i]);
}
void FromBF16(const uint16_t* in, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = BF16ToFloat(in[i]);
}

void AbsMaxInto(const float* x, float* acc, size_t n) {
  for (size_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], std::fabs(x[i]));
}
float AbsMax(const float* x, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// clamp, then round to nearest even (nearbyint in the default rounding mode); clamping first
// gives the same integer as rounding first, for every r.
void Quantize(const float* x, const float* inv, int8_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = int8_t(std::nearbyint(std::clamp(x[i] * inv[i], -127.0f, 127.0f)));
}
void QuantizeOneInv(const float* x, float inv, int8_t* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = int8_t(std::nearbyint(std::clamp(x[i] * inv, -127.0f, 127.0f)));
}
void Dequantize(const int8_t* q, const float* scale, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = float(q[i]) * scale[i];
}
void DequantizeOne(const int8_t* q, float scale, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = float(q[i]) * scale;
}

}  // namespace

const CodecKernels& GenericCodecKernels() {
  static const CodecKernels k{"generic", AllFinite, ToF16,      FromF16,      ToBF16,
                              FromBF16,  AbsMaxInto, AbsMax,    Quantize,     QuantizeOneInv,
                              Dequantize, DequantizeOne};
  return k;
}

#if !defined(LONGCTX_HAVE_X86_VARIANTS)
const CodecKernels* Avx2CodecKernels() { return nullptr; }
#endif

Result<const CodecKernels*> BestCodecKernels() {
  const CodecKernels* avx2 = Avx2CodecKernels();
  const CodecKernels* best = avx2 != nullptr ? avx2 : &GenericCodecKernels();
  const char* env = std::getenv("LONGCTX_ISA");
  if (env == nullptr || *env == '\0') return best;
  const std::string_view isa(env);
  if (isa == "generic") return &GenericCodecKernels();
  if (isa == "auto") return best;
  if (isa == "avx2" || isa == "avx512") {
    if (avx2 == nullptr) {
      return InvalidArgument("LONGCTX_ISA={} is not supported on this CPU/build", isa);
    }
    return avx2;  // the codec loops have no AVX-512 variant
  }
  return InvalidArgument("LONGCTX_ISA: unknown ISA '{}': expected auto, avx512, avx2 or generic",
                         isa);
}

}  // namespace longctx::cache::internal
