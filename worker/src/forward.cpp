#include "longctx/worker/forward.h"

#include "layers.h"
#include "longctx/core/trace.h"
#include "longctx/model/llama_names.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

namespace longctx::worker {
namespace {

using Clock = std::chrono::steady_clock;

// Rows per chunk of the token-local work (norms, projections, MLP): the normalised input,
// the projection outputs and the gate/up activations ([rows, intermediate] each, the largest
// buffers of a layer) exist for one chunk at a time, kMlpRows x (2 hidden + 2 intermediate)
// floats, instead of for the whole shard. Only the residual x and what the attention reads
// whole (q, k, v, o, lse) are shard-sized.
constexpr int64_t kMlpRows = 4096;
double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

using internal::Linear;
using internal::RmsNorm;

}  // namespace

Result<Fp32Weights> ToFp32Weights(const model::Model& m) {
  const model::ModelConfig& c = m.config;
  RETURN_IF_ERROR(model::CheckWeights(c, m.weights));
  Fp32Weights out;
  // Every tensor once, in a fixed order; `storage` never reallocates the inner vectors.
  auto load = [&](std::string_view name) -> Result<const float*> {
    ASSIGN_OR_RETURN(model::TensorRef t, m.weights.Get(name));
    std::vector<float> f(static_cast<size_t>(t.numel()));
    RETURN_IF_ERROR(model::CopyToFloat32(t, f));
    out.storage.push_back(std::move(f));
    return out.storage.back().data();
  };
  out.storage.reserve(size_t(c.num_hidden_layers) * model::kLayerTensorCount + 3);
  ASSIGN_OR_RETURN(out.view.embed, load(model::kEmbedTokensName));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights L;
    using LT = model::LayerTensor;
    ASSIGN_OR_RETURN(L.wq, load(model::LayerTensorName(l, LT::kQProj)));
    ASSIGN_OR_RETURN(L.wk, load(model::LayerTensorName(l, LT::kKProj)));
    ASSIGN_OR_RETURN(L.wv, load(model::LayerTensorName(l, LT::kVProj)));
    ASSIGN_OR_RETURN(L.wo, load(model::LayerTensorName(l, LT::kOProj)));
    ASSIGN_OR_RETURN(L.w_gate, load(model::LayerTensorName(l, LT::kGateProj)));
    ASSIGN_OR_RETURN(L.w_up, load(model::LayerTensorName(l, LT::kUpProj)));
    ASSIGN_OR_RETURN(L.w_down, load(model::LayerTensorName(l, LT::kDownProj)));
    ASSIGN_OR_RETURN(L.attn_norm, load(model::LayerTensorName(l, LT::kInputNorm)));
    ASSIGN_OR_RETURN(L.mlp_norm, load(model::LayerTensorName(l, LT::kPostAttentionNorm)));
    if (c.qkv_bias) {
      ASSIGN_OR_RETURN(L.bq, load(model::LayerTensorName(l, LT::kQBias)));
      ASSIGN_OR_RETURN(L.bk, load(model::LayerTensorName(l, LT::kKBias)));
      ASSIGN_OR_RETURN(L.bv, load(model::LayerTensorName(l, LT::kVBias)));
    }
    if (c.qk_norm) {
      ASSIGN_OR_RETURN(L.q_norm, load(model::LayerTensorName(l, LT::kQNorm)));
      ASSIGN_OR_RETURN(L.k_norm, load(model::LayerTensorName(l, LT::kKNorm)));
    }
    out.view.layers.push_back(L);
  }
  ASSIGN_OR_RETURN(out.view.final_norm, load(model::kFinalNormName));
  ASSIGN_OR_RETURN(out.view.lm_head, load(model::OutputEmbeddingName(c)));
  return out;
}

void LmHeadLogits(const model::ModelConfig& config, const Weights& weights, const float* hidden,
                  int64_t rows, float* logits) {
  internal::Linear(hidden, rows, config.hidden_size, weights.lm_head, config.vocab_size, logits);
}

int32_t GreedyToken(const model::ModelConfig& config, const Weights& weights,
                    const float* hidden) {
  std::vector<float> logits(static_cast<size_t>(config.vocab_size));
  internal::MatVec(weights.lm_head, config.vocab_size, config.hidden_size, hidden, logits.data());
  return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

void SetGemmThreads(int threads) { openblas_set_num_threads(std::max(1, threads)); }

attention::SelectionConfig SelectionFor(const model::ModelConfig& c) {
  attention::SelectionConfig sel;
  sel.global_ratio = c.hybrid.global_ratio;
  sel.global_max = c.hybrid.global_max.value_or(-1);
  sel.sinks = c.hybrid.sinks;
  return sel;
}

attention::AttentionSpec LayerSpec(const model::ModelConfig& config, int64_t layer) {
  attention::AttentionSpec spec;
  spec.window = config.Window(layer);
  spec.causal = true;
  spec.fusion = config.hybrid.fusion_weighted ? attention::Fusion::kWeighted : attention::Fusion::kUnion;
  spec.alpha = float(config.hybrid.fusion_alpha);
  return spec;
}

RopeTable MakeRopeTable(int64_t rows, int64_t pos0, const model::RopeFrequencies& f) {
  RopeTable t;
  t.half = int64_t(f.inv_freq.size());
  t.cos.resize(size_t(rows * t.half));
  t.sin.resize(t.cos.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < t.half; ++i) {
      const double a = double(pos0 + r) * f.inv_freq[size_t(i)];
      t.cos[size_t(r * t.half + i)] = float(std::cos(a) * f.attention_scaling);
      t.sin[size_t(r * t.half + i)] = float(std::sin(a) * f.attention_scaling);
    }
  }
  return t;
}

RopeTable MakeRopeTable(int64_t rows, int64_t hd, int64_t pos0, double theta) {
  model::RopeFrequencies f;
  f.inv_freq.resize(size_t(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i) {
    f.inv_freq[size_t(i)] = std::pow(theta, -2.0 * double(i) / double(hd));
  }
  return MakeRopeTable(rows, pos0, f);
}

void ApplyRope(float* x, int64_t rows, int64_t heads, int64_t hd, const RopeTable& t) {
  const int64_t half = hd / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* cs = t.cos.data() + r * half;
    const float* sn = t.sin.data() + r * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (r * heads + h) * hd;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cs[i] - b * sn[i];
        v[i + half] = b * cs[i] + a * sn[i];
      }
    }
  }
}

void ApplyRopeBackward(float* x, int64_t rows, int64_t heads, int64_t hd, const RopeTable& t) {
  const int64_t half = hd / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* cs = t.cos.data() + r * half;
    const float* sn = t.sin.data() + r * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (r * heads + h) * hd;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cs[i] + b * sn[i];
        v[i + half] = b * cs[i] - a * sn[i];
      }
    }
  }
}

float LognScale(const model::HybridConfig& hybrid, int64_t pos) {
  if (hybrid.logn_base == 0) return 1.0f;
  return float(std::max(1.0, std::log(double(pos + 1)) / std::log(double(hybrid.logn_base))));
}

void ScaleGlobalQueries(const model::HybridConfig& hybrid, std::span<const int64_t> globals,
                        int64_t pos0, int64_t rows, int64_t width, float* q) {
  if (hybrid.logn_base == 0) return;
  for (int64_t g : globals) {
    if (g < pos0 || g >= pos0 + rows) continue;
    const float f = LognScale(hybrid, g);
    float* row = q + (g - pos0) * width;
    for (int64_t e = 0; e < width; ++e) row[e] *= f;
  }
}

Status ForwardShard(comm::Communicator& comm, const model::ModelConfig& c, const Weights& w,
                    const std::vector<int64_t>& bounds, std::span<const int32_t> ids,
                    std::span<const int64_t> globals, const attention::ExecOptions& exec,
                    std::vector<float>* hidden_out, ForwardStats* stats_out,
                    const LayerProgress& progress,
                    cache::TieredKvCache* kv_cache) {
  const int me = comm.rank();
  if (int64_t(bounds.size()) != comm.size() + 1) {
    return InvalidArgument("forward: {} shard bounds for {} ranks", bounds.size(), comm.size());
  }
  if (int64_t(w.layers.size()) != c.num_hidden_layers) {
    return InvalidArgument("forward: {} layers of weights for a {}-layer model", w.layers.size(),
                           c.num_hidden_layers);
  }
  const int64_t s = bounds[size_t(me)], rows = bounds[size_t(me) + 1] - s, n = bounds.back();
  if (int64_t(ids.size()) != rows) {
    return InvalidArgument("forward: rank {} owns {} rows but got {} token ids", me, rows, ids.size());
  }
  const int64_t D = c.hidden_size, H = c.num_attention_heads, Hkv = c.num_key_value_heads,
                hd = c.head_dim, I = c.intermediate_size;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= c.vocab_size) {
      return OutOfRange("token id {} at position {} is outside the vocabulary [0, {})", ids[i],
                        s + int64_t(i), c.vocab_size);
    }
  }
  ForwardStats st;
  if (kv_cache && kv_cache->rows(0) != 0) {
    return InvalidArgument("forward: the KV cache given already holds {} rows", kv_cache->rows(0));
  }
  auto t0 = Clock::now();
  trace::TraceSpan embed_span("embed", "dense");
  const int64_t chunk = std::min(rows, kMlpRows);
  std::vector<float> x(size_t(rows * D)), q(size_t(rows * H * hd)), k(size_t(rows * Hkv * hd)),
      v(k.size()), o(q.size()), lse(size_t(rows * H)), h(size_t(chunk * D)),
      g(size_t(chunk * I)), u(g.size()), tmp(size_t(chunk * D));
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(x.data() + r * D, w.embed + int64_t(ids[size_t(r)]) * D, sizeof(float) * D);
  }
  // Every document token uses the document's length n (dynamic NTK; model/rope.h).
  const RopeTable rope =
      MakeRopeTable(rows, s, model::ComputeRopeFrequencies(c, model::RopeSequenceLength(s, n)));
  DistributedWorkspace workspace;  // reused by every layer
  st.dense_seconds += Since(t0);
  embed_span.End();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    t0 = Clock::now();
    trace::TraceSpan qkv_span("qkv_projection", "dense", "layer", l);
    for (int64_t r0 = 0; r0 < rows; r0 += kMlpRows) {  // token-local: h is one chunk
      const int64_t m = std::min(kMlpRows, rows - r0);
      RmsNorm(x.data() + r0 * D, m, D, L.attn_norm, c.rms_norm_eps, h.data());
      Linear(h.data(), m, D, L.wq, H * hd, q.data() + r0 * H * hd);
      Linear(h.data(), m, D, L.wk, Hkv * hd, k.data() + r0 * Hkv * hd);
      Linear(h.data(), m, D, L.wv, Hkv * hd, v.data() + r0 * Hkv * hd);
    }
    internal::AddBias(q.data(), rows, H * hd, L.bq);
    internal::AddBias(k.data(), rows, Hkv * hd, L.bk);
    internal::AddBias(v.data(), rows, Hkv * hd, L.bv);
    internal::HeadRmsNorm(q.data(), rows, H, hd, L.q_norm, c.rms_norm_eps);
    internal::HeadRmsNorm(k.data(), rows, Hkv, hd, L.k_norm, c.rms_norm_eps);
    ApplyRope(q.data(), rows, H, hd, rope);
    ApplyRope(k.data(), rows, Hkv, hd, rope);
    ScaleGlobalQueries(c.hybrid, globals, s, rows, H * hd, q.data());
    st.dense_seconds += Since(t0);
    qkv_span.End();

    t0 = Clock::now();
    trace::TraceSpan attention_span("attention", "attention", "layer", l);
    const attention::AttentionSpec spec = LayerSpec(c, l);
    attention::ShardPlan plan;
    plan.n = n;
    plan.window = spec.window;
    plan.causal = spec.causal;
    plan.bounds = bounds;
    plan.cost.assign(size_t(comm.size()), 0);
    ShardTensors shard{attention::TokenView::Dense(q.data(), DType::kF32, rows, H, hd),
                       attention::TokenView::Dense(k.data(), DType::kF32, rows, Hkv, hd),
                       attention::TokenView::Dense(v.data(), DType::kF32, rows, Hkv, hd)};
    DistributedStats ds;
    DistributedOptions dopt;
    dopt.workspace = &workspace;
    RETURN_IF_ERROR(DistributedAttention(comm, plan, globals, spec, shard, o.data(), lse.data(),
                                         exec, &ds, dopt)
                        .WithContext(fmt::format("layer {}", l)));
    st.attention_seconds += Since(t0);
    attention_span.End();
    st.last_layer = ds;
    if (kv_cache) {
      trace::TraceSpan span("kv_append", "kv", "layer", l);
      // The layer's K/V into the cache; blocks outside the persistent set leave for the host
      // and remote tiers in the background while the next layer computes.
      const Status appended = kv_cache->Append(int32_t(l), k.data(), v.data(), rows)
                                  .WithContext(fmt::format("KV cache, layer {}", l));
      // Every rank learns of a failed append (a budget one rank cannot meet) before the next
      // layer's exchanges: a rank leaving alone would leave the others waiting on messages it
      // never sends, or reading the next layer's as this one's.
      RETURN_IF_ERROR(comm::AgreeOnStatus(comm, appended));
    }
    for (const PhaseTraffic* p : {&ds.halo, &ds.global_kv, &ds.global_q, &ds.partials}) {
      st.comm_bytes_sent += p->sent;
      st.comm_bytes_received += p->received;
    }

    t0 = Clock::now();
    trace::TraceSpan mlp_span("out_proj_mlp", "dense", "layer", l);
    for (int64_t r0 = 0; r0 < rows; r0 += kMlpRows) {  // token-local: row chunks
      const int64_t m = std::min(kMlpRows, rows - r0);
      float* xc = x.data() + r0 * D;
      Linear(o.data() + r0 * H * hd, m, H * hd, L.wo, D, tmp.data());
      for (int64_t i = 0; i < m * D; ++i) xc[i] += tmp[size_t(i)];
      RmsNorm(xc, m, D, L.mlp_norm, c.rms_norm_eps, h.data());
      Linear(h.data(), m, D, L.w_gate, I, g.data());
      Linear(h.data(), m, D, L.w_up, I, u.data());
      internal::SwiGlu(g.data(), u.data(), m * I);
      Linear(g.data(), m, I, L.w_down, D, tmp.data());
      for (int64_t i = 0; i < m * D; ++i) xc[i] += tmp[size_t(i)];
    }
    st.dense_seconds += Since(t0);
    mlp_span.End();
    if (progress) progress(l + 1, c.num_hidden_layers);
  }
  t0 = Clock::now();
  RmsNorm(x.data(), rows, D, w.final_norm, c.rms_norm_eps, x.data());  // row-wise: in place
  *hidden_out = std::move(x);
  st.dense_seconds += Since(t0);
  if (stats_out) *stats_out = st;
  return Status::Ok();
}

}  // namespace longctx::worker
