// What an attention call computes (DESIGN.md §1): window, direction, fusion and scale, and
// the views of the token-major Q/K/V arrays the kernels read. Plain data; no I/O, no MPI.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "longctx/core/dtype.h"
#include "longctx/core/status.h"

namespace longctx::attention {

enum class Fusion : uint8_t {
  kUnion,     // one softmax over the union of allowed keys (exact; dense under the mask)
  kWeighted,  // A*Attn(window keys) + (1-A)*Attn(global keys)
};

struct AttentionSpec {
  int64_t window = 64;  // W in tokens, >= 1. Causal: i-W < j <= i. Bidirectional: |i-j| < W.
  bool causal = true;
  Fusion fusion = Fusion::kUnion;
  float alpha = 0.7f;   // A of weighted:A, in [0, 1]
  float scale = 0.0f;   // softmax scale; 0 means 1/sqrt(head_dim)

  float ResolvedScale(int64_t head_dim) const;
  std::string ToString() const;  // "window=64 causal fusion=union scale=0.125"
};

// "union" or "weighted:A" with 0 <= A <= 1.
Status ParseFusion(std::string_view text, AttentionSpec* spec);

// A token-major array: `rows` tokens, each `heads` x `head_dim` elements. Element (t, h, c)
// lives at data + (t*row_stride + h*head_dim + c) * DTypeSize(dtype). row_stride is in
// elements and >= heads*head_dim. dtype is f32, f16 or bf16.
struct TokenView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
  int64_t row_stride = 0;

  static TokenView Dense(const void* data, DType dtype, int64_t rows, int64_t heads,
                         int64_t head_dim) {
    return TokenView{data, dtype, rows, heads, head_dim, heads * head_dim};
  }
  const std::byte* Row(int64_t t) const {
    return static_cast<const std::byte*>(data) + t * row_stride * int64_t(DTypeSize(dtype));
  }
};

}  // namespace longctx::attention
