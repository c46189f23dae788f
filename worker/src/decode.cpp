#include "longctx/worker/decode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "layers.h"
#include "longctx/attention/lse_merge.h"
#include "longctx/core/trace.h"


namespace longctx::worker {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Keys per partial of a global query's scan over every cached row (a fixed row grid, so the
// partials and their merge are the same whatever tiers the blocks come from).
constexpr int64_t kScanChunkRows = 8192;

using internal::MatVec;

// One token's RMSNorm.
void RmsNormRow(const float* x, int64_t dim, const float* w, double eps, float* y) {
  internal::RmsNorm(x, 1, dim, w, eps, y);
}

}  // namespace

bool GeneratedTokenIsGlobal(int32_t token, const std::vector<int32_t>& prev) {
  if (token == '.' || token == '!' || token == '?') return true;
  if (token == '\n' && !prev.empty() && prev.back() == '\n') return true;
  // The last byte of 。(E3 80 82), ！(EF BC 81), ？(EF BC 9F).
  if (prev.size() >= 2) {
    const int32_t a = prev[prev.size() - 2], b = prev.back();
    if (a == 0xE3 && b == 0x80 && token == 0x82) return true;
    if (a == 0xEF && b == 0xBC && (token == 0x81 || token == 0x9F)) return true;
  }
  return false;
}

Decoder::Decoder(comm::Communicator& comm, const model::ModelConfig& config,
                 const Weights& weights, std::vector<int64_t> bounds,
                 std::span<const int64_t> globals, cache::TieredKvCache* cache,
                 const attention::ExecOptions& exec)
    : comm_(comm), config_(config), weights_(weights), bounds_(std::move(bounds)), exec_(exec),
      cache_(cache) {
  const int me = comm_.rank();
  pos0_ = bounds_[size_t(me)];
  const int64_t rows = cache_->rows(0);  // the document's rows (nothing appended yet)
  global_row_.assign(size_t(rows), 0);
  for (int64_t g : globals) {
    if (g >= pos0_ && g < pos0_ + rows) global_row_[size_t(g - pos0_)] = 1;
  }
  next_pos_ = bounds_.back();
}

Status Decoder::Step(int32_t token, bool is_global, float* hidden_out, int32_t* next_token) {
  const model::ModelConfig& c = config_;
  const int P = comm_.size(), me = comm_.rank(), last = last_rank();
  const int64_t D = c.hidden_size, H = c.num_attention_heads, Hkv = c.num_key_value_heads,
                hd = c.head_dim, I = c.intermediate_size, kvd = Hkv * hd;
  const int64_t p = next_pos_;
  if (token < 0 || token >= c.vocab_size) {
    return OutOfRange("token id {} is outside the vocabulary [0, {})", token, c.vocab_size);
  }
  trace::TraceSpan step_span("decode_step", "decode", "pos", p, "global", is_global ? 1 : 0);
  const auto deadline = comm::DeadlineIn(comm::DefaultTimeout());
  const bool weighted = c.hybrid.fusion_weighted;
  const int states = weighted ? 2 : 1;                  // union: 1; weighted: window, global
  const size_t state_floats = size_t(H * (hd + 1));     // one (O, L) for every head

  std::vector<float> x(static_cast<size_t>(D)), h(x.size()), q(static_cast<size_t>(H * hd)),
      kv(static_cast<size_t>(2 * kvd)), o(q.size()), tmp(static_cast<size_t>(std::max(D, I))),
      g(static_cast<size_t>(I)), u(g.size());
  if (me == last) std::memcpy(x.data(), weights_.embed + int64_t(token) * D, sizeof(float) * D);
  // A token after the prefill uses the length p + 1 (dynamic NTK; model/rope.h).
  const RopeTable rope = MakeRopeTable(
      1, p, model::ComputeRopeFrequencies(c, model::RopeSequenceLength(p, bounds_.back())));

  std::vector<size_t> q_counts(static_cast<size_t>(P), 0);
  q_counts[size_t(last)] = q.size() * sizeof(float);
  std::vector<size_t> part_counts(static_cast<size_t>(P), states * state_floats * sizeof(float));
  std::vector<float> mine(states * state_floats), parts(size_t(P) * states * state_floats);
  std::vector<float> keys_k, keys_v;  // the keys this rank's partial reads, gathered
  std::vector<float> blk_o(static_cast<size_t>(H * hd)), blk_l(static_cast<size_t>(H));
  std::vector<float> chunk_k, chunk_v;  // a global query's scan chunk [kScanChunkRows, kvd]
  if (is_global) {
    chunk_k.resize(static_cast<size_t>(kScanChunkRows * kvd));
    chunk_v.resize(chunk_k.size());
  }

  // A global query reads every block: the first layer's start loading now, each next layer's
  // while the current one computes.
  if (is_global) cache_->Prefetch(0, 0, cache_->rows(0));
  // A local failure (a lost KV block, a full tier) must not leave the other ranks waiting in the
  // next collective: remember it, keep taking part, and agree on it at the end of the step.
  Status failed;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& L = weights_.layers[size_t(l)];
    const int32_t layer = int32_t(l);
    trace::TraceSpan qkv_span("decode_qkv", "dense", "layer", l);
    if (me == last) {
      RmsNormRow(x.data(), D, L.attn_norm, c.rms_norm_eps, h.data());
      MatVec(L.wq, H * hd, D, h.data(), q.data());
      MatVec(L.wk, kvd, D, h.data(), kv.data());
      MatVec(L.wv, kvd, D, h.data(), kv.data() + kvd);
      internal::AddBias(q.data(), 1, H * hd, L.bq);
      internal::AddBias(kv.data(), 1, kvd, L.bk);
      internal::AddBias(kv.data() + kvd, 1, kvd, L.bv);
      internal::HeadRmsNorm(q.data(), 1, H, hd, L.q_norm, c.rms_norm_eps);
      internal::HeadRmsNorm(kv.data(), 1, Hkv, hd, L.k_norm, c.rms_norm_eps);
      ApplyRope(q.data(), 1, H, hd, rope);
      ApplyRope(kv.data(), 1, Hkv, hd, rope);
      if (is_global) {
        const float f = LognScale(c.hybrid, p);
        for (float& e : q) e *= f;
      }
      if (failed.ok()) failed = cache_->Append(layer, kv.data(), kv.data() + kvd, 1);
    }
    qkv_span.End();
    // The query to every rank.
    trace::TraceSpan query_span("decode_query_exchange", "comm", "layer", l);
    std::vector<float> q_all(q.size());
    RETURN_IF_ERROR(comm_.AllGatherV(
        comm::HostBuffer(q.data(), me == last ? q.size() * sizeof(float) : 0),
        comm::HostBuffer(q_all.data(), q_all.size() * sizeof(float)), q_counts, deadline));
    if (me != last) received_ += q_all.size() * sizeof(float);
    else sent_ += q_all.size() * sizeof(float) * size_t(P - 1);

    query_span.End();
    // This rank's partials over the keys the query may see.
    trace::TraceSpan attn_span("decode_attention", "attention", "layer", l);
    const int64_t rows = cache_->rows(layer);
    const int64_t W = c.Window(l);
    const attention::AttentionSpec spec = LayerSpec(c, l);
    // Partial over m keys all visible to the query: keys at positions 0..m-1, the query at m-1,
    // so the causal mask keeps them all.
    auto dense = [&](const float* kp, const float* vp, int64_t m, float* out_o, float* out_l) {
      const int64_t qpos = m - 1;
      attention::DensePartialArgs a;
      a.q = attention::TokenView::Dense(q_all.data(), DType::kF32, 1, H, hd);
      a.k = attention::TokenView::Dense(kp, DType::kF32, m, Hkv, hd);
      a.v = attention::TokenView::Dense(vp, DType::kF32, m, Hkv, hd);
      a.q_pos = std::span<const int64_t>(&qpos, 1);
      a.kv_pos0 = 0;
      a.out = out_o;
      a.lse = out_l;
      return attention::DensePartialPass(a, spec, exec_);
    };
    auto partial = [&](const std::vector<int64_t>& rows_idx, bool all_rows, float* out_o,
                       float* out_l) -> Status {
      std::fill_n(out_o, H * hd, 0.0f);
      std::fill_n(out_l, H, kNegInf);
      if (all_rows) {
        // The cache's blocks in row order, copied into fixed chunks of kScanChunkRows rows (the
        // same chunks whatever the tiers hold, so the result is too); one partial per chunk,
        // merged in row order. One kernel call per block would pay the pool's dispatch
        // thousands of times per layer.
        int64_t filled = 0;
        auto flush = [&]() -> Status {
          if (filled == 0) return Status::Ok();
          RETURN_IF_ERROR(dense(chunk_k.data(), chunk_v.data(), filled, blk_o.data(), blk_l.data()));
          attention::MergeStates(out_o, out_l, blk_o.data(), blk_l.data(), H, hd);
          filled = 0;
          return Status::Ok();
        };
        const Status scanned = cache_->Scan(
            layer, 0, rows,
            [&](int64_t, int64_t count, const float* kp, const float* vp) -> Status {
              while (count > 0) {
                const int64_t take = std::min(count, kScanChunkRows - filled);
                std::memcpy(chunk_k.data() + filled * kvd, kp, sizeof(float) * take * kvd);
                std::memcpy(chunk_v.data() + filled * kvd, vp, sizeof(float) * take * kvd);
                filled += take;
                kp += take * kvd;
                vp += take * kvd;
                count -= take;
                if (filled == kScanChunkRows) RETURN_IF_ERROR(flush());
              }
              return Status::Ok();
            });
        RETURN_IF_ERROR(scanned);
        RETURN_IF_ERROR(flush());
        if (l + 1 < c.num_hidden_layers) {
          cache_->Prefetch(layer + 1, 0, cache_->rows(layer + 1));
        }
        return Status::Ok();
      }
      const int64_t m = int64_t(rows_idx.size());
      if (m == 0) return Status::Ok();
      keys_k.resize(size_t(m * kvd));
      keys_v.resize(size_t(m * kvd));
      RETURN_IF_ERROR(cache_->Gather(layer, rows_idx, keys_k.data(), keys_v.data()));
      return dense(keys_k.data(), keys_v.data(), m, out_o, out_l);
    };
    // Window keys (p-W, p], global keys, and for a global query every key.
    std::vector<int64_t> win_rows, glob_rows, union_rows;
    if (!is_global) {
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t pos = pos0_ + r;
        const bool in_win = pos > p - W && pos <= p;
        const bool is_global_key =
            r < int64_t(global_row_.size()) ? global_row_[size_t(r)] != 0 : false;
        if (in_win) win_rows.push_back(r);
        if (is_global_key) glob_rows.push_back(r);
        if (in_win || is_global_key) union_rows.push_back(r);
      }
    } else {
      for (int64_t r = 0; r < rows; ++r) {
        if (pos0_ + r > p - W) win_rows.push_back(r);  // the window part (weighted fusion)
      }
    }
    float* m_o = mine.data();
    float* m_l = mine.data() + H * hd;
    if (!weighted) {
      if (failed.ok()) failed = partial(union_rows, is_global, m_o, m_l);
    } else {
      if (failed.ok()) failed = partial(win_rows, false, m_o, m_l);
      if (failed.ok()) failed = partial(glob_rows, is_global, m_o + state_floats, m_l + state_floats);
    }
    attn_span.End();
    trace::TraceSpan parts_span("decode_partials_exchange", "comm", "layer", l);
    RETURN_IF_ERROR(comm_.AllGatherV(comm::HostBuffer(mine.data(), mine.size() * sizeof(float)),
                                     comm::HostBuffer(parts.data(), parts.size() * sizeof(float)),
                                     part_counts, deadline));
    sent_ += mine.size() * sizeof(float) * size_t(P - 1);
    received_ += (parts.size() - mine.size()) * sizeof(float);

    parts_span.End();
    if (me == last) {
      trace::TraceSpan span("decode_merge_mlp", "dense", "layer", l);
      // Merge in rank order, per state; then fuse.
      std::vector<float> acc(states * state_floats);
      for (int st = 0; st < states; ++st) {
        float* ao = acc.data() + st * state_floats;
        float* al = ao + H * hd;
        std::fill_n(ao, H * hd, 0.0f);
        std::fill_n(al, H, kNegInf);
        for (int r = 0; r < P; ++r) {
          const float* po = parts.data() + (size_t(r) * states + st) * state_floats;
          attention::MergeStates(ao, al, po, po + H * hd, H, hd);
        }
      }
      if (!weighted) {
        std::copy_n(acc.data(), H * hd, o.data());
      } else {
        const float a = float(c.hybrid.fusion_alpha);
        const float* ow = acc.data();
        const float* og = acc.data() + state_floats;
        const float* lg = og + H * hd;
        for (int64_t hh = 0; hh < H; ++hh) {
          const bool has_global = lg[hh] != kNegInf;
          for (int64_t e = 0; e < hd; ++e) {
            const float w = ow[hh * hd + e];
            o[size_t(hh * hd + e)] = has_global ? a * w + (1.0f - a) * og[hh * hd + e] : w;
          }
        }
      }
      MatVec(L.wo, D, H * hd, o.data(), tmp.data());
      for (int64_t i = 0; i < D; ++i) x[size_t(i)] += tmp[size_t(i)];
      RmsNormRow(x.data(), D, L.mlp_norm, c.rms_norm_eps, h.data());
      MatVec(L.w_gate, I, D, h.data(), g.data());
      MatVec(L.w_up, I, D, h.data(), u.data());
      internal::SwiGlu(g.data(), u.data(), I);
      MatVec(L.w_down, D, I, g.data(), tmp.data());
      for (int64_t i = 0; i < D; ++i) x[size_t(i)] += tmp[size_t(i)];
    }
  }
  if (me == last) {
    global_row_.push_back(is_global ? 1 : 0);
    if (is_global) cache_->Pin(cache_->rows(0) - 1);  // a global row stays resident
  }

  RETURN_IF_ERROR(comm::AgreeOnStatus(comm_, failed));

  // Greedy next token on the last rank, told to every rank.
  int64_t best = -1;
  if (me == last) {
    RmsNormRow(x.data(), D, weights_.final_norm, c.rms_norm_eps, h.data());
    if (hidden_out) std::copy_n(h.data(), D, hidden_out);
    best = GreedyToken(c, weights_, h.data());
  }
  RETURN_IF_ERROR(comm_.AllReduce(&best, 1, comm::ReduceType::kI64, comm::ReduceOp::kMax, deadline));
  *next_token = int32_t(best);
  ++next_pos_;
  return Status::Ok();
}

}  // namespace longctx::worker
