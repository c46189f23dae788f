// KV block codecs: exact f32, rounding-bounded f16/bf16, KIVI-style int8 within half a
// quantization step per element (keys per channel, values per token), and every kind of damage
// — a flipped byte, truncation, another block's bytes — caught as kDataLoss naming the block.
#include "longctx/cache/kv_block.h"
#include "longctx/test/status_matchers.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace longctx::cache {
namespace {

struct Data {
  BlockShape shape{16, 2, 32};
  std::vector<float> k, v;
};

Data MakeData(uint64_t seed) {
  Data d;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t n = size_t(d.shape.tokens) * size_t(d.shape.row());
  d.k.resize(n);
  d.v.resize(n);
  // Keys with per-channel magnitudes (outlier channels, as KIVI observes), values per token.
  for (size_t i = 0; i < n; ++i) {
    d.k[i] = nd(rng) * (1.0f + float(i % size_t(d.shape.row()) % 7));
    d.v[i] = nd(rng) * (1.0f + float(i / size_t(d.shape.row()) % 5));
  }
  return d;
}

TEST(KvBlock, RoundTripsEveryCodec) {
  const Data d = MakeData(1);
  const BlockKey key{3, 1, 17};
  for (Codec c : {Codec::kF32, Codec::kF16, Codec::kBF16, Codec::kInt8}) {
    SCOPED_TRACE(std::string(CodecName(c)));
    auto enc = EncodeBlock(key, d.shape, c, d.k, d.v);
    ASSERT_OK(enc);
    EXPECT_EQ(enc->size(), EncodedBytes(d.shape, c));
    std::vector<float> k, v;
    BlockShape s;
    ASSERT_OK(DecodeBlock(*enc, key, &s, &k, &v));
    EXPECT_EQ(s.tokens, d.shape.tokens);
    const int64_t row = d.shape.row(), hd = d.shape.head_dim;
    for (size_t i = 0; i < d.k.size(); ++i) {
      double tol_k = 0, tol_v = 0;
      if (c == Codec::kF16) tol_k = std::fabs(d.k[i]) * 1e-3, tol_v = std::fabs(d.v[i]) * 1e-3;
      if (c == Codec::kBF16) tol_k = std::fabs(d.k[i]) * 8e-3, tol_v = std::fabs(d.v[i]) * 8e-3;
      if (c == Codec::kInt8) {
        // Half a step of the channel's (key) or the token-head's (value) scale.
        float kmax = 0, vmax = 0;
        const int64_t ch = int64_t(i) % row, t = int64_t(i) / row, head = ch / hd;
        for (int64_t tt = 0; tt < d.shape.tokens; ++tt) kmax = std::max(kmax, std::fabs(d.k[size_t(tt * row + ch)]));
        for (int64_t e = 0; e < hd; ++e) vmax = std::max(vmax, std::fabs(d.v[size_t(t * row + head * hd + e)]));
        tol_k = kmax / 127 * 0.5001, tol_v = vmax / 127 * 0.5001;
      }
      ASSERT_NEAR(k[i], d.k[i], tol_k) << i;
      ASSERT_NEAR(v[i], d.v[i], tol_v) << i;
    }
  }
  EXPECT_LT(EncodedBytes(d.shape, Codec::kInt8), EncodedBytes(d.shape, Codec::kF32) / 3);
}

TEST(KvBlock, DamageIsDataLossNamingTheBlock) {
  const Data d = MakeData(2);
  const BlockKey key{9, 4, 2};
  auto enc = EncodeBlock(key, d.shape, Codec::kInt8, d.k, d.v);
  ASSERT_OK(enc);
  std::vector<float> k, v;
  for (size_t at : {size_t(0), size_t(45), enc->size() / 2, enc->size() - 1}) {
    auto bad = *enc;
    bad[at] ^= std::byte{0x10};
    const Status st = DecodeBlock(bad, key, nullptr, &k, &v);
    EXPECT_EQ(st.code(), StatusCode::kDataLoss) << at;
    EXPECT_NE(st.message().find("seq 9 layer 4 block 2"), std::string::npos) << st.message();
  }
  std::vector<std::byte> cut(enc->begin(), enc->end() - 7);
  EXPECT_EQ(DecodeBlock(cut, key, nullptr, &k, &v).code(), StatusCode::kDataLoss);
  EXPECT_EQ(DecodeBlock({}, key, nullptr, &k, &v).code(), StatusCode::kDataLoss);
  const Status other = DecodeBlock(*enc, BlockKey{9, 4, 3}, nullptr, &k, &v);
  EXPECT_EQ(other.code(), StatusCode::kDataLoss) << "a block stored under another key";
  EXPECT_NE(other.message().find("instead"), std::string::npos);
}

TEST(KvBlock, RefusesBadInput) {
  Data d = MakeData(3);
  EXPECT_FALSE(EncodeBlock({}, d.shape, Codec::kF16, std::span<const float>(d.k).first(5), d.v).ok());
  d.v[7] = NAN;
  EXPECT_FALSE(EncodeBlock({}, d.shape, Codec::kInt8, d.k, d.v).ok());
  EXPECT_FALSE(EncodeBlock({}, BlockShape{4, 0, 8}, Codec::kF32, {}, {}).ok());
  EXPECT_OK(ParseCodec("int8"));
  EXPECT_FALSE(ParseCodec("int4").ok());
  // An all-zero block quantizes to zeros (scale 0), not NaN.
  Data z;
  z.k.assign(size_t(z.shape.tokens) * size_t(z.shape.row()), 0.0f);
  z.v = z.k;
  auto enc = EncodeBlock({}, z.shape, Codec::kInt8, z.k, z.v);
  ASSERT_OK(enc);
  std::vector<float> k, v;
  ASSERT_OK(DecodeBlock(*enc, {}, nullptr, &k, &v));
  for (float x : k) ASSERT_EQ(x, 0.0f);
}

}  // namespace
}  // namespace longctx::cache
