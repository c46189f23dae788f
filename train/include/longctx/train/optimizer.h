// AdamW over one contiguous parameter array (DESIGN.md §6): decoupled weight decay, bias
// correction, fp32 master weights and moments, and global-norm gradient clipping before the
// update. Which tensors decay is the ParamBlock's per-tensor flag (2-D projections; not norms,
// biases or the embedding unless decay_embeddings).
#pragma once

#include <cstdint>
#include <vector>

#include "longctx/worker/param_block.h"

namespace longctx::train {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double clip_norm = 1.0;          // global L2 norm of the gradient; <= 0: no clipping
  bool decay_embeddings = false;   // also decay model.embed_tokens.weight
};

// sqrt(sum g^2), accumulated in double.
double GlobalNorm(const float* g, size_t n);

class AdamW {
 public:
  AdamW() = default;
  explicit AdamW(size_t params) : m_(params, 0.0f), v_(params, 0.0f) {}

  // Clips `grads` in place to cfg.clip_norm (by the global norm) and applies one update with
  // learning rate lr. Returns the gradient norm before clipping.
  double Step(worker::ParamBlock& params, float* grads, double lr, const AdamWConfig& cfg);

  int64_t steps() const { return t_; }
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  std::vector<float> m_, v_;
  int64_t t_ = 0;
};

}  // namespace longctx::train
