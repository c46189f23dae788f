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

}  // namespace longctx::attention
