// The plain dense-masked reference of DESIGN.md §1, in float64: for every query it builds the
// allowed key set from the rules, one by one, and takes softmaxes over it. O(n^2) time; used
// by tests and benchmarks only, never by the engine.
#pragma once

#include <span>

#include "longctx/attention/spec.h"
#include "longctx/core/status.h"

namespace longctx::attention {

// Is key j visible to query i through the window? (causal: i-W < j <= i; else |i-j| < W)
bool InWindow(int64_t i, int64_t j, const AttentionSpec& spec);

// Same contract as HybridAttention (hybrid_attention.h); out [n,H,d], lse [n,H] (may be null).
Status ReferenceAttention(const TokenView& q, const TokenView& k, const TokenView& v,
                          std::span<const int64_t> globals, const AttentionSpec& spec,
                          float* out, float* lse);

// The same for the query rows `rows` only (any order): out [rows.size(), H, d],
// lse [rows.size(), H] (may be null). Lets a large run be spot-checked in O(rows * n).
Status ReferenceAttentionRows(const TokenView& q, const TokenView& k, const TokenView& v,
                              std::span<const int64_t> globals, const AttentionSpec& spec,
                              std::span<const int64_t> rows, float* out, float* lse);

// Float64 backward of ReferenceAttention, written plainly from the math (attention_backward.h):
// per row and head, each key set's P, O and D = dO_set.O_set; dS_j = P_j (dO_set.V_j - D);
// dq += scale sum dS K, dk += scale dS q, dv += P dO_set. Union: one set with dO; weighted:A:
// window set with A*dO (dO when the row sees no global key) and global set with (1-A)*dO.
// entropy_coef [n,H] (optional): adds the gradient of sum coef[i,h] * Entropy(P over all visible
// keys of row i) for rows with a nonzero coefficient. Accumulates (+=) into dq [n,H,d], dk/dv
// [n,Hkv,d]. O(n^2) time; tests only.
Status ReferenceAttentionBackward(const TokenView& q, const TokenView& k, const TokenView& v,
                                  std::span<const int64_t> globals, const AttentionSpec& spec,
                                  const float* dout, float* dq, float* dk, float* dv,
                                  const float* entropy_coef = nullptr);

}  // namespace longctx::attention
