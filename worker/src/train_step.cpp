#include "longctx/worker/train_step.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "layers.h"
#include "layers_backward.h"
#include "longctx/attention/shard_plan.h"
#include "longctx/worker/distributed_attention.h"

namespace longctx::worker {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Rows of logits [rows, vocab] materialised at a time by the fused LM head + cross-entropy.
constexpr int64_t kLogitRows = 256;

// The activations of one layer over the own rows, recomputed from its input in the backward.
struct LayerActivations {
  std::vector<float> h1;         // [rows, D]    input_layernorm(x)
  std::vector<float> q, k, v;    // [rows, H|Hkv, hd] after RoPE (q, k)
  std::vector<float> o, lse;     // attention out [rows, H, hd], lse [rows, H]
  std::vector<float> x1;         // [rows, D]    x + o Wo^T
  std::vector<float> h2;         // [rows, D]    post_attention_layernorm(x1)
  std::vector<float> gate, up;   // [rows, I]    pre-activation
  std::vector<float> act;        // [rows, I]    silu(gate) * up
};

// What every layer of one step shares.
struct StepContext {
  comm::Communicator& comm;
  const model::ModelConfig& c;
  const Weights& w;
  const std::vector<int64_t>& bounds;
  std::span<const int64_t> globals;
  const attention::ExecOptions& exec;
  const RopeTable& rope;
  KeyHandicap handicap;
  int64_t rows = 0;
  DistributedWorkspace ws;
  TrainStepStats st;
};

attention::ShardPlan PlanFor(const StepContext& ctx, const attention::AttentionSpec& spec) {
  attention::ShardPlan plan;
  plan.n = ctx.bounds.back();
  plan.window = spec.window;
  plan.causal = spec.causal;
  plan.bounds = ctx.bounds;
  plan.cost.assign(ctx.bounds.size() - 1, 0);
  return plan;
}

// Layer l on x [rows, D] -> x_out [rows, D], keeping every activation in `a`.
Status LayerForward(StepContext& ctx, int64_t l, const float* x, float* x_out,
                    LayerActivations* a) {
  const model::ModelConfig& c = ctx.c;
  const LayerWeights& L = ctx.w.layers[size_t(l)];
  const int64_t rows = ctx.rows, D = c.hidden_size, H = c.num_attention_heads,
                Hkv = c.num_key_value_heads, hd = c.head_dim, I = c.intermediate_size;
  auto t0 = Clock::now();
  a->h1.resize(size_t(rows * D));
  a->q.resize(size_t(rows * H * hd));
  a->k.resize(size_t(rows * Hkv * hd));
  a->v.resize(a->k.size());
  a->o.resize(a->q.size());
  a->lse.resize(size_t(rows * H));
  a->x1.resize(size_t(rows * D));
  a->h2.resize(size_t(rows * D));
  a->gate.resize(size_t(rows * I));
  a->up.resize(a->gate.size());
  a->act.resize(a->gate.size());
  internal::RmsNorm(x, rows, D, L.attn_norm, c.rms_norm_eps, a->h1.data());
  internal::Linear(a->h1.data(), rows, D, L.wq, H * hd, a->q.data());
  internal::Linear(a->h1.data(), rows, D, L.wk, Hkv * hd, a->k.data());
  internal::Linear(a->h1.data(), rows, D, L.wv, Hkv * hd, a->v.data());
  ApplyRope(a->q.data(), rows, H, hd, ctx.rope);
  ApplyRope(a->k.data(), rows, Hkv, hd, ctx.rope);
  ScaleGlobalQueries(c.hybrid, ctx.globals, ctx.bounds[size_t(ctx.comm.rank())], rows, H * hd,
                     a->q.data());
  ctx.st.gemm_seconds += Since(t0);

  t0 = Clock::now();
  const attention::AttentionSpec spec = LayerSpec(c, l);
  const attention::ShardPlan plan = PlanFor(ctx, spec);
  ShardTensors shard{attention::TokenView::Dense(a->q.data(), DType::kF32, rows, H, hd),
                     attention::TokenView::Dense(a->k.data(), DType::kF32, rows, Hkv, hd),
                     attention::TokenView::Dense(a->v.data(), DType::kF32, rows, Hkv, hd)};
  DistributedStats ds;
  DistributedOptions dopt;
  dopt.workspace = &ctx.ws;
  dopt.handicap = ctx.handicap;
  RETURN_IF_ERROR(DistributedAttention(ctx.comm, plan, ctx.globals, spec, shard, a->o.data(),
                                       a->lse.data(), ctx.exec, &ds, dopt)
                      .WithContext(fmt::format("layer {}", l)));
  for (const PhaseTraffic* p : {&ds.halo, &ds.global_kv, &ds.global_q, &ds.partials}) {
    ctx.st.bytes_sent += p->sent;
    ctx.st.bytes_received += p->received;
    ctx.st.comm_seconds += p->seconds;
  }
  ctx.st.attention_seconds += Since(t0);

  t0 = Clock::now();
  internal::Linear(a->o.data(), rows, H * hd, L.wo, D, a->x1.data());
  for (int64_t i = 0; i < rows * D; ++i) a->x1[size_t(i)] += x[i];
  internal::RmsNorm(a->x1.data(), rows, D, L.mlp_norm, c.rms_norm_eps, a->h2.data());
  internal::Linear(a->h2.data(), rows, D, L.w_gate, I, a->gate.data());
  internal::Linear(a->h2.data(), rows, D, L.w_up, I, a->up.data());
  std::copy(a->gate.begin(), a->gate.end(), a->act.begin());
  internal::SwiGlu(a->act.data(), a->up.data(), rows * I);
  internal::Linear(a->act.data(), rows, I, L.w_down, D, x_out);
  for (int64_t i = 0; i < rows * D; ++i) x_out[i] += a->x1[size_t(i)];
  ctx.st.gemm_seconds += Since(t0);
  return Status::Ok();
}

// Backward of layer l: dx [rows, D] holds dLoss/d(layer output) on entry and dLoss/d(layer
// input) on return. `a` is LayerForward's activations of the same input (consumed).
// cache_l1_coef: weight / element count of the cache-l1 term (0: off); entropy_weight: the
// entropy term's coefficient per (global query, head). Adds the layer's cache-l1 sum
// (|K| + |V| elements over the own rows) and its entropy sum to *l1_sum / *entropy_sum.
Status LayerBackward(StepContext& ctx, int64_t l, const float* x, LayerActivations* a, float* dx,
                     const LayerGradView& G, double cache_l1_coef, float entropy_weight,
                     double* l1_sum, double* entropy_sum) {
  const model::ModelConfig& c = ctx.c;
  const LayerWeights& L = ctx.w.layers[size_t(l)];
  const int64_t rows = ctx.rows, D = c.hidden_size, H = c.num_attention_heads,
                Hkv = c.num_key_value_heads, hd = c.head_dim, I = c.intermediate_size;
  auto t0 = Clock::now();
  // MLP: x_out = x1 + down(silu(gate) * up).
  internal::LinearBackwardWeight(dx, rows, D, a->act.data(), I, G.w_down);
  std::vector<float> dact(size_t(rows * I));
  internal::LinearBackwardInput(dx, rows, D, L.w_down, I, dact.data(), 0.0f);
  internal::SwiGluBackward(dact.data(), a->gate.data(), a->up.data(), rows * I);  // gate/up := dg/du
  internal::LinearBackwardWeight(a->gate.data(), rows, I, a->h2.data(), D, G.w_gate);
  internal::LinearBackwardWeight(a->up.data(), rows, I, a->h2.data(), D, G.w_up);
  std::vector<float> dh(size_t(rows * D));
  internal::LinearBackwardInput(a->gate.data(), rows, I, L.w_gate, D, dh.data(), 0.0f);
  internal::LinearBackwardInput(a->up.data(), rows, I, L.w_up, D, dh.data(), 1.0f);
  // dx1 = dx + RMSNorm backward; kept in dx.
  internal::RmsNormBackward(dh.data(), a->x1.data(), rows, D, L.mlp_norm, c.rms_norm_eps, dx,
                            G.mlp_norm);
  // Attention output projection: x1 = x + o Wo^T.
  internal::LinearBackwardWeight(dx, rows, D, a->o.data(), H * hd, G.wo);
  std::vector<float> dout(size_t(rows * H * hd));
  internal::LinearBackwardInput(dx, rows, D, L.wo, H * hd, dout.data(), 0.0f);
  ctx.st.gemm_seconds += Since(t0);

  t0 = Clock::now();
  const attention::AttentionSpec spec = LayerSpec(c, l);
  const attention::ShardPlan plan = PlanFor(ctx, spec);
  ShardTensors shard{attention::TokenView::Dense(a->q.data(), DType::kF32, rows, H, hd),
                     attention::TokenView::Dense(a->k.data(), DType::kF32, rows, Hkv, hd),
                     attention::TokenView::Dense(a->v.data(), DType::kF32, rows, Hkv, hd)};
  std::vector<float> dq(a->q.size()), dk(a->k.size()), dv(a->v.size());
  AttentionGradInputs in;
  in.out = a->o.data();
  in.lse = a->lse.data();
  in.dout = dout.data();
  in.entropy_weight = entropy_weight;
  in.handicap = ctx.handicap;
  AttentionGrads ag{dq.data(), dk.data(), dv.data(), 0.0};
  DistributedStats ds;
  RETURN_IF_ERROR(DistributedAttentionBackward(ctx.comm, plan, ctx.globals, spec, shard, in, &ag,
                                               ctx.exec, &ds, &ctx.ws)
                      .WithContext(fmt::format("layer {} backward", l)));
  for (const PhaseTraffic* p : {&ds.halo, &ds.global_kv, &ds.global_q, &ds.partials}) {
    ctx.st.bytes_sent += p->sent;
    ctx.st.bytes_received += p->received;
    ctx.st.comm_seconds += p->seconds;
  }
  *entropy_sum += ag.entropy_sum;
  ctx.st.attention_seconds += Since(t0);

  t0 = Clock::now();
  if (cache_l1_coef != 0.0) {  // d/dk of coef * |k| (post-RoPE K is what the cache holds)
    const float cf = float(cache_l1_coef);
    for (size_t i = 0; i < dk.size(); ++i) {
      const float kv = a->k[i], vv = a->v[i];
      *l1_sum += std::fabs(double(kv)) + std::fabs(double(vv));
      dk[i] += kv > 0.0f ? cf : (kv < 0.0f ? -cf : 0.0f);
      dv[i] += vv > 0.0f ? cf : (vv < 0.0f ? -cf : 0.0f);
    }
  }
  // The logits saw f * q for a global query: d/dq = f * d/d(f q).
  ScaleGlobalQueries(c.hybrid, ctx.globals, ctx.bounds[size_t(ctx.comm.rank())], rows, H * hd,
                     dq.data());
  ApplyRopeBackward(dq.data(), rows, H, hd, ctx.rope);
  ApplyRopeBackward(dk.data(), rows, Hkv, hd, ctx.rope);
  internal::LinearBackwardWeight(dq.data(), rows, H * hd, a->h1.data(), D, G.wq);
  internal::LinearBackwardWeight(dk.data(), rows, Hkv * hd, a->h1.data(), D, G.wk);
  internal::LinearBackwardWeight(dv.data(), rows, Hkv * hd, a->h1.data(), D, G.wv);
  internal::LinearBackwardInput(dq.data(), rows, H * hd, L.wq, D, dh.data(), 0.0f);
  internal::LinearBackwardInput(dk.data(), rows, Hkv * hd, L.wk, D, dh.data(), 1.0f);
  internal::LinearBackwardInput(dv.data(), rows, Hkv * hd, L.wv, D, dh.data(), 1.0f);
  internal::RmsNormBackward(dh.data(), x, rows, D, L.attn_norm, c.rms_norm_eps, dx, G.attn_norm);
  ctx.st.gemm_seconds += Since(t0);
  return Status::Ok();
}

}  // namespace

Result<LossWeights> ParseLossSpec(std::string_view text) {
  LossWeights w;
  w.ce = 0.0;
  if (text.empty()) return InvalidArgument("--loss: empty (e.g. ce,length:0.1)");
  size_t pos = 0;
  bool any = false;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string_view item = text.substr(pos, comma - pos);
    pos = comma + 1;
    const size_t colon = item.find(':');
    const std::string_view name = item.substr(0, colon);
    double value = 1.0;
    if (colon != std::string_view::npos) {
      const std::string num(item.substr(colon + 1));
      char* end = nullptr;
      value = std::strtod(num.c_str(), &end);
      if (num.empty() || end != num.c_str() + num.size() || !std::isfinite(value) || value < 0) {
        return InvalidArgument("--loss: bad weight '{}' for {} (a number >= 0)", num, name);
      }
    }
    double* slot = name == "ce"         ? &w.ce
                   : name == "length"   ? &w.length
                   : name == "entropy"  ? &w.entropy
                   : name == "cache-l1" ? &w.cache_l1
                                        : nullptr;
    if (!slot) {
      return InvalidArgument("--loss: unknown term '{}' (ce, length, entropy, cache-l1)", name);
    }
    *slot = value;
    any = true;
    if (comma == text.size()) break;
  }
  if (!any) return InvalidArgument("--loss: no term given");
  return w;
}

Result<std::vector<int64_t>> TrainShardBounds(const model::ModelConfig& c, int64_t n,
                                              std::span<const int64_t> globals, int ranks) {
  int64_t widest = 1;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) widest = std::max(widest, c.Window(l));
  attention::AttentionSpec spec = LayerSpec(c, 0);
  spec.window = widest;
  ASSIGN_OR_RETURN(attention::ShardPlan plan, attention::MakeShardPlan(n, globals, spec, ranks));
  return plan.bounds;
}

Status ForwardBackward(comm::Communicator& comm, const model::ModelConfig& c, const Weights& w,
                       const float* length_head, const std::vector<int64_t>& bounds,
                       const TrainSequence& seq, const LossWeights& lw,
                       const attention::ExecOptions& exec, const GradView& G, LossTerms* loss,
                       TrainStepStats* stats) {
  const int me = comm.rank();
  const int64_t n = int64_t(seq.ids.size());
  if (int64_t(bounds.size()) != comm.size() + 1 || bounds.back() != n || bounds.front() != 0) {
    return InvalidArgument("train step: shard bounds do not cover the {} tokens on {} ranks", n,
                           comm.size());
  }
  if (!seq.loss_mask.empty() && int64_t(seq.loss_mask.size()) != n) {
    return InvalidArgument("train step: loss mask has {} entries for {} tokens",
                           seq.loss_mask.size(), n);
  }
  if (lw.length > 0 && (!length_head || !G.length_w || !G.length_b)) {
    return InvalidArgument("train step: the length loss needs a length head");
  }
  if (seq.skip < 0 || (seq.skip > 0 && (seq.skip_at < 0 || seq.skip_at > n))) {
    return InvalidArgument("train step: position skip {} at {} (needs skip >= 0, 0 <= at <= {})",
                           seq.skip, seq.skip_at, n);
  }
  if (seq.handicap.active()) {
    if (!std::isfinite(seq.handicap.nats) || seq.handicap.nats < 0.0f) {
      return InvalidArgument("train step: the key handicap must be finite and >= 0 nats, not {}",
                             seq.handicap.nats);
    }
    int64_t prev = 0;
    for (const auto& [b0, b1] : seq.handicap.spans) {
      if (b0 < prev || b1 <= b0 || b1 > n) {
        return InvalidArgument("train step: handicap spans must be sorted, disjoint, non-empty "
                               "and inside [0, {})", n);
      }
      prev = b1;
    }
    if (lw.entropy > 0) {
      return InvalidArgument("train step: simulated dilution and the entropy loss together are "
                             "not supported");
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    if (seq.ids[size_t(i)] < 0 || seq.ids[size_t(i)] >= c.vocab_size) {
      return OutOfRange("token id {} at position {} is outside the vocabulary [0, {})",
                        seq.ids[size_t(i)], i, c.vocab_size);
    }
  }
  const int64_t s = bounds[size_t(me)], e = bounds[size_t(me) + 1], rows = e - s;
  const int64_t D = c.hidden_size, V = c.vocab_size, Ls = c.num_hidden_layers;
  const auto deadline = comm::DeadlineIn(comm::DefaultTimeout());
  RopeTable rope = MakeRopeTable(rows, c.head_dim, s, c.rope_theta);
  if (seq.skip != 0 && seq.skip_at < e) {  // rows from skip_at on: the positions moved by skip
    const int64_t from = std::max(seq.skip_at, s);
    const RopeTable moved = MakeRopeTable(e - from, c.head_dim, from + seq.skip, c.rope_theta);
    std::copy(moved.cos.begin(), moved.cos.end(), rope.cos.begin() + (from - s) * rope.half);
    std::copy(moved.sin.begin(), moved.sin.end(), rope.sin.begin() + (from - s) * rope.half);
  }
  StepContext ctx{comm, c, w, bounds, seq.globals, exec, rope, seq.handicap, rows, {}, {}};

  // Targets: position t predicts token t+1 when that token is in the mask.
  auto is_target = [&](int64_t t) {
    return t + 1 < n && (seq.loss_mask.empty() || seq.loss_mask[size_t(t + 1)] != 0);
  };
  int64_t targets = 0, last_target = -1;
  for (int64_t t = 0; t + 1 < n; ++t) {
    if (is_target(t)) {
      ++targets;
      last_target = t;
    }
  }
  if (targets == 0 && (lw.ce > 0 || lw.length > 0)) {
    return InvalidArgument("train step: the loss mask leaves no token to predict");
  }

  // ---- forward: keep each layer's input -------------------------------------------------------
  auto t_fwd = Clock::now();
  std::vector<std::vector<float>> xs(size_t(Ls) + 1, std::vector<float>(size_t(rows * D)));
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(xs[0].data() + r * D, w.embed + int64_t(seq.ids[size_t(s + r)]) * D,
                sizeof(float) * D);
  }
  LayerActivations act;
  for (int64_t l = 0; l < Ls; ++l) {
    RETURN_IF_ERROR(LayerForward(ctx, l, xs[size_t(l)].data(), xs[size_t(l) + 1].data(), &act));
  }
  // Final norm, then the LM head fused with the cross-entropy in row chunks, and the length head.
  std::vector<float> hf(size_t(rows * D)), dhf(size_t(rows * D), 0.0f);
  internal::RmsNorm(xs[size_t(Ls)].data(), rows, D, w.final_norm, c.rms_norm_eps, hf.data());
  // Partial sums reduced over the ranks: ce, length, cache-l1, entropy.
  double sums[4] = {0.0, 0.0, 0.0, 0.0};
  const double ce_scale = targets > 0 ? lw.ce / double(targets) : 0.0;
  auto t0 = Clock::now();
  if (lw.ce > 0) {
    std::vector<float> logits(size_t(std::min(rows, kLogitRows) * V));
    for (int64_t r0 = 0; r0 < rows; r0 += kLogitRows) {
      const int64_t m = std::min(kLogitRows, rows - r0);
      internal::Linear(hf.data() + r0 * D, m, D, w.lm_head, V, logits.data());
      for (int64_t r = 0; r < m; ++r) {
        float* z = logits.data() + r * V;
        const int64_t t = s + r0 + r;
        if (!is_target(t)) {
          std::fill_n(z, V, 0.0f);
          continue;
        }
        const int32_t y = seq.ids[size_t(t + 1)];
        const float zmax = *std::max_element(z, z + V);
        double sum = 0.0;
        for (int64_t j = 0; j < V; ++j) sum += std::exp(double(z[j] - zmax));
        const double lse = double(zmax) + std::log(sum);
        sums[0] += lse - double(z[y]);
        for (int64_t j = 0; j < V; ++j) z[j] = float(std::exp(double(z[j]) - lse) * ce_scale);
        z[y] -= float(ce_scale);
      }
      // dhf += dlogits * lm_head; dlm_head += dlogits^T * hf.
      internal::LinearBackwardInput(logits.data(), m, V, w.lm_head, D, dhf.data() + r0 * D);
      internal::LinearBackwardWeight(logits.data(), m, V, hf.data() + r0 * D, D, G.lm_head);
    }
  }
  if (lw.length > 0) {
    const float* lwt = length_head;
    const float lb = length_head[D];
    const double scale = lw.length / double(targets);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = s + r;
      if (!is_target(t)) continue;
      const float* h = hf.data() + r * D;
      double pred = lb;
      for (int64_t i = 0; i < D; ++i) pred += double(h[i]) * double(lwt[i]);
      const double y = std::log(1.0 + double(last_target + 1 - t));
      sums[1] += (pred - y) * (pred - y);
      const double dpred = 2.0 * (pred - y) * scale;
      float* dh = dhf.data() + r * D;
      for (int64_t i = 0; i < D; ++i) {
        dh[i] += float(dpred * lwt[i]);
        G.length_w[i] += float(dpred * h[i]);
      }
      *G.length_b += float(dpred);
    }
  }
  ctx.st.gemm_seconds += Since(t0);
  std::vector<float> dx(size_t(rows * D), 0.0f);
  internal::RmsNormBackward(dhf.data(), xs[size_t(Ls)].data(), rows, D, w.final_norm,
                            c.rms_norm_eps, dx.data(), G.final_norm);
  ctx.st.forward_seconds = Since(t_fwd);

  // ---- backward, last layer first: recompute the layer from its input, then differentiate ---
  auto t_bwd = Clock::now();
  const int64_t g = int64_t(seq.globals.size());
  const double l1_count = double(Ls) * double(n) * double(c.kv_dim());
  const double l1_coef = lw.cache_l1 > 0 ? lw.cache_l1 / l1_count : 0.0;
  const float entropy_weight =
      lw.entropy > 0 && g > 0
          ? float(lw.entropy / (double(Ls) * double(c.num_attention_heads) * double(g)))
          : 0.0f;
  double entropy_sum = 0.0;
  for (int64_t l = Ls - 1; l >= 0; --l) {
    RETURN_IF_ERROR(LayerForward(ctx, l, xs[size_t(l)].data(), xs[size_t(l) + 1].data(), &act));
    RETURN_IF_ERROR(LayerBackward(ctx, l, xs[size_t(l)].data(), &act, dx.data(),
                                  G.layers[size_t(l)], l1_coef, entropy_weight, &sums[2],
                                  &entropy_sum));
  }
  // Embedding: dE[id] += dx (tied: the same tensor the LM head's gradient went into).
  for (int64_t r = 0; r < rows; ++r) {
    float* de = G.embed + int64_t(seq.ids[size_t(s + r)]) * D;
    const float* d = dx.data() + r * D;
    for (int64_t i = 0; i < D; ++i) de[i] += d[i];
  }
  ctx.st.backward_seconds = Since(t_bwd);

  // ---- the loss, the same on every rank ---------------------------------------------------------
  RETURN_IF_ERROR(comm.AllReduce(sums, 3, comm::ReduceType::kF64, comm::ReduceOp::kSum, deadline));
  LossTerms out;
  out.targets = targets;
  if (lw.ce > 0) out.ce = sums[0] / double(targets);
  if (lw.length > 0) out.length = sums[1] / double(targets);
  if (lw.cache_l1 > 0) out.cache_l1 = sums[2] / l1_count;
  if (lw.entropy > 0 && g > 0) {  // entropy_sum is already the same on every rank
    out.entropy = entropy_sum / (double(Ls) * double(c.num_attention_heads) * double(g));
  }
  out.total = lw.ce * out.ce + lw.length * out.length + lw.entropy * out.entropy +
              lw.cache_l1 * out.cache_l1;
  if (loss) *loss = out;
  if (stats) *stats = ctx.st;
  return Status::Ok();
}

}  // namespace longctx::worker
