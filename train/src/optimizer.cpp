#include "longctx/train/optimizer.h"

#include <cmath>

#include "longctx/model/llama_names.h"

namespace longctx::train {

double GlobalNorm(const float* g, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += double(g[i]) * double(g[i]);
  return std::sqrt(s);
}

double AdamW::Step(worker::ParamBlock& params, float* grads, double lr, const AdamWConfig& cfg) {
  const size_t n = params.size();
  const double norm = GlobalNorm(grads, n);
  if (cfg.clip_norm > 0 && norm > cfg.clip_norm) {
    const float scale = float(cfg.clip_norm / norm);
    for (size_t i = 0; i < n; ++i) grads[i] *= scale;
  }
  ++t_;
  const double bc1 = 1.0 - std::pow(cfg.beta1, double(t_));
  const double bc2 = 1.0 - std::pow(cfg.beta2, double(t_));
  const float b1 = float(cfg.beta1), b2 = float(cfg.beta2);
  float* w = params.data();
  for (const worker::ParamTensor& p : params.tensors()) {
    const bool decay =
        p.decay || (cfg.decay_embeddings && p.name == model::kEmbedTokensName);
    const float wd = decay ? float(lr * cfg.weight_decay) : 0.0f;
    for (size_t i = p.offset; i < p.offset + p.numel; ++i) {
      const float g = grads[i];
      m_[i] = b1 * m_[i] + (1.0f - b1) * g;
      v_[i] = b2 * v_[i] + (1.0f - b2) * g * g;
      const double mhat = double(m_[i]) / bc1, vhat = double(v_[i]) / bc2;
      w[i] -= float(lr * mhat / (std::sqrt(vhat) + cfg.eps)) + wd * w[i];
    }
  }
  return norm;
}

}  // namespace longctx::train
