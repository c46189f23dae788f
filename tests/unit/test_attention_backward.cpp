// The hybrid-attention backward (attention_backward.h) against the float64 reference backward
// (reference.h), on every ISA this CPU runs: both fusions, GQA, head dims that are and are not a
// multiple of the vector width, windows from 1 to beyond n, global sets of every shape, the
// entropy term, determinism with a thread pool, and the sharded composition the distributed
// engine uses. The reference itself is checked by finite differences of a float64 loss.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "longctx/attention/attention_backward.h"
#include "longctx/attention/hybrid_attention.h"
#include "longctx/attention/reference.h"
#include "longctx/test/status_matchers.h"

namespace longctx::attention {
namespace {

struct Case {
  int64_t n, H, Hkv, d, W;
  bool causal = true;
  Fusion fusion = Fusion::kUnion;
  float alpha = 0.7f;
  std::vector<int64_t> globals;
  bool entropy = false;  // entropy_coef nonzero on global-query rows
};

struct Data {
  std::vector<float> q, k, v, dout, coef;
  TokenView qv, kv, vv;
  AttentionSpec spec;
};

Data MakeData(const Case& c, uint64_t seed) {
  Data x;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& t, int64_t count) {
    t.resize(size_t(count));
    for (float& e : t) e = nd(rng);
  };
  fill(x.q, c.n * c.H * c.d);
  fill(x.k, c.n * c.Hkv * c.d);
  fill(x.v, c.n * c.Hkv * c.d);
  fill(x.dout, c.n * c.H * c.d);
  x.coef.assign(size_t(c.n * c.H), 0.0f);
  if (c.entropy) {
    std::uniform_real_distribution<float> ud(-1.0f, 1.0f);
    for (int64_t g : c.globals)
      for (int64_t h = 0; h < c.H; ++h) x.coef[size_t(g * c.H + h)] = ud(rng);
  }
  x.qv = TokenView::Dense(x.q.data(), DType::kF32, c.n, c.H, c.d);
  x.kv = TokenView::Dense(x.k.data(), DType::kF32, c.n, c.Hkv, c.d);
  x.vv = TokenView::Dense(x.v.data(), DType::kF32, c.n, c.Hkv, c.d);
  x.spec.window = c.W;
  x.spec.causal = c.causal;
  x.spec.fusion = c.fusion;
  x.spec.alpha = c.alpha;
  return x;
}

struct Grads {
  std::vector<float> dq, dk, dv;
  bool operator==(const Grads& o) const {
    auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
    };
    return same(dq, o.dq) && same(dk, o.dk) && same(dv, o.dv);
  }
};

Grads ZeroGrads(const Case& c) {
  return Grads{std::vector<float>(size_t(c.n * c.H * c.d), 0.0f),
               std::vector<float>(size_t(c.n * c.Hkv * c.d), 0.0f),
               std::vector<float>(size_t(c.n * c.Hkv * c.d), 0.0f)};
}

Grads Reference(const Case& c, const Data& x) {
  Grads g = ZeroGrads(c);
  const Status st =
      ReferenceAttentionBackward(x.qv, x.kv, x.vv, c.globals, x.spec, x.dout.data(), g.dq.data(),
                                 g.dk.data(), g.dv.data(), c.entropy ? x.coef.data() : nullptr);
  EXPECT_OK(st);
  return g;
}

Grads Optimized(const Case& c, const Data& x, const ExecOptions& exec) {
  std::vector<float> out(size_t(c.n * c.H * c.d)), lse(size_t(c.n * c.H));
  Status st = HybridAttention(x.qv, x.kv, x.vv, c.globals, x.spec, out.data(), lse.data(), exec);
  EXPECT_OK(st);
  Grads g = ZeroGrads(c);
  st = HybridAttentionBackward(x.qv, x.kv, x.vv, c.globals, x.spec, out.data(), lse.data(),
                               x.dout.data(), g.dq.data(), g.dk.data(), g.dv.data(), exec,
                               c.entropy ? x.coef.data() : nullptr);
  EXPECT_OK(st);
  return g;
}

// ||a - ref||_2 / ||ref||_2 (0 when both vanish).
double RelL2(const std::vector<float>& a, const std::vector<float>& ref) {
  double err = 0.0, mag = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    mag += double(ref[i]) * ref[i];
  }
  if (mag == 0.0) return std::sqrt(err);
  return std::sqrt(err / mag);
}

void ExpectClose(const Grads& g, const Grads& ref, double tol) {
  EXPECT_LE(RelL2(g.dq, ref.dq), tol) << "dq";
  EXPECT_LE(RelL2(g.dk, ref.dk), tol) << "dk";
  EXPECT_LE(RelL2(g.dv, ref.dv), tol) << "dv";
}

std::vector<Isa> Isas() {
  std::vector<Isa> v;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kGeneric}) {
    if (IsaSupported(isa)) v.push_back(isa);
  }
  return v;
}

std::string Describe(const Case& c) {
  std::string g;
  for (size_t i = 0; i < c.globals.size() && i < 8; ++i) g += std::to_string(c.globals[i]) + ",";
  return fmt::format("n={} H={} Hkv={} d={} W={} {} {} A={} globals({})={}{} entropy={}", c.n, c.H,
                     c.Hkv, c.d, c.W, c.causal ? "causal" : "bidi",
                     c.fusion == Fusion::kUnion ? "union" : "weighted", c.alpha, c.globals.size(),
                     g, c.globals.size() > 8 ? "..." : "", c.entropy);
}

// Every ISA, without a pool and with a 2-thread pool (twice: bitwise repeatable).
void CheckCase(const Case& c, uint64_t seed, double tol = 1e-5) {
  SCOPED_TRACE(Describe(c));
  const Data x = MakeData(c, seed);
  const Grads ref = Reference(c, x);
  ThreadPool pool(2);
  for (Isa isa : Isas()) {
    SCOPED_TRACE(std::string("isa=") + std::string(IsaName(isa)));
    const Grads g1 = Optimized(c, x, ExecOptions{nullptr, isa});
    ExpectClose(g1, ref, tol);
    const Grads g2 = Optimized(c, x, ExecOptions{&pool, isa});
    const Grads g3 = Optimized(c, x, ExecOptions{&pool, isa});
    EXPECT_TRUE(g2 == g3) << "not bitwise repeatable with 2 threads";
    EXPECT_TRUE(g1 == g2) << "1 thread and 2 threads differ";
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

TEST(AttentionBackward, SmallShapes) {
  for (int64_t n : {1, 2, 5, 17}) {
    for (int64_t W : {1, 3, 16, 40}) {
      for (bool causal : {true, false}) {
        for (Fusion f : {Fusion::kUnion, Fusion::kWeighted}) {
          std::vector<int64_t> edges = {0};
          if (n > 1) edges.push_back(n - 1);
          for (const auto& g : {std::vector<int64_t>{}, edges}) {
            Case c{n, 2, 1, 16, W, causal, f, 0.7f, g};
            CheckCase(c, uint64_t(n * 100 + W));
          }
        }
      }
    }
  }
}

TEST(AttentionBackward, RandomizedAgainstReference) {
  std::mt19937_64 rng(7);
  const int64_t ds[] = {16, 64, 80};
  const std::pair<int64_t, int64_t> heads[] = {{4, 2}, {4, 4}, {8, 1}, {1, 1}, {2, 2}};
  const float alphas[] = {0.7f, 0.0f, 1.0f};
  for (int trial = 0; trial < 20; ++trial) {
    Case c{1, 1, 1, 16, 1, true, Fusion::kUnion, 0.7f, {}};
    c.n = std::uniform_int_distribution<int64_t>(1, trial < 4 ? 700 : 300)(rng);
    c.d = ds[trial % 3];
    c.H = heads[trial % 5].first;
    c.Hkv = heads[trial % 5].second;
    const int64_t windows[] = {1, 3, 64, c.n + 5};
    c.W = windows[trial % 4];
    c.causal = trial % 7 != 3;
    c.fusion = (trial / 2) % 2 == 0 ? Fusion::kUnion : Fusion::kWeighted;
    c.alpha = alphas[(trial / 4) % 3];
    switch (trial % 6) {
      case 0:
        break;  // none
      case 1:
        c.globals = RandomGlobals(c.n, 0.02, rng);
        break;  // a few
      case 2:
        c.globals = RandomGlobals(c.n, 0.4, rng);
        break;  // many
      case 3:
        c.globals = {0};
        if (c.n > 1) c.globals.push_back(c.n - 1);
        break;  // edges
      case 4:   // adjacent runs
        for (int64_t i = 0; i < c.n; ++i) {
          if (i % 50 < 6 || i == c.n - 1) c.globals.push_back(i);
        }
        break;
      case 5:
        for (int64_t i = 0; i < c.n; ++i) c.globals.push_back(i);  // all
        break;
    }
    c.entropy = trial % 3 == 1;
    CheckCase(c, 1000 + trial);
  }
}

TEST(AttentionBackward, WeightedAlphaExtremes) {
  for (float alpha : {0.0f, 1.0f, 0.3f}) {
    Case c{230, 4, 2, 80, 33, true, Fusion::kWeighted, alpha, {0, 1, 2, 3, 50, 51, 120, 229}};
    CheckCase(c, 77);
  }
}

TEST(AttentionBackward, EntropyTerm) {
  for (Fusion f : {Fusion::kUnion, Fusion::kWeighted}) {
    for (bool causal : {true, false}) {
      Case c{300, 4, 2, 64, 40, causal, f, 0.7f, {0, 7, 8, 9, 150, 299}};
      c.entropy = true;
      CheckCase(c, 99);
    }
  }
}

// ---- the reference itself, by finite differences of a float64 loss -------------------------

// loss = sum dout . O + sum coef * Entropy(all visible keys of the row), in float64, the plain
// way (O from the fusion rules of DESIGN.md §1).
double Loss(const Case& c, const std::vector<double>& q, const std::vector<double>& k,
            const std::vector<double>& v, const std::vector<float>& dout,
            const std::vector<float>& coef) {
  const int64_t n = c.n, H = c.H, Hkv = c.Hkv, d = c.d, G = H / Hkv;
  const double scale = 1.0 / std::sqrt(double(d));
  AttentionSpec spec;
  spec.window = c.W;
  spec.causal = c.causal;
  std::vector<char> isg(size_t(n), 0);
  for (int64_t g : c.globals) isg[size_t(g)] = 1;
  double loss = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> s(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j) {
        double x = 0.0;
        for (int64_t e = 0; e < d; ++e)
          x += q[size_t((i * H + h) * d + e)] * k[size_t((j * Hkv + h / G) * d + e)];
        s[size_t(j)] = scale * x;
      }
      auto attend = [&](auto allowed, std::vector<double>* o) {  // returns false if empty
        double mx = -1e300, sum = 0.0;
        bool any = false;
        for (int64_t j = 0; j < n; ++j)
          if (allowed(j)) mx = std::max(mx, s[size_t(j)]), any = true;
        o->assign(size_t(d), 0.0);
        if (!any) return false;
        for (int64_t j = 0; j < n; ++j) {
          if (!allowed(j)) continue;
          const double p = std::exp(s[size_t(j)] - mx);
          sum += p;
          for (int64_t e = 0; e < d; ++e)
            (*o)[size_t(e)] += p * v[size_t((j * Hkv + h / G) * d + e)];
        }
        for (double& e : *o) e /= sum;
        return true;
      };
      auto visible = [&](int64_t j) { return !c.causal || j <= i; };
      auto win = [&](int64_t j) { return InWindow(i, j, spec); };
      auto glob = [&](int64_t j) { return visible(j) && (isg[size_t(j)] || isg[size_t(i)]); };
      auto uni = [&](int64_t j) { return win(j) || glob(j); };
      std::vector<double> o, ow, og;
      if (c.fusion == Fusion::kUnion) {
        attend(uni, &o);
      } else {
        attend(win, &ow);
        if (attend(glob, &og)) {
          o.resize(size_t(d));
          for (int64_t e = 0; e < d; ++e)
            o[size_t(e)] = c.alpha * ow[size_t(e)] + (1 - c.alpha) * og[size_t(e)];
        } else {
          o = ow;
        }
      }
      for (int64_t e = 0; e < d; ++e) loss += dout[size_t((i * H + h) * d + e)] * o[size_t(e)];
      const double cf = coef[size_t(i * H + h)];
      if (cf != 0.0) {
        double mx = -1e300, sum = 0.0;
        for (int64_t j = 0; j < n; ++j)
          if (visible(j)) mx = std::max(mx, s[size_t(j)]);
        for (int64_t j = 0; j < n; ++j)
          if (visible(j)) sum += std::exp(s[size_t(j)] - mx);
        const double lse = mx + std::log(sum);
        double ent = 0.0;
        for (int64_t j = 0; j < n; ++j)
          if (visible(j)) ent -= std::exp(s[size_t(j)] - lse) * (s[size_t(j)] - lse);
        loss += cf * ent;
      }
    }
  }
  return loss;
}

TEST(AttentionBackward, ReferenceMatchesFiniteDifferences) {
  for (Fusion f : {Fusion::kUnion, Fusion::kWeighted}) {
    for (bool causal : {true, false}) {
      Case c{6, 2, 1, 3, 2, causal, f, 0.7f, {0, 3}};
      c.entropy = true;
      SCOPED_TRACE(Describe(c));
      const Data x = MakeData(c, 5);
      const Grads ref = Reference(c, x);
      std::vector<double> q(x.q.begin(), x.q.end()), k(x.k.begin(), x.k.end()),
          v(x.v.begin(), x.v.end());
      const double eps = 1e-5;
      auto check = [&](std::vector<double>& t, const std::vector<float>& grad, const char* name) {
        for (size_t i = 0; i < t.size(); ++i) {
          const double keep = t[i];
          t[i] = keep + eps;
          const double lp = Loss(c, q, k, v, x.dout, x.coef);
          t[i] = keep - eps;
          const double lm = Loss(c, q, k, v, x.dout, x.coef);
          t[i] = keep;
          const double fd = (lp - lm) / (2 * eps);
          EXPECT_NEAR(grad[i], fd, 1e-5 * std::max(1.0, std::fabs(fd))) << name << "[" << i << "]";
        }
      };
      check(q, ref.dq, "dq");
      check(k, ref.dk, "dk");
      check(v, ref.dv, "dv");
    }
  }
}

// ---- the sharded composition (how the distributed engine calls the building blocks) --------

// Rank r owns rows [b[r], b[r+1]). It runs WindowGlobalBackward on its rows with halo keys
// [max(0, s-W+1), e) (causal), the packed globals' K/V, and returns dK/dV of the halo to its
// owner (here: added at the absolute positions) and dGK/dGV to the globals' owners. Global
// queries: every rank runs DensePartialBackward over its own keys [s, e) with the FINAL lse,
// the fusion-scaled dO and delta (from window_dot at the owner); the dq partials are summed.
// Entropy: each rank's DensePartialScoreMoment over its keys, summed, gives L - Entropy.
void CheckComposition(const Case& c, const std::vector<int64_t>& bounds, uint64_t seed,
                      bool with_reference = true) {
  SCOPED_TRACE(Describe(c));
  const Data x = MakeData(c, seed);
  const int64_t n = c.n, H = c.H, Hkv = c.Hkv, d = c.d, W = c.W;
  const int64_t g = int64_t(c.globals.size());
  const bool weighted = c.fusion == Fusion::kWeighted;
  ThreadPool pool(2);
  const ExecOptions exec{&pool, Isa::kAuto};
  std::vector<float> out(size_t(n * H * d)), lse(size_t(n * H));
  ASSERT_OK(HybridAttention(x.qv, x.kv, x.vv, c.globals, x.spec, out.data(), lse.data(), exec));
  const Grads whole = Optimized(c, x, exec);

  Grads sum = ZeroGrads(c);
  std::vector<float> gk(size_t(g * Hkv * d)), gv(size_t(g * Hkv * d)), gq(size_t(g * H * d));
  for (int64_t r = 0; r < g; ++r) {
    std::copy_n(x.k.data() + c.globals[size_t(r)] * Hkv * d, Hkv * d, gk.data() + r * Hkv * d);
    std::copy_n(x.v.data() + c.globals[size_t(r)] * Hkv * d, Hkv * d, gv.data() + r * Hkv * d);
    std::copy_n(x.q.data() + c.globals[size_t(r)] * H * d, H * d, gq.data() + r * H * d);
  }
  std::vector<float> dgk(gk.size(), 0.0f), dgv(gv.size(), 0.0f);
  std::vector<float> window_dot(size_t(n * H), 0.0f);
  for (size_t r = 0; r + 1 < bounds.size(); ++r) {
    const int64_t s = bounds[r], e = bounds[r + 1];
    if (s == e) continue;
    const int64_t lo = std::max<int64_t>(0, s - W + 1);
    const int64_t hi = c.causal ? e : std::min(n, e + W - 1);
    std::vector<float> dk(size_t((hi - lo) * Hkv * d), 0.0f), dv(dk.size(), 0.0f);
    std::vector<float> dq(size_t((e - s) * H * d), 0.0f), wd(size_t((e - s) * H), 0.0f);
    WindowGlobalGradArgs a;
    a.q = TokenView::Dense(x.q.data() + s * H * d, DType::kF32, e - s, H, d);
    a.k = TokenView::Dense(x.k.data() + lo * Hkv * d, DType::kF32, hi - lo, Hkv, d);
    a.v = TokenView::Dense(x.v.data() + lo * Hkv * d, DType::kF32, hi - lo, Hkv, d);
    a.gk = TokenView::Dense(gk.data(), DType::kF32, g, Hkv, d);
    a.gv = TokenView::Dense(gv.data(), DType::kF32, g, Hkv, d);
    a.q_pos0 = s;
    a.kv_pos0 = lo;
    a.seq_len = n;
    a.global_pos = c.globals;
    a.dout = x.dout.data() + s * H * d;
    a.dq = dq.data();
    a.dk = dk.data();
    a.dv = dv.data();
    a.dgk = dgk.data();
    a.dgv = dgv.data();
    a.window_dot = wd.data();
    const Status st = WindowGlobalBackward(a, x.spec, exec);
    ASSERT_OK(st);
    for (size_t i = 0; i < dq.size(); ++i) sum.dq[size_t(s * H * d) + i] += dq[i];
    for (size_t i = 0; i < dk.size(); ++i) {
      sum.dk[size_t(lo * Hkv * d) + i] += dk[i];
      sum.dv[size_t(lo * Hkv * d) + i] += dv[i];
    }
    std::copy(wd.begin(), wd.end(), window_dot.begin() + s * H);
  }
  for (int64_t r = 0; r < g; ++r) {
    for (int64_t e = 0; e < Hkv * d; ++e) {
      sum.dk[size_t(c.globals[size_t(r)] * Hkv * d + e)] += dgk[size_t(r * Hkv * d + e)];
      sum.dv[size_t(c.globals[size_t(r)] * Hkv * d + e)] += dgv[size_t(r * Hkv * d + e)];
    }
  }
  if (g > 0) {
    // At the owners: final lse, scaled dO, delta; entropy from the summed moments.
    const float w = weighted ? 1.0f - c.alpha : 1.0f;
    std::vector<float> lse_g(size_t(g * H)), dout_g(size_t(g * H * d)), delta(size_t(g * H));
    std::vector<float> coef(size_t(g * H)), psum(size_t(g * H), 0.0f), ent(size_t(g * H));
    for (int64_t r = 0; r < g; ++r) {
      const int64_t i = c.globals[size_t(r)];
      for (int64_t h = 0; h < H; ++h) {
        double dot = 0.0;
        for (int64_t e = 0; e < d; ++e) {
          dot += double(x.dout[size_t((i * H + h) * d + e)]) * out[size_t((i * H + h) * d + e)];
          dout_g[size_t((r * H + h) * d + e)] = w * x.dout[size_t((i * H + h) * d + e)];
        }
        if (weighted) dot -= double(c.alpha) * window_dot[size_t(i * H + h)];
        delta[size_t(r * H + h)] = float(dot);
        lse_g[size_t(r * H + h)] = lse[size_t(i * H + h)];
        coef[size_t(r * H + h)] = x.coef[size_t(i * H + h)];
      }
    }
    const TokenView qg = TokenView::Dense(gq.data(), DType::kF32, g, H, d);
    if (c.entropy) {
      for (size_t r = 0; r + 1 < bounds.size(); ++r) {
        const int64_t s = bounds[r], e = bounds[r + 1];
        if (s == e) continue;
        DensePartialArgs m;
        m.q = qg;
        m.k = TokenView::Dense(x.k.data() + s * Hkv * d, DType::kF32, e - s, Hkv, d);
        m.v = TokenView::Dense(x.v.data() + s * Hkv * d, DType::kF32, e - s, Hkv, d);
        m.q_pos = c.globals;
        m.kv_pos0 = s;
        std::vector<float> part(size_t(g * H));
        ASSERT_OK(DensePartialScoreMoment(m, lse_g.data(), part.data(), x.spec, exec));
        for (size_t i = 0; i < part.size(); ++i) psum[i] += part[i];
      }
      for (size_t i = 0; i < ent.size(); ++i) ent[i] = lse_g[i] - psum[i];
    }
    std::vector<float> dq_g(size_t(g * H * d), 0.0f);
    for (size_t r = 0; r + 1 < bounds.size(); ++r) {
      const int64_t s = bounds[r], e = bounds[r + 1];
      if (s == e) continue;
      DensePartialGradArgs p;
      p.q = qg;
      p.k = TokenView::Dense(x.k.data() + s * Hkv * d, DType::kF32, e - s, Hkv, d);
      p.v = TokenView::Dense(x.v.data() + s * Hkv * d, DType::kF32, e - s, Hkv, d);
      p.q_pos = c.globals;
      p.kv_pos0 = s;
      p.lse = lse_g.data();
      p.dout = dout_g.data();
      p.delta = delta.data();
      if (c.entropy) {
        p.entropy_coef = coef.data();
        p.entropy = ent.data();
      }
      std::vector<float> dq_part(dq_g.size(), 0.0f);
      p.dq = dq_part.data();
      p.dk = sum.dk.data() + s * Hkv * d;
      p.dv = sum.dv.data() + s * Hkv * d;
      const Status st = DensePartialBackward(p, x.spec, exec);
      ASSERT_OK(st);
      for (size_t i = 0; i < dq_g.size(); ++i) dq_g[i] += dq_part[i];
    }
    for (int64_t r = 0; r < g; ++r) {
      for (int64_t e = 0; e < H * d; ++e) {
        sum.dq[size_t(c.globals[size_t(r)] * H * d + e)] += dq_g[size_t(r * H * d + e)];
      }
    }
  }
  ExpectClose(sum, whole, 1e-5);
  if (with_reference) ExpectClose(sum, Reference(c, x), 1e-5);
}

TEST(AttentionBackward, ShardedCompositionEqualsWhole) {
  for (Fusion f : {Fusion::kUnion, Fusion::kWeighted}) {
    for (bool causal : {true, false}) {
      Case c{260, 4, 2, 64, 24, causal, f, 0.7f, {0, 1, 2, 3, 40, 100, 101, 180, 259}};
      c.entropy = true;
      CheckComposition(c, {0, 97, 110, 260}, 3);  // a shard shorter than W
      CheckComposition(c, {0, 130, 260}, 4);
      CheckComposition(c, {0, 0, 5, 260}, 6);  // an empty shard, a tiny one
    }
  }
}

TEST(AttentionBackward, LongSequenceSplitsAgreeWithShards) {
  // n > 2 x 4096: the whole-sequence global-key pass splits its rows (partials summed in split
  // order) while each shard's does not; the float64 reference is too slow here.
  for (Fusion f : {Fusion::kUnion, Fusion::kWeighted}) {
    Case c{9000, 2, 1, 16, 16, true, f, 0.7f, {}};
    for (int64_t i = 0; i < c.n; i += 311) c.globals.push_back(i);
    c.globals.push_back(c.n - 1);
    c.entropy = true;
    CheckComposition(c, {0, 3000, 6100, 9000}, 8, /*with_reference=*/false);
  }
}

TEST(AttentionBackward, RejectsBadArguments) {
  Case c{10, 2, 1, 16, 4, true, Fusion::kUnion, 0.7f, {0}};
  Data x = MakeData(c, 1);
  std::vector<float> out(size_t(c.n * c.H * c.d)), lse(size_t(c.n * c.H));
  ASSERT_OK(HybridAttention(x.qv, x.kv, x.vv, c.globals, x.spec, out.data(), lse.data()));
  Grads g = ZeroGrads(c);
  // f16 inputs are not supported by the backward yet.
  std::vector<uint16_t> q16(x.q.size());
  const TokenView q16v = TokenView::Dense(q16.data(), DType::kF16, c.n, c.H, c.d);
  Status st = HybridAttentionBackward(q16v, x.kv, x.vv, c.globals, x.spec, out.data(), lse.data(),
                                      x.dout.data(), g.dq.data(), g.dk.data(), g.dv.data());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("f32"), std::string::npos) << st.message();
  st = HybridAttentionBackward(x.qv, x.kv, x.vv, c.globals, x.spec, out.data(), lse.data(),
                               x.dout.data(), nullptr, g.dk.data(), g.dv.data());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  // Local K/V that miss part of a window.
  WindowGlobalGradArgs a;
  a.q = TokenView::Dense(x.q.data() + 5 * c.H * c.d, DType::kF32, 5, c.H, c.d);
  a.k = TokenView::Dense(x.k.data() + 5 * c.Hkv * c.d, DType::kF32, 5, c.Hkv, c.d);
  a.v = a.k;
  a.q_pos0 = 5;
  a.kv_pos0 = 5;
  a.seq_len = 10;
  a.dout = x.dout.data();
  a.dq = g.dq.data();
  a.dk = g.dk.data();
  a.dv = g.dv.data();
  st = WindowGlobalBackward(a, x.spec);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("cover"), std::string::npos) << st.message();
  // Globals without dgk/dgv.
  a.q_pos0 = 0;
  a.kv_pos0 = 0;
  a.q = x.qv;
  a.k = x.kv;
  a.v = x.vv;
  a.gk = TokenView::Dense(x.k.data(), DType::kF32, 1, c.Hkv, c.d);
  a.gv = a.gk;
  a.global_pos = c.globals;
  st = WindowGlobalBackward(a, x.spec);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  // Dense: entropy_coef without entropy.
  DensePartialGradArgs p;
  p.q = x.qv;
  p.k = x.kv;
  p.v = x.vv;
  std::vector<int64_t> pos(size_t(c.n));
  for (int64_t i = 0; i < c.n; ++i) pos[size_t(i)] = i;
  p.q_pos = pos;
  p.lse = lse.data();
  p.dout = x.dout.data();
  p.delta = lse.data();
  p.entropy_coef = lse.data();
  p.dq = g.dq.data();
  p.dk = g.dk.data();
  p.dv = g.dv.data();
  st = DensePartialBackward(p, x.spec);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace longctx::attention
