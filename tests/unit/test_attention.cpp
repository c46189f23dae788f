// The optimized kernel against the float64 dense-masked reference, on every ISA this CPU
// runs, over randomized shapes, windows, global sets, fusions, directions and dtypes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "longctx/attention/hybrid_attention.h"
#include "longctx/attention/lse_merge.h"
#include "longctx/attention/reference.h"
#include "longctx/test/status_matchers.h"

namespace longctx::attention {
namespace {

struct Case {
  int64_t n, H, Hkv, d, W;
  bool causal;
  Fusion fusion;
  std::vector<int64_t> globals;
  DType dtype = DType::kF32;
  float logit_scale = 1.0f;  // multiplies q and k: large values give extreme logits
};

struct Inputs {
  std::vector<float> q, k, v;             // exact values used (after rounding to dtype)
  std::vector<uint16_t> q16, k16, v16;    // storage for f16 / bf16 cases
  TokenView qv, kv, vv;
};

uint16_t Narrow(float x, DType t) { return t == DType::kF16 ? FloatToHalf(x) : FloatToBF16(x); }
float Widen(uint16_t x, DType t) { return t == DType::kF16 ? HalfToFloat(x) : BF16ToFloat(x); }

Inputs MakeInputs(const Case& c, uint64_t seed) {
  Inputs in;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& x, std::vector<uint16_t>& x16, int64_t heads, float mul) {
    x.resize(size_t(c.n * heads * c.d));
    for (float& e : x) e = nd(rng) * mul;
    if (c.dtype != DType::kF32) {
      x16.resize(x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        x16[i] = Narrow(x[i], c.dtype);
        x[i] = Widen(x16[i], c.dtype);
      }
    }
  };
  fill(in.q, in.q16, c.H, c.logit_scale);
  fill(in.k, in.k16, c.Hkv, c.logit_scale);
  fill(in.v, in.v16, c.Hkv, 1.0f);
  const bool f32 = c.dtype == DType::kF32;
  in.qv = TokenView::Dense(f32 ? (const void*)in.q.data() : in.q16.data(), c.dtype, c.n, c.H, c.d);
  in.kv = TokenView::Dense(f32 ? (const void*)in.k.data() : in.k16.data(), c.dtype, c.n, c.Hkv, c.d);
  in.vv = TokenView::Dense(f32 ? (const void*)in.v.data() : in.v16.data(), c.dtype, c.n, c.Hkv, c.d);
  return in;
}

// max over (query, head) of ||o - ref||_inf / ||ref||_inf.
double RowRelError(const std::vector<float>& o, const std::vector<float>& ref, int64_t d) {
  double worst = 0.0;
  for (size_t s = 0; s < o.size() / size_t(d); ++s) {
    double err = 0.0, mag = 1e-30;
    for (int64_t e = 0; e < d; ++e) {
      err = std::max(err, double(std::fabs(o[s * d + e] - ref[s * d + e])));
      mag = std::max(mag, double(std::fabs(ref[s * d + e])));
    }
    worst = std::max(worst, err / mag);
  }
  return worst;
}

double LseError(const std::vector<float>& l, const std::vector<float>& ref) {
  double worst = 0.0;
  for (size_t i = 0; i < l.size(); ++i) {
    worst = std::max(worst, std::fabs(double(l[i]) - ref[i]) / std::max(1.0, std::fabs(double(ref[i]))));
  }
  return worst;
}

std::vector<Isa> Isas() {
  std::vector<Isa> v;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kGeneric}) {
    if (IsaSupported(isa)) v.push_back(isa);
  }
  return v;
}

void CheckCase(const Case& c, uint64_t seed, double tol = 1e-5) {
  SCOPED_TRACE(testing::Message() << "n=" << c.n << " H=" << c.H << " Hkv=" << c.Hkv << " d="
                                  << c.d << " W=" << c.W << (c.causal ? " causal" : " bidi")
                                  << (c.fusion == Fusion::kUnion ? " union" : " weighted")
                                  << " globals=" << c.globals.size() << " dtype="
                                  << DTypeName(c.dtype) << " logit_scale=" << c.logit_scale);
  const Inputs in = MakeInputs(c, seed);
  AttentionSpec spec;
  spec.window = c.W;
  spec.causal = c.causal;
  spec.fusion = c.fusion;
  spec.alpha = 0.7f;
  std::vector<float> ref(size_t(c.n * c.H * c.d)), ref_lse(size_t(c.n * c.H));
  ASSERT_OK(ReferenceAttention(in.qv, in.kv, in.vv, c.globals, spec, ref.data(), ref_lse.data()));
  for (Isa isa : Isas()) {
    for (int threads : {1, 3}) {
      SCOPED_TRACE(testing::Message() << "isa=" << IsaName(isa) << " threads=" << threads);
      ThreadPool pool(threads);
      std::vector<float> out(ref.size(), NAN), lse(ref_lse.size(), NAN);
      const Status st = HybridAttention(in.qv, in.kv, in.vv, c.globals, spec, out.data(), lse.data(),
                                        ExecOptions{&pool, isa});
      ASSERT_OK(st);
      EXPECT_LE(RowRelError(out, ref, c.d), tol);
      EXPECT_LE(LseError(lse, ref_lse), tol);
    }
  }
}

std::vector<int64_t> RandomGlobals(int64_t n, double density, std::mt19937_64& rng) {
  std::vector<int64_t> g;
  std::bernoulli_distribution pick(density);
  for (int64_t i = 0; i < n; ++i) {
    if (pick(rng)) g.push_back(i);
  }
  return g;
}

TEST(HybridAttention, SmallExhaustiveShapes) {
  // Every window from 1 to beyond n, with and without globals, both directions and fusions.
  for (int64_t n : {1, 2, 5, 17}) {
    for (int64_t W : {1, 2, 3, 7, 16, 40}) {
      for (bool causal : {true, false}) {
        for (Fusion f : {Fusion::kUnion, Fusion::kWeighted}) {
          std::vector<int64_t> edges = {0};
          if (n > 1) edges.push_back(n - 1);
          for (const auto& g : {std::vector<int64_t>{}, edges}) {
            CheckCase(Case{n, 2, 1, 32, W, causal, f, g}, uint64_t(n * 1000 + W));
          }
        }
      }
    }
  }
}

TEST(HybridAttention, RandomizedAgainstReference) {
  std::mt19937_64 rng(2024);
  const int64_t ds[] = {32, 64, 80, 128};
  const std::pair<int64_t, int64_t> heads[] = {{1, 1}, {4, 2}, {4, 1}, {3, 3}, {6, 2}, {8, 8}};
  for (int trial = 0; trial < 24; ++trial) {
    Case c;
    c.n = std::uniform_int_distribution<int64_t>(1, 700)(rng);
    c.d = ds[trial % 4];
    c.H = heads[trial % 6].first;
    c.Hkv = heads[trial % 6].second;
    const int64_t windows[] = {1, 3, 64, 100, 257, c.n, c.n + 5};
    c.W = windows[std::uniform_int_distribution<int>(0, 6)(rng)];
    c.causal = trial % 2 == 0;
    c.fusion = (trial / 2) % 2 == 0 ? Fusion::kUnion : Fusion::kWeighted;
    switch (trial % 5) {
      case 0: break;                                                       // none
      case 1: c.globals = RandomGlobals(c.n, 0.02, rng); break;            // sparse
      case 2: c.globals = RandomGlobals(c.n, 0.4, rng); break;             // dense
      case 3: for (int64_t i = 0; i < c.n; ++i) c.globals.push_back(i); break;  // all
      case 4: c.globals = {0, c.n - 1}; if (c.n == 1) c.globals = {0}; break;   // edges
    }
    CheckCase(c, 100 + trial);
  }
}

TEST(HybridAttention, HeadDimsAcrossTheRange) {
  for (int64_t d : {32, 40, 48, 96, 112, 160, 192, 256}) {
    CheckCase(Case{150, 2, 1, d, 33, true, Fusion::kUnion, {0, 1, 2, 3, 77}}, uint64_t(d));
  }
}

TEST(HybridAttention, Fp16AndBf16Inputs) {
  for (DType t : {DType::kF16, DType::kBF16}) {
    CheckCase(Case{300, 4, 2, 64, 50, true, Fusion::kUnion, {0, 10, 299}, t}, 5);
    CheckCase(Case{300, 4, 1, 80, 50, false, Fusion::kWeighted, {3, 150}, t}, 6);
  }
}

// Largest |scale * q.k| of a case: fp32 logits carry about |s| * 2^-24 absolute rounding in
// any fp32 kernel (the dot product, the scale), so outputs can only match float64 that well.
double MaxLogit(const Case& c, const Inputs& in) {
  double mx = 0.0;
  const int64_t group = c.H / c.Hkv;
  for (int64_t i = 0; i < c.n; ++i)
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t j = 0; j < c.n; ++j) {
        double dot = 0.0;
        for (int64_t e = 0; e < c.d; ++e)
          dot += double(in.q[(i * c.H + h) * c.d + e]) * in.k[(j * c.Hkv + h / group) * c.d + e];
        mx = std::max(mx, std::fabs(dot) / std::sqrt(double(c.d)));
      }
  return mx;
}

TEST(HybridAttention, ExtremeLogits) {
  // Logits up to ~1e2, ~4e3 and ~3e4: the online softmax must neither overflow nor lose rows,
  // and the error must stay within what fp32 logits allow (4 * max|s| * 2^-24, >= 1e-5).
  const Case cases[] = {
      {200, 2, 1, 64, 20, true, Fusion::kUnion, {0, 5, 150}, DType::kF32, 6.0f},
      {200, 2, 2, 64, 20, false, Fusion::kWeighted, {0, 199}, DType::kF32, 35.0f},
      {120, 2, 1, 32, 9, true, Fusion::kUnion, {0, 60}, DType::kF32, 100.0f},
  };
  uint64_t seed = 9;
  for (const Case& c : cases) {
    const double max_logit = MaxLogit(c, MakeInputs(c, seed));
    EXPECT_GT(max_logit, c.logit_scale * c.logit_scale) << "the case must really be extreme";
    CheckCase(c, seed, std::max(1e-5, 4.0 * max_logit * std::ldexp(1.0, -24)));
    ++seed;
  }
}

TEST(HybridAttention, LargerSequenceSpansManyTiles) {
  CheckCase(Case{2500, 2, 1, 64, 300, true, Fusion::kUnion, {0, 1, 2, 3, 700, 1900, 2499}}, 11);
  CheckCase(Case{2000, 4, 2, 32, 130, false, Fusion::kWeighted, {0, 999, 1000, 1500}}, 12);
}

TEST(HybridAttention, SplitKeyPartialsForLongSequences) {
  // Global queries over > 16384 keys take several key splits merged by LSE; check those rows
  // against the reference computed on the global rows only (the full reference is O(n^2)).
  const int64_t n = 40000, H = 2, Hkv = 1, d = 32;
  Case c{n, H, Hkv, d, 64, true, Fusion::kUnion, {0, 20000, 39999}};
  const Inputs in = MakeInputs(c, 77);
  AttentionSpec spec;
  spec.window = 64;
  std::vector<float> out(size_t(n * H * d)), lse(size_t(n * H));
  ThreadPool pool(2);
  ASSERT_TRUE(HybridAttention(in.qv, in.kv, in.vv, c.globals, spec, out.data(), lse.data(),
                              ExecOptions{&pool, Isa::kAuto}).ok());
  for (int64_t i : c.globals) {
    for (int64_t h = 0; h < H; ++h) {
      // direct double softmax over keys 0..i
      std::vector<double> s(size_t(i + 1));
      double m = -INFINITY;
      for (int64_t j = 0; j <= i; ++j) {
        double dot = 0;
        for (int64_t e = 0; e < d; ++e) dot += double(in.q[(i * H + h) * d + e]) * in.k[(j * Hkv) * d + e];
        s[size_t(j)] = dot / std::sqrt(double(d));
        m = std::max(m, s[size_t(j)]);
      }
      double sum = 0;
      std::vector<double> o(size_t(d), 0.0);
      for (int64_t j = 0; j <= i; ++j) {
        const double p = std::exp(s[size_t(j)] - m);
        sum += p;
        for (int64_t e = 0; e < d; ++e) o[size_t(e)] += p * in.v[(j * Hkv) * d + e];
      }
      double err = 0, mag = 1e-30;
      for (int64_t e = 0; e < d; ++e) {
        err = std::max(err, std::fabs(out[(i * H + h) * d + e] - o[size_t(e)] / sum));
        mag = std::max(mag, std::fabs(o[size_t(e)] / sum));
      }
      EXPECT_LE(err / mag, 1e-5) << "global query " << i;
      EXPECT_NEAR(lse[i * H + h], m + std::log(sum), 1e-5 * std::max(1.0, std::fabs(m)));
    }
  }
}

TEST(HybridAttention, DeterministicAcrossThreadCounts) {
  Case c{3000, 4, 2, 64, 128, true, Fusion::kUnion, {0, 1, 2, 3, 500, 1500, 2999}};
  const Inputs in = MakeInputs(c, 3);
  AttentionSpec spec;
  spec.window = c.W;
  std::vector<float> a(size_t(c.n * c.H * c.d)), b(a.size()), la(size_t(c.n * c.H)), lb(la.size());
  ThreadPool p1(1), p3(3);
  ASSERT_OK(HybridAttention(in.qv, in.kv, in.vv, c.globals, spec, a.data(), la.data(), {&p1}));
  ASSERT_OK(HybridAttention(in.qv, in.kv, in.vv, c.globals, spec, b.data(), lb.data(), {&p3}));
  EXPECT_EQ(a, b) << "bitwise identical for any thread count";
  EXPECT_EQ(la, lb);
}

// A sink that copies each chunk into a whole [n, H, d] result, checking the chunk order.
class CollectingSink : public ChunkSink {
 public:
  CollectingSink(int64_t n, int64_t H, int64_t d, int64_t chunk_rows)
      : H_(H), d_(d), out_(size_t(n * H * d), NAN), lse_(size_t(n * H), NAN),
        buf_out_(size_t(chunk_rows * H * d)), buf_lse_(size_t(chunk_rows * H)) {}
  Result<Buffer> Acquire(int64_t row0, int64_t rows) override {
    EXPECT_EQ(row0, next_row_);
    buf_out_.resize(size_t(rows * H_ * d_));
    buf_lse_.resize(size_t(rows * H_));
    std::fill(buf_out_.begin(), buf_out_.end(), NAN);  // nothing may leak from a previous chunk
    std::fill(buf_lse_.begin(), buf_lse_.end(), NAN);
    return Buffer{buf_out_.data(), buf_lse_.data()};
  }
  Status Done(int64_t row0, int64_t rows) override {
    std::copy_n(buf_out_.data(), rows * H_ * d_, out_.data() + row0 * H_ * d_);
    std::copy_n(buf_lse_.data(), rows * H_, lse_.data() + row0 * H_);
    next_row_ = row0 + rows;
    ++chunks_;
    if (fail_after_ > 0 && chunks_ == fail_after_) return DataLoss("sink failed on purpose");
    return Status::Ok();
  }
  int64_t H_, d_;
  std::vector<float> out_, lse_, buf_out_, buf_lse_;
  int64_t next_row_ = 0, chunks_ = 0, fail_after_ = 0;
};

TEST(HybridAttention, InChunksEqualsWholeSequenceBitwise) {
  // Chunk sizes that do and do not align with kernel tiles, a chunk larger than n, globals on
  // chunk edges; both fusions and directions; every ISA; 1 and 3 threads.
  const int64_t n = 1100, H = 4, Hkv = 2, d = 64, W = 96;
  const std::vector<int64_t> globals = {0, 1, 2, 3, 255, 256, 511, 700, 1024, 1099};
  for (bool causal : {true, false}) {
    for (Fusion f : {Fusion::kUnion, Fusion::kWeighted}) {
      Case c{n, H, Hkv, d, W, causal, f, globals};
      const Inputs in = MakeInputs(c, 31);
      AttentionSpec spec;
      spec.window = W;
      spec.causal = causal;
      spec.fusion = f;
      spec.alpha = 0.7f;
      for (Isa isa : Isas()) {
        for (int threads : {1, 3}) {
          ThreadPool pool(threads);
          const ExecOptions exec{&pool, isa};
          std::vector<float> whole(size_t(n * H * d)), whole_lse(size_t(n * H));
          ASSERT_TRUE(HybridAttention(in.qv, in.kv, in.vv, globals, spec, whole.data(),
                                      whole_lse.data(), exec).ok());
          for (int64_t chunk : {1, 7, 256, 300, 512, 4096}) {
            SCOPED_TRACE(testing::Message() << "isa=" << IsaName(isa) << " threads=" << threads
                                            << " chunk=" << chunk << " causal=" << causal
                                            << " fusion=" << int(f));
            CollectingSink sink(n, H, d, std::min(chunk, n));
            const Status st =
                HybridAttentionInChunks(in.qv, in.kv, in.vv, globals, spec, chunk, sink, exec);
            ASSERT_OK(st);
            EXPECT_EQ(sink.next_row_, n);
            EXPECT_EQ(0, std::memcmp(sink.out_.data(), whole.data(), whole.size() * 4));
            EXPECT_EQ(0, std::memcmp(sink.lse_.data(), whole_lse.data(), whole_lse.size() * 4));
          }
        }
      }
    }
  }
}

TEST(HybridAttention, InChunksStopsAtTheFirstSinkError) {
  Case c{600, 2, 2, 32, 16, true, Fusion::kUnion, {0, 300}};
  const Inputs in = MakeInputs(c, 5);
  AttentionSpec spec;
  spec.window = c.W;
  CollectingSink sink(c.n, c.H, c.d, 100);
  sink.fail_after_ = 2;
  const Status st = HybridAttentionInChunks(in.qv, in.kv, in.vv, c.globals, spec, 100, sink);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_EQ(sink.chunks_, 2);
  CollectingSink ok_sink(c.n, c.H, c.d, 100);
  EXPECT_EQ(HybridAttentionInChunks(in.qv, in.kv, in.vv, c.globals, spec, 0, ok_sink).code(),
            StatusCode::kInvalidArgument);
}

TEST(HybridAttention, ShardedBuildingBlocksEqualWholeSequence) {
  // Split queries into shards; each gets its window halo and the packed globals; global
  // queries get partials over key ranges merged by LSE. Must equal the one-call result.
  const int64_t n = 900, H = 4, Hkv = 2, d = 64, W = 100;
  for (bool causal : {true, false}) {
    for (Fusion f : {Fusion::kUnion, Fusion::kWeighted}) {
      Case c{n, H, Hkv, d, W, causal, f, {0, 1, 2, 3, 250, 251, 640, 899}};
      const Inputs in = MakeInputs(c, 21);
      AttentionSpec spec;
      spec.window = W;
      spec.causal = causal;
      spec.fusion = f;
      std::vector<float> whole(size_t(n * H * d)), whole_lse(size_t(n * H));
      ASSERT_OK(HybridAttention(in.qv, in.kv, in.vv, c.globals, spec, whole.data(), whole_lse.data()));
      const int64_t g = int64_t(c.globals.size());
      std::vector<float> gk, gv;
      for (int64_t p : c.globals) {
        gk.insert(gk.end(), in.k.begin() + p * Hkv * d, in.k.begin() + (p + 1) * Hkv * d);
        gv.insert(gv.end(), in.v.begin() + p * Hkv * d, in.v.begin() + (p + 1) * Hkv * d);
      }
      std::vector<float> out(whole.size()), lse(whole_lse.size());
      const int64_t bounds[] = {0, 37, 300, 301, 700, n};
      for (int s = 0; s + 1 < 6; ++s) {
        const int64_t s0 = bounds[s], s1 = bounds[s + 1];
        const int64_t k0 = std::max<int64_t>(0, s0 - W + 1);
        const int64_t k1 = causal ? s1 : std::min(n, s1 + W - 1);
        WindowGlobalArgs a;
        a.q = TokenView{in.q.data() + s0 * H * d, DType::kF32, s1 - s0, H, d, H * d};
        a.k = TokenView{in.k.data() + k0 * Hkv * d, DType::kF32, k1 - k0, Hkv, d, Hkv * d};
        a.v = TokenView{in.v.data() + k0 * Hkv * d, DType::kF32, k1 - k0, Hkv, d, Hkv * d};
        a.gk = TokenView::Dense(gk.data(), DType::kF32, g, Hkv, d);
        a.gv = TokenView::Dense(gv.data(), DType::kF32, g, Hkv, d);
        a.q_pos0 = s0;
        a.kv_pos0 = k0;
        a.seq_len = n;
        a.global_pos = c.globals;
        a.out = out.data() + s0 * H * d;
        a.lse = lse.data() + s0 * H;
        ASSERT_OK(WindowGlobalPass(a, spec));
      }
      // Global queries: partials over each shard's own keys, merged in shard order.
      std::vector<float> gq;
      for (int64_t p : c.globals) gq.insert(gq.end(), in.q.begin() + p * H * d, in.q.begin() + (p + 1) * H * d);
      std::vector<float> o_all(size_t(g * H * d)), l_all(size_t(g * H));
      for (int s = 0; s + 1 < 6; ++s) {
        const int64_t s0 = bounds[s], s1 = bounds[s + 1];
        std::vector<float> po(o_all.size()), pl(l_all.size());
        DensePartialArgs a;
        a.q = TokenView::Dense(gq.data(), DType::kF32, g, H, d);
        a.k = TokenView{in.k.data() + s0 * Hkv * d, DType::kF32, s1 - s0, Hkv, d, Hkv * d};
        a.v = TokenView{in.v.data() + s0 * Hkv * d, DType::kF32, s1 - s0, Hkv, d, Hkv * d};
        a.q_pos = c.globals;
        a.kv_pos0 = s0;
        a.out = s == 0 ? o_all.data() : po.data();
        a.lse = s == 0 ? l_all.data() : pl.data();
        ASSERT_OK(DensePartialPass(a, spec));
        if (s > 0) MergeStates(o_all.data(), l_all.data(), po.data(), pl.data(), g * H, d);
      }
      std::vector<float> ow(o_all.size()), lw(l_all.size());
      for (int64_t r = 0; r < g; ++r) {
        std::copy_n(out.data() + c.globals[r] * H * d, H * d, ow.data() + r * H * d);
        std::copy_n(lse.data() + c.globals[r] * H, H, lw.data() + r * H);
      }
      FuseGlobalQueries(spec, g, H, d, ow.data(), lw.data(), o_all.data(), l_all.data());
      for (int64_t r = 0; r < g; ++r) {
        std::copy_n(ow.data() + r * H * d, H * d, out.data() + c.globals[r] * H * d);
        std::copy_n(lw.data() + r * H, H, lse.data() + c.globals[r] * H);
      }
      EXPECT_LE(RowRelError(out, whole, d), 2e-6);
      EXPECT_LE(LseError(lse, whole_lse), 2e-6);
    }
  }
}

TEST(HybridAttention, RejectsBadInputs) {
  std::vector<float> x(size_t(10 * 2 * 32), 0.5f), out(x.size()), lse(20);
  const TokenView q = TokenView::Dense(x.data(), DType::kF32, 10, 2, 32);
  const TokenView k = TokenView::Dense(x.data(), DType::kF32, 10, 2, 32);
  const TokenView k3 = TokenView::Dense(x.data(), DType::kF32, 10, 3, 32);
  const TokenView k_short = TokenView::Dense(x.data(), DType::kF32, 9, 2, 32);
  AttentionSpec spec;
  const std::vector<int64_t> unsorted = {3, 1}, dup = {2, 2}, oob = {10}, neg = {-1};
  EXPECT_EQ(HybridAttention(q, k, k, unsorted, spec, out.data(), lse.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HybridAttention(q, k, k, dup, spec, out.data(), lse.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HybridAttention(q, k, k, oob, spec, out.data(), lse.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HybridAttention(q, k, k, neg, spec, out.data(), lse.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HybridAttention(q, k3, k3, {}, spec, out.data(), lse.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HybridAttention(q, k_short, k_short, {}, spec, out.data(), lse.data()).code(), StatusCode::kInvalidArgument);
  spec.window = 0;
  EXPECT_EQ(HybridAttention(q, k, k, {}, spec, out.data(), lse.data()).code(), StatusCode::kInvalidArgument);
  AttentionSpec s2;
  EXPECT_FALSE(ParseFusion("weighted:1.5", &s2).ok());
  EXPECT_FALSE(ParseFusion("weighted:", &s2).ok());
  EXPECT_FALSE(ParseFusion("mean", &s2).ok());
  EXPECT_OK(ParseFusion("weighted:0.3", &s2));
  EXPECT_FLOAT_EQ(s2.alpha, 0.3f);
}

// LONGCTX_ISA picks the kernel variant; a value it cannot honour is an error, not a fallback.
TEST(HybridAttention, LongctxIsaMustBeKnownAndSupported) {
  const char* saved = std::getenv("LONGCTX_ISA");
  const std::string saved_value = saved ? saved : "";
  std::vector<float> x(size_t(10 * 2 * 32), 0.5f), out(x.size()), lse(20);
  const TokenView q = TokenView::Dense(x.data(), DType::kF32, 10, 2, 32);
  const AttentionSpec spec;
  setenv("LONGCTX_ISA", "avx9000", 1);
  const Result<Isa> bad = IsaFromEnvironment();
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("LONGCTX_ISA"), std::string::npos) << bad.status().message();
  const Status run = HybridAttention(q, q, q, {}, spec, out.data(), lse.data());
  EXPECT_EQ(run.code(), StatusCode::kInvalidArgument) << run.ToString();
  // An explicit ISA does not read the variable.
  EXPECT_OK(HybridAttention(q, q, q, {}, spec, out.data(), lse.data(), {nullptr, Isa::kGeneric}));
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2}) {
    setenv("LONGCTX_ISA", std::string(IsaName(isa)).c_str(), 1);
    EXPECT_EQ(IsaFromEnvironment().ok(), IsaSupported(isa)) << IsaName(isa);
    EXPECT_EQ(HybridAttention(q, q, q, {}, spec, out.data(), lse.data()).ok(), IsaSupported(isa));
  }
  setenv("LONGCTX_ISA", "generic", 1);
  ASSERT_OK(IsaFromEnvironment());
  EXPECT_EQ(*IsaFromEnvironment(), Isa::kGeneric);
  EXPECT_EQ(BestIsa(), Isa::kGeneric);
  EXPECT_OK(HybridAttention(q, q, q, {}, spec, out.data(), lse.data()));
  unsetenv("LONGCTX_ISA");
  EXPECT_EQ(*IsaFromEnvironment(), Isa::kAuto);
  if (saved) setenv("LONGCTX_ISA", saved_value.c_str(), 1);
}

TEST(HybridAttention, AllowedPairsCountsTheMask) {
  for (bool causal : {true, false}) {
    AttentionSpec spec;
    spec.window = 7;
    spec.causal = causal;
    const int64_t n = 50;
    const std::vector<int64_t> g = {0, 3, 20, 49};
    int64_t direct = 0;
    for (int64_t i = 0; i < n; ++i) {
      const bool gi = std::binary_search(g.begin(), g.end(), i);
      for (int64_t j = 0; j < n; ++j) {
        const bool vis = !causal || j <= i;
        const bool gj = std::binary_search(g.begin(), g.end(), j);
        if (InWindow(i, j, spec) || (vis && (gi || gj))) ++direct;
      }
    }
    EXPECT_EQ(AllowedPairs(n, 3, g, spec), 3 * direct);
  }
}

}  // namespace
}  // namespace longctx::attention
