// The log-sum-exp merge of partial attention results over disjoint key sets (DESIGN.md §1):
//   L = logaddexp(La, Lb),  O = exp(La-L)*Oa + exp(Lb-L)*Ob.
// An empty key set has L = -inf and contributes nothing; two empty sets merge to (O=0, -inf).
// Stable for extreme logits: only exp of non-positive numbers is ever taken.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace longctx::attention {

// Natural-log logaddexp that handles -inf on either side.
inline float LogAddExp(float a, float b) {
  if (a == -std::numeric_limits<float>::infinity()) return b;
  if (b == -std::numeric_limits<float>::infinity()) return a;
  const float hi = a > b ? a : b;
  const float lo = a > b ? b : a;
  return hi + std::log1p(std::exp(lo - hi));
}

// Merges (ob, lb) into (oa, la) in place: `dim` output elements of one (query, head).
inline void MergeState(float* oa, float* la, const float* ob, float lb, int64_t dim) {
  const float l = LogAddExp(*la, lb);
  if (l == -std::numeric_limits<float>::infinity()) {  // both empty
    for (int64_t c = 0; c < dim; ++c) oa[c] = 0.0f;
    *la = l;
    return;
  }
  const float wa = *la == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(*la - l);
  const float wb = lb == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(lb - l);
  for (int64_t c = 0; c < dim; ++c) oa[c] = wa * oa[c] + wb * ob[c];
  *la = l;
}

// Merges `rows` states laid out as O [rows, dim] and L [rows].
inline void MergeStates(float* oa, float* la, const float* ob, const float* lb, int64_t rows,
                        int64_t dim) {
  for (int64_t r = 0; r < rows; ++r) MergeState(oa + r * dim, la + r, ob + r * dim, lb[r], dim);
}

}  // namespace longctx::attention
