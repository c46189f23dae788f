// The LSE merge against direct computation over the union of two disjoint key sets,
// including empty sets, -inf and extreme logits.
#include "longctx/attention/lse_merge.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace longctx::attention {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Softmax attention of scores over value rows (dim 3), in double; returns L (or -inf).
double Direct(const std::vector<double>& s, const std::vector<std::vector<double>>& v,
              std::vector<double>* o) {
  o->assign(3, 0.0);
  if (s.empty()) return -INFINITY;
  double m = -INFINITY;
  for (double x : s) m = std::max(m, x);
  double sum = 0;
  for (size_t j = 0; j < s.size(); ++j) {
    const double p = std::exp(s[j] - m);
    sum += p;
    for (int c = 0; c < 3; ++c) (*o)[c] += p * v[j][c];
  }
  for (double& x : *o) x /= sum;
  return m + std::log(sum);
}

TEST(LseMerge, MatchesDirectOverUnion) {
  std::mt19937 rng(7);
  for (double scale : {1.0, 30.0, 1e3, 3e4}) {
    for (int trial = 0; trial < 200; ++trial) {
      std::uniform_int_distribution<int> count(0, 6);
      std::normal_distribution<double> nd(0, 1);
      const int na = count(rng), nb = count(rng);
      std::vector<double> sa, sb, sall;
      std::vector<std::vector<double>> va, vb, vall;
      for (int j = 0; j < na + nb; ++j) {
        const double s = nd(rng) * scale;
        std::vector<double> v = {nd(rng), nd(rng), nd(rng)};
        (j < na ? sa : sb).push_back(s);
        (j < na ? va : vb).push_back(v);
        sall.push_back(s);
        vall.push_back(v);
      }
      std::vector<double> oa, ob, oall;
      const double la = Direct(sa, va, &oa), lb = Direct(sb, vb, &ob), lall = Direct(sall, vall, &oall);
      float o[3] = {float(oa[0]), float(oa[1]), float(oa[2])};
      const float obf[3] = {float(ob[0]), float(ob[1]), float(ob[2])};
      float l = float(la);
      MergeState(o, &l, obf, float(lb), 3);
      if (na + nb == 0) {
        EXPECT_EQ(l, -kInf);
        for (float x : o) EXPECT_EQ(x, 0.0f);
        continue;
      }
      ASSERT_TRUE(std::isfinite(l));
      EXPECT_NEAR(l, lall, 1e-6 * std::max(1.0, std::fabs(lall)));
      for (int c = 0; c < 3; ++c) EXPECT_NEAR(o[c], oall[c], 2e-6 * (1 + std::fabs(oall[c])));
    }
  }
}

TEST(LseMerge, EmptySidesContributeNothing) {
  float o[2] = {1.5f, -2.0f};
  float l = 3.0f;
  const float ob[2] = {100.0f, 100.0f};
  MergeState(o, &l, ob, -kInf, 2);
  EXPECT_EQ(l, 3.0f);
  EXPECT_EQ(o[0], 1.5f);
  float o2[2] = {0.0f, 0.0f};
  float l2 = -kInf;
  MergeState(o2, &l2, o, l, 2);
  EXPECT_EQ(l2, 3.0f);
  EXPECT_EQ(o2[1], -2.0f);
  EXPECT_EQ(LogAddExp(-kInf, -kInf), -kInf);
  EXPECT_FLOAT_EQ(LogAddExp(1e30f, 0.0f), 1e30f);
  EXPECT_FLOAT_EQ(LogAddExp(-1e30f, 5.0f), 5.0f);
}

TEST(LseMerge, MergeStatesIsOrderIndependentUpToRounding) {
  const float oa[2] = {1, 2}, ob[2] = {3, 4}, oc[2] = {5, 6};
  const float la = 10, lb = -5, lc = 9.5;
  float x[2] = {oa[0], oa[1]}, lx = la;
  MergeState(x, &lx, ob, lb, 2);
  MergeState(x, &lx, oc, lc, 2);
  float y[2] = {oc[0], oc[1]}, ly = lc;
  MergeState(y, &ly, oa, la, 2);
  MergeState(y, &ly, ob, lb, 2);
  EXPECT_NEAR(lx, ly, 1e-5);
  EXPECT_NEAR(x[0], y[0], 1e-5);
  EXPECT_NEAR(x[1], y[1], 1e-5);
}

}  // namespace
}  // namespace longctx::attention
