// ShardPlan: contiguous, complete, balanced by the cost model, valid for n < ranks and for
// shards shorter than the window; serializable; the same on every rank (a pure function).
#include "longctx/attention/shard_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "longctx/attention/hybrid_attention.h"
#include "longctx/test/status_matchers.h"

namespace longctx::attention {
namespace {

void ExpectWellFormed(const ShardPlan& p, int64_t n, int ranks) {
  ASSERT_EQ(p.ranks(), ranks);
  EXPECT_EQ(p.bounds.front(), 0);
  EXPECT_EQ(p.bounds.back(), n);
  EXPECT_TRUE(std::is_sorted(p.bounds.begin(), p.bounds.end()));
  for (int64_t t = 0; t < n; ++t) {
    const int r = p.Owner(t);
    ASSERT_GE(t, p.begin(r));
    ASSERT_LT(t, p.end(r));
  }
}

TEST(ShardPlan, CoversAndBalancesUniformWork) {
  AttentionSpec spec;
  spec.window = 64;
  auto p = MakeShardPlan(100000, {}, spec, 4);
  ASSERT_OK(p);
  ExpectWellFormed(*p, 100000, 4);
  for (int r = 0; r < 4; ++r) EXPECT_NEAR(double(p->rows(r)), 25000.0, 100.0);
}

TEST(ShardPlan, CostModelMatchesAllowedPairsAndBalancesGlobals) {
  // Globals all at the end: the last tokens are expensive queries; keys before them are read
  // by every global query. Costs per rank must be within one token's cost of each other.
  AttentionSpec spec;
  spec.window = 16;
  std::vector<int64_t> g;
  for (int64_t i = 9000; i < 10000; i += 10) g.push_back(i);
  auto p = MakeShardPlan(10000, g, spec, 3);
  ASSERT_OK(p);
  ExpectWellFormed(*p, 10000, 3);
  const int64_t total = std::accumulate(p->cost.begin(), p->cost.end(), int64_t(0));
  for (int r = 0; r < 3; ++r) EXPECT_NEAR(double(p->cost[r]), double(total) / 3, double(total) * 0.01);
  // The model counts the work the distributed path does: every allowed pair once, plus the
  // window component each global query's owner computes besides its all-keys partials.
  EXPECT_EQ(total, AllowedPairs(10000, 1, g, spec) + int64_t(g.size()) * spec.window);
}

TEST(ShardPlan, FewerTokensThanRanksGivesEmptyShards) {
  AttentionSpec spec;
  for (int64_t n : {0, 1, 2, 3}) {
    auto p = MakeShardPlan(n, {}, spec, 4);
    ASSERT_OK(p);
    ExpectWellFormed(*p, n, 4);
    int empty = 0;
    for (int r = 0; r < 4; ++r) empty += p->rows(r) == 0;
    EXPECT_GE(empty, 4 - n);
    for (int r = 0; r < 4; ++r) {
      if (p->rows(r) == 0) {
        EXPECT_EQ(p->KeyRange(r).first, p->KeyRange(r).second);
      }
    }
  }
}

TEST(ShardPlan, KeyRangeSpansSeveralShardsWhenShardsAreShort) {
  AttentionSpec spec;
  spec.window = 100;
  auto p = MakeShardPlan(120, {}, spec, 4);  // ~30 rows per shard < W
  ASSERT_OK(p);
  const auto [lo, hi] = p->KeyRange(3);
  EXPECT_EQ(lo, std::max<int64_t>(0, p->begin(3) - 99));
  EXPECT_EQ(hi, 120);
  EXPECT_LT(lo, p->begin(2)) << "the halo of rank 3 reaches past rank 2";
  spec.causal = false;
  auto b = MakeShardPlan(120, {}, spec, 4);
  ASSERT_OK(b);
  EXPECT_EQ(b->KeyRange(0).second, std::min<int64_t>(120, b->end(0) + 99));
}

TEST(ShardPlan, SerializeRoundTripAndBadText) {
  AttentionSpec spec;
  spec.window = 32;
  spec.causal = false;
  const std::vector<int64_t> g = {0, 5, 700};
  auto p = MakeShardPlan(1000, g, spec, 3);
  ASSERT_OK(p);
  auto q = ShardPlan::Parse(p->Serialize());
  ASSERT_OK(q);
  EXPECT_EQ(q->bounds, p->bounds);
  EXPECT_EQ(q->cost, p->cost);
  EXPECT_EQ(q->window, 32);
  EXPECT_FALSE(q->causal);
  EXPECT_NE(p->ToString().find("rank   2"), std::string::npos);
  for (const char* bad : {"", "plan", "longctx-shard-plan/1 n=10",
                          "longctx-shard-plan/1 n=10 window=4 causal=1 bounds=0,5,9 cost=1,1",
                          "longctx-shard-plan/1 n=10 window=4 causal=1 bounds=0,6,5,10 cost=1,1,1",
                          "longctx-shard-plan/1 n=10 window=x causal=1 bounds=0,10 cost=1"}) {
    EXPECT_FALSE(ShardPlan::Parse(bad).ok()) << bad;
  }
  EXPECT_FALSE(MakeShardPlan(10, {}, spec, 0).ok());
  const std::vector<int64_t> unsorted = {3, 2};
  EXPECT_FALSE(MakeShardPlan(10, unsorted, spec, 2).ok());
}

}  // namespace
}  // namespace longctx::attention
