// Internal: argument checks and small helpers shared by the forward (hybrid_attention.cpp)
// and the backward (attention_backward.cpp). Messages name what is wrong.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <string_view>
#include <vector>

#include "longctx/attention/hybrid_attention.h"

namespace longctx::attention::detail {

constexpr int64_t kMaxHeadDim = 512;

inline bool FloatDType(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

inline Status CheckView(const TokenView& t, std::string_view name) {
  if (!FloatDType(t.dtype)) {
    return InvalidArgument("{}: dtype {} is not supported (expected f32, f16 or bf16)", name,
                           DTypeName(t.dtype));
  }
  if (t.rows < 0 || t.heads < 1 || t.head_dim < 1) {
    return InvalidArgument("{}: bad shape [{}, {}, {}]", name, t.rows, t.heads, t.head_dim);
  }
  if (t.row_stride < t.heads * t.head_dim) {
    return InvalidArgument("{}: row stride {} is smaller than heads*head_dim = {}", name,
                           t.row_stride, t.heads * t.head_dim);
  }
  if (t.rows > 0 && t.data == nullptr) return InvalidArgument("{}: no data", name);
  return Status::Ok();
}

inline Status CheckSpec(const AttentionSpec& spec) {
  if (spec.window < 1) return InvalidArgument("window must be >= 1, got {}", spec.window);
  if (!(spec.alpha >= 0.0f && spec.alpha <= 1.0f)) {
    return InvalidArgument("weighted fusion A must be in [0, 1], got {}", spec.alpha);
  }
  if (!std::isfinite(spec.scale)) return InvalidArgument("scale must be finite");
  return Status::Ok();
}

inline Status CheckHeads(const TokenView& q, const TokenView& k, const TokenView& v) {
  RETURN_IF_ERROR(CheckView(q, "q"));
  RETURN_IF_ERROR(CheckView(k, "k"));
  RETURN_IF_ERROR(CheckView(v, "v"));
  if (k.dtype != v.dtype) {
    return InvalidArgument("k and v dtypes differ ({} vs {})", DTypeName(k.dtype),
                           DTypeName(v.dtype));
  }
  if (k.heads != v.heads || k.rows != v.rows) {
    return InvalidArgument("k [{}, {}, {}] and v [{}, {}, {}] shapes differ", k.rows, k.heads,
                           k.head_dim, v.rows, v.heads, v.head_dim);
  }
  if (q.head_dim != k.head_dim || q.head_dim != v.head_dim) {
    return InvalidArgument("head_dim differs: q {}, k {}, v {}", q.head_dim, k.head_dim,
                           v.head_dim);
  }
  if (q.head_dim > kMaxHeadDim) {
    return InvalidArgument("head_dim {} is above the supported maximum {}", q.head_dim,
                           kMaxHeadDim);
  }
  if (q.heads % k.heads != 0) {
    return InvalidArgument("query heads {} is not a multiple of kv heads {}", q.heads, k.heads);
  }
  return Status::Ok();
}

inline Status CheckPositions(std::span<const int64_t> pos, int64_t n, std::string_view name) {
  for (size_t i = 0; i < pos.size(); ++i) {
    if (pos[i] < 0 || pos[i] >= n) {
      return InvalidArgument("{}[{}] = {} is outside [0, {})", name, i, pos[i], n);
    }
    if (i > 0 && pos[i] <= pos[i - 1]) {
      return InvalidArgument("{} must be sorted and unique: [{}] = {} follows {}", name, i,
                             pos[i], pos[i - 1]);
    }
  }
  return Status::Ok();
}

// The kernel variant to run: `isa` itself, or for kAuto LONGCTX_ISA or the best one; a bad
// LONGCTX_ISA is an error (IsaFromEnvironment).
inline Result<Isa> Resolve(Isa isa) {
  if (isa != Isa::kAuto) return isa;
  Result<Isa> env = IsaFromEnvironment();
  if (!env.ok()) return env.status();
  return *env != Isa::kAuto ? *env : BestIsa();
}

// Copies rows `rows` of view t into a dense buffer; returns a view of it.
inline TokenView GatherRows(const TokenView& t, std::span<const int64_t> rows,
                     std::vector<std::byte>* buf) {
  const size_t row_bytes = size_t(t.heads * t.head_dim) * DTypeSize(t.dtype);
  buf->resize(rows.size() * row_bytes);
  for (size_t r = 0; r < rows.size(); ++r) {
    std::memcpy(buf->data() + r * row_bytes, t.Row(rows[r]), row_bytes);
  }
  return TokenView::Dense(buf->data(), t.dtype, int64_t(rows.size()), t.heads, t.head_dim);
}


}  // namespace longctx::attention::detail
