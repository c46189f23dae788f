// The token-local pieces of a Llama layer, shared by the prefill over a shard (forward.cpp) and
// decoding one token (decode.cpp): RMSNorm, the HF Linear (y = x W^T) through OpenBLAS, and the
// SwiGLU gate. Private to longctx_worker.
#pragma once

#include <cblas.h>

#include <cmath>
#include <cstdint>

namespace longctx::worker::internal {

// y[rows, out] = x[rows, in] * W^T, W [out, in] row-major (the HF Linear layout).
inline void Linear(const float* x, int64_t rows, int64_t in, const float* w, int64_t out,
                   float* y) {
  if (rows == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(out), int(in), 1.0f, x,
              int(in), w, int(in), 0.0f, y, int(out));
}

// y[out] = W[out, in] x[in]: Linear for one token (a GEMV).
inline void MatVec(const float* w, int64_t out, int64_t in, const float* x, float* y) {
  cblas_sgemv(CblasRowMajor, CblasNoTrans, int(out), int(in), 1.0f, w, int(in), x, 1, 0.0f, y, 1);
}

// y = x * rsqrt(mean(x^2) + eps) * w, per row (fp32 like HF's LlamaRMSNorm).
inline void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* w, double eps,
                    float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    float ss = 0.0f;
    for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / float(dim) + float(eps));
    for (int64_t i = 0; i < dim; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

// y[r, :] += bias for every row of y [rows, cols]; a null bias (no biases) does nothing.
inline void AddBias(float* y, int64_t rows, int64_t cols, const float* bias) {
  if (bias == nullptr) return;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < cols; ++i) y[r * cols + i] += bias[i];
  }
}

// Qwen3's q_norm/k_norm: RMSNorm over each head's hd values of x [rows, heads, hd], in place,
// with one weight [hd] shared by the heads; a null weight (no q/k norm) does nothing.
inline void HeadRmsNorm(float* x, int64_t rows, int64_t heads, int64_t hd, const float* w,
                        double eps) {
  if (w == nullptr) return;
  RmsNorm(x, rows * heads, hd, w, eps, x);  // RmsNorm reads each element before writing it
}

// gate[i] = SiLU(gate[i]) * up[i] for n elements.
inline void SwiGlu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

}  // namespace longctx::worker::internal
