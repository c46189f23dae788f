#include "longctx/attention/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "longctx/attention/hybrid_attention.h"

namespace longctx::attention {
namespace {

double Element(const TokenView& t, int64_t row, int64_t head, int64_t c) {
  const int64_t idx = head * t.head_dim + c;
  const std::byte* p = t.Row(row);
  switch (t.dtype) {
    case DType::kF32: return reinterpret_cast<const float*>(p)[idx];
    case DType::kF16: return HalfToFloat(reinterpret_cast<const uint16_t*>(p)[idx]);
    case DType::kBF16: return BF16ToFloat(reinterpret_cast<const uint16_t*>(p)[idx]);
    default: return std::nan("");
  }
}

// Softmax-weighted sum of V over `keys`; returns the log-sum-exp (-inf for an empty set).
double Attend(const std::vector<double>& scores, const std::vector<int64_t>& keys,
              const TokenView& v, int64_t kvh, std::vector<double>* o) {
  const int64_t d = v.head_dim;
  o->assign(size_t(d), 0.0);
  if (keys.empty()) return -std::numeric_limits<double>::infinity();
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j : keys) mx = std::max(mx, scores[size_t(j)]);
  double sum = 0.0;
  for (int64_t j : keys) {
    const double p = std::exp(scores[size_t(j)] - mx);
    sum += p;
    for (int64_t c = 0; c < d; ++c) (*o)[size_t(c)] += p * Element(v, j, kvh, c);
  }
  for (double& x : *o) x /= sum;
  return mx + std::log(sum);
}

}  // namespace

bool InWindow(int64_t i, int64_t j, const AttentionSpec& spec) {
  if (spec.causal) return j <= i && j > i - spec.window;
  return std::llabs(i - j) < spec.window;
}

Status ReferenceAttention(const TokenView& q, const TokenView& k, const TokenView& v,
                          std::span<const int64_t> globals, const AttentionSpec& spec,
                          float* out, float* lse) {
  std::vector<int64_t> rows(static_cast<size_t>(std::max<int64_t>(0, q.rows)));
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = int64_t(i);
  return ReferenceAttentionRows(q, k, v, globals, spec, rows, out, lse);
}

Status ReferenceAttentionRows(const TokenView& q, const TokenView& k, const TokenView& v,
                              std::span<const int64_t> globals, const AttentionSpec& spec,
                              std::span<const int64_t> rows, float* out, float* lse) {
  RETURN_IF_ERROR(ValidateAttentionInputs(q, k, v, globals, spec));
  for (int64_t r : rows) {
    if (r < 0 || r >= q.rows) return InvalidArgument("reference row {} outside [0, {})", r, q.rows);
  }
  const int64_t n = q.rows, H = q.heads, d = q.head_dim, group = q.heads / k.heads;
  const double scale = spec.ResolvedScale(d);
  std::vector<char> is_global(size_t(n), 0);
  for (int64_t g : globals) is_global[size_t(g)] = 1;
  std::vector<double> scores(static_cast<size_t>(n));
  std::vector<double> o_win, o_glob, o_union;
  std::vector<int64_t> win_keys, glob_keys, union_keys;
  for (size_t ri = 0; ri < rows.size(); ++ri) {
    const int64_t i = rows[ri];
    win_keys.clear();
    glob_keys.clear();
    union_keys.clear();
    for (int64_t j = 0; j < n; ++j) {
      const bool visible = !spec.causal || j <= i;  // the causal constraint on everything
      const bool w = InWindow(i, j, spec);
      const bool gkey = visible && (is_global[size_t(j)] || is_global[size_t(i)]);
      if (w) win_keys.push_back(j);
      if (gkey) glob_keys.push_back(j);
      if (w || gkey) union_keys.push_back(j);
    }
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / group;
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t c = 0; c < d; ++c) s += Element(q, i, h, c) * Element(k, j, kvh, c);
        scores[size_t(j)] = s * scale;
      }
      const double l_union = Attend(scores, union_keys, v, kvh, &o_union);
      float* o = out + (int64_t(ri) * H + h) * d;
      if (spec.fusion == Fusion::kUnion) {
        for (int64_t c = 0; c < d; ++c) o[c] = float(o_union[size_t(c)]);
      } else {
        Attend(scores, win_keys, v, kvh, &o_win);
        const double l_glob = Attend(scores, glob_keys, v, kvh, &o_glob);
        const bool has_glob = l_glob > -std::numeric_limits<double>::infinity();
        const double a = spec.alpha;
        for (int64_t c = 0; c < d; ++c) {
          o[c] = float(has_glob ? a * o_win[size_t(c)] + (1.0 - a) * o_glob[size_t(c)]
                                : o_win[size_t(c)]);
        }
      }
      if (lse) lse[int64_t(ri) * H + h] = float(l_union);
    }
  }
  return Status::Ok();
}

Status ReferenceAttentionBackward(const TokenView& q, const TokenView& k, const TokenView& v,
                                  std::span<const int64_t> globals, const AttentionSpec& spec,
                                  const float* dout, float* dq, float* dk, float* dv,
                                  const float* entropy_coef) {
  RETURN_IF_ERROR(ValidateAttentionInputs(q, k, v, globals, spec));
  if (!dout || !dq || !dk || !dv) {
    return InvalidArgument("ReferenceAttentionBackward: dout, dq, dk and dv are required");
  }
  const int64_t n = q.rows, H = q.heads, Hkv = k.heads, d = q.head_dim, group = H / Hkv;
  const double scale = spec.ResolvedScale(d);
  std::vector<char> is_global(size_t(n), 0);
  for (int64_t g : globals) is_global[size_t(g)] = 1;
  std::vector<double> gq(size_t(n * H * d), 0.0), gk(size_t(n * Hkv * d), 0.0),
      gv(size_t(n * Hkv * d), 0.0);
  std::vector<double> scores(static_cast<size_t>(n)), go(static_cast<size_t>(d));
  std::vector<int64_t> win_keys, glob_keys, union_keys, all_keys;

  // One key set with output-gradient dO_set = coef * dO: adds its gradients.
  auto set_backward = [&](int64_t i, int64_t h, const std::vector<int64_t>& keys, double coef) {
    if (keys.empty() || coef == 0.0) return;
    const int64_t kvh = h / group;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j : keys) mx = std::max(mx, scores[size_t(j)]);
    double sum = 0.0;
    for (int64_t j : keys) sum += std::exp(scores[size_t(j)] - mx);
    const double lse = mx + std::log(sum);
    std::vector<double> p(keys.size()), dp(keys.size());
    double dsum = 0.0;  // D = dO_set . O_set = sum_j P_j (dO_set . V_j)
    for (size_t t = 0; t < keys.size(); ++t) {
      p[t] = std::exp(scores[size_t(keys[t])] - lse);
      double x = 0.0;
      for (int64_t c = 0; c < d; ++c) x += coef * go[size_t(c)] * Element(v, keys[t], kvh, c);
      dp[t] = x;
      dsum += p[t] * x;
    }
    for (size_t t = 0; t < keys.size(); ++t) {
      const int64_t j = keys[t];
      const double ds = p[t] * (dp[t] - dsum);
      for (int64_t c = 0; c < d; ++c) {
        gq[size_t((i * H + h) * d + c)] += scale * ds * Element(k, j, kvh, c);
        gk[size_t((j * Hkv + kvh) * d + c)] += scale * ds * Element(q, i, h, c);
        gv[size_t((j * Hkv + kvh) * d + c)] += p[t] * coef * go[size_t(c)];
      }
    }
  };
  // coef * Entropy of P over `keys`: dS_j = -coef P_j (s_j - L + E).
  auto entropy_backward = [&](int64_t i, int64_t h, const std::vector<int64_t>& keys,
                              double coef) {
    const int64_t kvh = h / group;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j : keys) mx = std::max(mx, scores[size_t(j)]);
    double sum = 0.0;
    for (int64_t j : keys) sum += std::exp(scores[size_t(j)] - mx);
    const double lse = mx + std::log(sum);
    double ent = 0.0;
    for (int64_t j : keys) {
      const double p = std::exp(scores[size_t(j)] - lse);
      ent -= p * (scores[size_t(j)] - lse);
    }
    for (int64_t j : keys) {
      const double p = std::exp(scores[size_t(j)] - lse);
      const double ds = -coef * p * (scores[size_t(j)] - lse + ent);
      for (int64_t c = 0; c < d; ++c) {
        gq[size_t((i * H + h) * d + c)] += scale * ds * Element(k, j, kvh, c);
        gk[size_t((j * Hkv + kvh) * d + c)] += scale * ds * Element(q, i, h, c);
      }
    }
  };

  for (int64_t i = 0; i < n; ++i) {
    win_keys.clear();
    glob_keys.clear();
    union_keys.clear();
    all_keys.clear();
    for (int64_t j = 0; j < n; ++j) {
      const bool visible = !spec.causal || j <= i;
      const bool w = InWindow(i, j, spec);
      const bool gkey = visible && (is_global[size_t(j)] || is_global[size_t(i)]);
      if (w) win_keys.push_back(j);
      if (gkey) glob_keys.push_back(j);
      if (w || gkey) union_keys.push_back(j);
      if (visible) all_keys.push_back(j);
    }
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / group;
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t c = 0; c < d; ++c) s += Element(q, i, h, c) * Element(k, j, kvh, c);
        scores[size_t(j)] = s * scale;
      }
      for (int64_t c = 0; c < d; ++c) go[size_t(c)] = dout[(i * H + h) * d + c];
      if (spec.fusion == Fusion::kUnion) {
        set_backward(i, h, union_keys, 1.0);
      } else if (glob_keys.empty()) {
        set_backward(i, h, win_keys, 1.0);
      } else {
        set_backward(i, h, win_keys, spec.alpha);
        set_backward(i, h, glob_keys, 1.0 - double(spec.alpha));
      }
      if (entropy_coef && entropy_coef[i * H + h] != 0.0f) {
        entropy_backward(i, h, all_keys, entropy_coef[i * H + h]);
      }
    }
  }
  for (size_t e = 0; e < gq.size(); ++e) dq[e] += float(gq[e]);
  for (size_t e = 0; e < gk.size(); ++e) {
    dk[e] += float(gk[e]);
    dv[e] += float(gv[e]);
  }
  return Status::Ok();
}

}  // namespace longctx::attention
