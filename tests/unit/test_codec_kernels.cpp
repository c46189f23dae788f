// The codec loops (cache/src/codec_kernels.h): every ISA variant gives the generic variant's bits,
// so a block encodes to the same bytes on every machine; the generic f16/bf16 loops are the
// scalar conversions of core/dtype.h, tested on their own in test_npy / test_safetensors.
#include "codec_kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace longctx::cache::internal {
namespace {

// Normal values at several magnitudes, plus the edges: signed zeros, subnormals, the largest
// finite floats, values at and around f16's overflow (65504, 65520) and its subnormal range,
// exact int8 ties (x.5 after scaling) and an odd length so every tail loop runs.
std::vector<float> Values(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(n);
  const float scales[] = {1e-8f, 1e-5f, 1e-2f, 1.0f, 30.0f, 7e4f};
  for (size_t i = 0; i < n; ++i) x[i] = nd(rng) * scales[i % 6];
  const float edge[] = {0.0f, -0.0f, std::numeric_limits<float>::denorm_min(),
                        -std::numeric_limits<float>::min(), std::numeric_limits<float>::max(),
                        -std::numeric_limits<float>::max(), 65504.0f, 65519.99f, 65520.0f,
                        -65536.0f, 5.96e-8f, 2.98e-8f, 2.99e-8f, 6.1e-5f, 0.5f, 1.5f, 2.5f,
                        -2.5f, 126.5f, 127.49f, 127.5f, -127.5f, 300.0f, 1.0f + 1.0f / 4096};
  for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]) && i < n; ++i) x[i * 7 % n] = edge[i];
  return x;
}

template <typename T>
void ExpectSameBits(const std::vector<T>& a, const std::vector<T>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(std::memcmp(&a[i], &b[i], sizeof(T)), 0) << what << " element " << i;
  }
}

TEST(CodecKernels, EveryVariantGivesTheGenericBits) {
  const CodecKernels& g = GenericCodecKernels();
  const CodecKernels* x = Avx2CodecKernels();
  if (x == nullptr) GTEST_SKIP() << "no AVX2 + F16C on this machine or in this build";
  for (size_t n : {0, 1, 7, 8, 9, 15, 16, 17, 1001}) {
    SCOPED_TRACE(n);
    const std::vector<float> v = Values(n, n + 1);
    EXPECT_EQ(g.all_finite(v.data(), n), x->all_finite(v.data(), n));
    std::vector<uint16_t> hg(n), hx(n);
    g.to_f16(v.data(), hg.data(), n);
    x->to_f16(v.data(), hx.data(), n);
    ExpectSameBits(hg, hx, "f16");
    std::vector<float> fg(n), fx(n);
    g.from_f16(hg.data(), fg.data(), n);
    x->from_f16(hg.data(), fx.data(), n);
    ExpectSameBits(fg, fx, "from f16");
    g.to_bf16(v.data(), hg.data(), n);
    x->to_bf16(v.data(), hx.data(), n);
    ExpectSameBits(hg, hx, "bf16");
    g.from_bf16(hg.data(), fg.data(), n);
    x->from_bf16(hg.data(), fx.data(), n);
    ExpectSameBits(fg, fx, "from bf16");
    EXPECT_EQ(g.absmax(v.data(), n), x->absmax(v.data(), n));
    std::vector<float> ag(n, 1.0f), ax(n, 1.0f);
    g.absmax_into(v.data(), ag.data(), n);
    x->absmax_into(v.data(), ax.data(), n);
    ExpectSameBits(ag, ax, "absmax_into");
    // Quantize with scales that put values on exact ties and beyond the clamp.
    std::vector<float> inv(n);
    for (size_t i = 0; i < n; ++i) inv[i] = i % 3 == 0 ? 1.0f : (i % 3 == 1 ? 0.37f : 1e-3f);
    std::vector<int8_t> qg(n), qx(n);
    g.quantize(v.data(), inv.data(), qg.data(), n);
    x->quantize(v.data(), inv.data(), qx.data(), n);
    ExpectSameBits(qg, qx, "quantize");
    g.quantize_one(v.data(), 0.25f, qg.data(), n);
    x->quantize_one(v.data(), 0.25f, qx.data(), n);
    ExpectSameBits(qg, qx, "quantize_one");
    g.dequantize(qg.data(), inv.data(), fg.data(), n);
    x->dequantize(qg.data(), inv.data(), fx.data(), n);
    ExpectSameBits(fg, fx, "dequantize");
    g.dequantize_one(qg.data(), 0.37f, fg.data(), n);
    x->dequantize_one(qg.data(), 0.37f, fx.data(), n);
    ExpectSameBits(fg, fx, "dequantize_one");
  }
}

TEST(CodecKernels, NonFiniteIsFoundAnywhere) {
  for (const CodecKernels* k : {&GenericCodecKernels(), Avx2CodecKernels()}) {
    if (k == nullptr) continue;
    SCOPED_TRACE(k->name);
    for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                      std::numeric_limits<float>::quiet_NaN()}) {
      for (size_t at : {0, 5, 8, 16, 22}) {
        std::vector<float> v(23, 1.0f);
        EXPECT_TRUE(k->all_finite(v.data(), v.size()));
        v[at] = bad;
        EXPECT_FALSE(k->all_finite(v.data(), v.size())) << at;
      }
    }
  }
}

TEST(CodecKernels, QuantizeRoundsHalfToEvenAndClamps) {
  const CodecKernels& g = GenericCodecKernels();
  const std::vector<float> x = {0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 126.5f, 127.5f, 200.0f, -1e9f};
  std::vector<int8_t> q(x.size());
  g.quantize_one(x.data(), 1.0f, q.data(), x.size());
  EXPECT_EQ(q, (std::vector<int8_t>{0, 2, 2, 0, -2, 126, 127, 127, -127}));
}

// LONGCTX_ISA picks the codec loops too; a value they cannot honour is an error, not a fallback.
TEST(CodecKernels, LongctxIsaMustBeKnownAndSupported) {
  const char* saved = std::getenv("LONGCTX_ISA");
  const std::string saved_value = saved ? saved : "";
  setenv("LONGCTX_ISA", "avx9000", 1);
  const Result<const CodecKernels*> bad = BestCodecKernels();
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("LONGCTX_ISA"), std::string::npos);
  setenv("LONGCTX_ISA", "generic", 1);
  ASSERT_TRUE(BestCodecKernels().ok());
  EXPECT_EQ(*BestCodecKernels(), &GenericCodecKernels());
  setenv("LONGCTX_ISA", "avx2", 1);
  EXPECT_EQ(BestCodecKernels().ok(), Avx2CodecKernels() != nullptr);
  unsetenv("LONGCTX_ISA");
  ASSERT_TRUE(BestCodecKernels().ok());
  EXPECT_EQ(*BestCodecKernels(),
            Avx2CodecKernels() != nullptr ? Avx2CodecKernels() : &GenericCodecKernels());
  if (saved) setenv("LONGCTX_ISA", saved_value.c_str(), 1);
}

}  // namespace
}  // namespace longctx::cache::internal
