// Distributed hybrid attention under a real mpirun: for every rank count the job runs with,
// over randomized shapes and shard layouts (balanced, shards shorter than the window, empty
// shards, all globals in the last shard), the sharded result equals the single-process kernel
// within 1e-5 and is bitwise identical across two runs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "longctx/attention/hybrid_attention.h"
#include "longctx/attention/shard_plan.h"
#include "longctx/comm/communicator.h"
#include "longctx/test/mpi_test.h"
#include "longctx/worker/distributed_attention.h"
#include "longctx/test/status_matchers.h"

namespace longctx::worker {
namespace {


using attention::AttentionSpec;
using attention::Fusion;
using attention::TokenView;

struct Case {
  int64_t n, H, Hkv, d, W;
  bool causal;
  Fusion fusion;
  std::vector<int64_t> globals;
  std::string layout = "balanced";  // balanced | short | empty-first | skewed
};

std::vector<float> Random(size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(count);
  for (float& v : x) v = nd(rng);
  return x;
}

attention::ShardPlan Layout(const Case& c, const AttentionSpec& spec, int P) {
  auto balanced = attention::MakeShardPlan(c.n, c.globals, spec, P);
  EXPECT_OK(balanced);
  attention::ShardPlan p = *balanced;
  if (c.layout == "short") {  // every shard but the last has a few rows, far fewer than W
    for (int r = 1; r < P; ++r) p.bounds[size_t(r)] = std::min<int64_t>(c.n, 3 * r);
  } else if (c.layout == "empty-first") {  // rank 0 (and 1) own nothing
    for (int r = 1; r < P; ++r) p.bounds[size_t(r)] = r <= 2 ? 0 : p.bounds[size_t(r)];
  } else if (c.layout == "skewed") {  // the last rank owns one token
    for (int r = 1; r < P; ++r) p.bounds[size_t(r)] = std::max<int64_t>(0, c.n - 1 - (P - 1 - r));
  }
  return p;
}

void RunCase(const Case& c, uint64_t seed) {
  comm::Communicator& world = test::World();
  const int P = world.size(), me = world.rank();
  SCOPED_TRACE(testing::Message() << "P=" << P << " n=" << c.n << " H=" << c.H << "/" << c.Hkv
                                  << " d=" << c.d << " W=" << c.W << (c.causal ? " causal" : " bidi")
                                  << (c.fusion == Fusion::kUnion ? " union" : " weighted")
                                  << " globals=" << c.globals.size() << " layout=" << c.layout);
  AttentionSpec spec;
  spec.window = c.W;
  spec.causal = c.causal;
  spec.fusion = c.fusion;
  spec.alpha = 0.7f;
  const auto q = Random(size_t(c.n * c.H * c.d), seed);
  const auto k = Random(size_t(c.n * c.Hkv * c.d), seed + 1);
  const auto v = Random(size_t(c.n * c.Hkv * c.d), seed + 2);
  std::vector<float> whole(q.size()), whole_lse(size_t(c.n * c.H));
  if (c.n > 0) {
    ASSERT_TRUE(attention::HybridAttention(TokenView::Dense(q.data(), DType::kF32, c.n, c.H, c.d),
                                           TokenView::Dense(k.data(), DType::kF32, c.n, c.Hkv, c.d),
                                           TokenView::Dense(v.data(), DType::kF32, c.n, c.Hkv, c.d),
                                           c.globals, spec, whole.data(), whole_lse.data())
                    .ok());
  }
  const attention::ShardPlan plan = Layout(c, spec, P);
  const int64_t s = plan.begin(me), e = plan.end(me), rows = e - s;
  ShardTensors shard{
      TokenView::Dense(q.data() + s * c.H * c.d, DType::kF32, rows, c.H, c.d),
      TokenView::Dense(k.data() + s * c.Hkv * c.d, DType::kF32, rows, c.Hkv, c.d),
      TokenView::Dense(v.data() + s * c.Hkv * c.d, DType::kF32, rows, c.Hkv, c.d)};
  ThreadPool pool(2);
  std::vector<float> out[2], lse[2];
  for (int run = 0; run < 2; ++run) {
    out[run].assign(size_t(rows * c.H * c.d), NAN);
    lse[run].assign(size_t(rows * c.H), NAN);
    DistributedStats st;
    const Status status = DistributedAttention(world, plan, c.globals, spec, shard, out[run].data(),
                                               lse[run].data(), {&pool}, &st);
    ASSERT_OK(status);
    // Traffic: what the plan says must arrive, arrives, and nothing more.
    EXPECT_EQ(st.halo.received, st.halo.min_received);
    EXPECT_EQ(st.global_kv.received, st.global_kv.min_received);
  }
  EXPECT_EQ(out[0], out[1]) << "not bitwise repeatable";
  EXPECT_EQ(lse[0], lse[1]);
  double worst = 0.0, worst_lse = 0.0;
  for (int64_t i = 0; i < rows * c.H; ++i) {
    double err = 0.0, mag = 1e-30;
    for (int64_t x = 0; x < c.d; ++x) {
      err = std::max(err, double(std::fabs(out[0][i * c.d + x] - whole[(s * c.H + i) * c.d + x])));
      mag = std::max(mag, double(std::fabs(whole[(s * c.H + i) * c.d + x])));
    }
    worst = std::max(worst, err / mag);
    const double lr = whole_lse[s * c.H + i];
    worst_lse = std::max(worst_lse, std::fabs(lse[0][i] - lr) / std::max(1.0, std::fabs(lr)));
  }
  EXPECT_LE(worst, 1e-5);
  EXPECT_LE(worst_lse, 1e-5);
}

std::vector<int64_t> Every(int64_t n, int64_t step, int64_t from = 0) {
  std::vector<int64_t> g;
  for (int64_t i = from; i < n; i += step) g.push_back(i);
  return g;
}

TEST(DistributedAttention, EdgeLayouts) {
  for (const char* layout : {"balanced", "short", "empty-first", "skewed"}) {
    for (bool causal : {true, false}) {
      for (Fusion f : {Fusion::kUnion, Fusion::kWeighted}) {
        RunCase(Case{90, 4, 2, 32, 20, causal, f, {0, 1, 2, 3, 45, 89}, layout}, 1);
      }
    }
  }
}

TEST(DistributedAttention, FewerTokensThanRanks) {
  for (int64_t n : {1, 2, 3}) {
    RunCase(Case{n, 2, 1, 32, 4, true, Fusion::kUnion, {0}}, 2);
    RunCase(Case{n, 2, 2, 32, 4, false, Fusion::kWeighted, {}}, 3);
  }
}

TEST(DistributedAttention, GlobalSets) {
  const int64_t n = 400;
  RunCase(Case{n, 4, 1, 64, 50, true, Fusion::kUnion, {}}, 4);                  // none
  RunCase(Case{n, 4, 1, 64, 50, true, Fusion::kUnion, Every(n, 1)}, 5);         // all
  RunCase(Case{n, 4, 2, 64, 50, true, Fusion::kWeighted, Every(n, 7, 330)}, 6);  // last shard
  RunCase(Case{n, 4, 2, 64, 50, false, Fusion::kUnion, Every(n, 7, 330)}, 7);
  RunCase(Case{n, 3, 3, 80, 50, false, Fusion::kWeighted, {0, n - 1}}, 8);      // edges
}

TEST(DistributedAttention, RandomizedShapes) {
  std::mt19937_64 rng(99);  // the same sequence on every rank
  const int64_t ds[] = {32, 64, 80};
  const std::pair<int64_t, int64_t> heads[] = {{1, 1}, {4, 2}, {6, 3}, {4, 1}};
  const char* layouts[] = {"balanced", "short", "skewed", "balanced"};
  for (int t = 0; t < 12; ++t) {
    Case c;
    c.n = std::uniform_int_distribution<int64_t>(1, 900)(rng);
    c.d = ds[t % 3];
    c.H = heads[t % 4].first;
    c.Hkv = heads[t % 4].second;
    const int64_t ws[] = {1, 3, 64, 257, c.n + 2};
    c.W = ws[std::uniform_int_distribution<int>(0, 4)(rng)];
    c.causal = t % 2 == 0;
    c.fusion = (t / 2) % 2 ? Fusion::kWeighted : Fusion::kUnion;
    c.globals = Every(c.n, std::uniform_int_distribution<int64_t>(2, 200)(rng));
    c.layout = layouts[t % 4];
    RunCase(c, 100 + t);
  }
}

}  // namespace
}  // namespace longctx::worker
