// The backward of the token-local pieces of a Llama layer (layers.h), llm.c style: each takes
// the forward's inputs and the output gradient and *accumulates* (+=) into the gradient
// buffers (parameter gradients are zeroed once per step by the caller). Private to
// longctx_worker; checked against a float64 torch autograd reference (tests/python).
#pragma once

#include <cblas.h>

#include <cmath>
#include <cstdint>

namespace longctx::worker::internal {

// For y[rows, out] = x[rows, in] * W^T: dx[rows, in] += dy * W (beta 1, or 0 to overwrite).
inline void LinearBackwardInput(const float* dy, int64_t rows, int64_t out, const float* w,
                                int64_t in, float* dx, float beta = 1.0f) {
  if (rows == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(in), int(out), 1.0f, dy,
              int(out), w, int(in), beta, dx, int(in));
}

// dW[out, in] += dy^T * x.
inline void LinearBackwardWeight(const float* dy, int64_t rows, int64_t out, const float* x,
                                 int64_t in, float* dw) {
  if (rows == 0) return;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(out), int(in), int(rows), 1.0f, dy,
              int(out), x, int(in), 1.0f, dw, int(in));
}

// y = w * x * r, r = 1/sqrt(mean(x^2) + eps), per row of dim:
//   dx += r * (w*dy) - x * r^3 * mean(x * w * dy);  dw += sum_rows dy * x * r.
// Accumulated in double per row (the mean is a sum over dim products).
inline void RmsNormBackward(const float* dy, const float* x, int64_t rows, int64_t dim,
                            const float* w, double eps, float* dx, float* dw) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    const float* dyr = dy + r * dim;
    float* dxr = dx + r * dim;
    float ss = 0.0f;  // the forward's fp32 sum, so r matches layers.h's RmsNorm exactly
    for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
    const double inv = 1.0 / std::sqrt(double(ss) / double(dim) + eps);
    double dot = 0.0;
    for (int64_t i = 0; i < dim; ++i) dot += double(xr[i]) * double(w[i]) * double(dyr[i]);
    const double coef = dot / double(dim) * inv * inv * inv;
    for (int64_t i = 0; i < dim; ++i) {
      dxr[i] += float(inv * double(w[i]) * double(dyr[i]) - double(xr[i]) * coef);
      dw[i] += float(double(dyr[i]) * double(xr[i]) * inv);
    }
  }
}

// h = silu(g) * u: dg = dh * u * s(g) * (1 + g * (1 - s(g))), du = dh * silu(g). Overwrites
// gate/up with dg/du (the forward values are consumed).
inline void SwiGluBackward(const float* dh, float* gate, float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i], u = up[i];
    const float sg = 1.0f / (1.0f + std::exp(-g));
    gate[i] = dh[i] * u * sg * (1.0f + g * (1.0f - sg));
    up[i] = dh[i] * g * sg;
  }
}

}  // namespace longctx::worker::internal
