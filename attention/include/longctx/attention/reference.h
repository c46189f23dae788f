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

}  // namespace longctx::attention
