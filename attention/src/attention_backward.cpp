#include "longctx/attention/attention_backward.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernel.h"
#include "validate.h"

namespace longctx::attention {
namespace {

using detail::CheckHeads;
using detail::CheckPositions;
using detail::CheckSpec;
using detail::CheckView;
using detail::GatherRows;
using detail::Resolve;

// The backward kernels read float32 only (for now).
Status CheckF32(const TokenView& t, std::string_view name) {
  if (t.dtype != DType::kF32) {
    return InvalidArgument("attention backward: {} is {}, only f32 is supported", name,
                           DTypeName(t.dtype));
  }
  return Status::Ok();
}

}  // namespace

Status WindowGlobalBackward(const WindowGlobalGradArgs& a, const AttentionSpec& spec,
                            const ExecOptions& exec) {
  RETURN_IF_ERROR(CheckHeads(a.q, a.k, a.v));
  RETURN_IF_ERROR(CheckF32(a.q, "q"));
  RETURN_IF_ERROR(CheckF32(a.k, "k"));
  RETURN_IF_ERROR(CheckF32(a.v, "v"));
  RETURN_IF_ERROR(CheckSpec(spec));
  RETURN_IF_ERROR(CheckPositions(a.global_pos, a.seq_len, "global positions"));
  if (!a.dout || !a.dq || !a.dk || !a.dv) {
    return InvalidArgument("WindowGlobalBackward: dout, dq, dk and dv are required");
  }
  if (!a.global_pos.empty()) {
    RETURN_IF_ERROR(CheckView(a.gk, "global k"));
    RETURN_IF_ERROR(CheckView(a.gv, "global v"));
    if (a.gk.rows != int64_t(a.global_pos.size()) || a.gv.rows != a.gk.rows ||
        a.gk.heads != a.k.heads || a.gk.head_dim != a.k.head_dim || a.gk.dtype != a.k.dtype ||
        a.gv.heads != a.k.heads || a.gv.head_dim != a.k.head_dim || a.gv.dtype != a.k.dtype) {
      return InvalidArgument("packed global K/V must be [{}, {}, {}] {}", a.global_pos.size(),
                             a.k.heads, a.k.head_dim, DTypeName(a.k.dtype));
    }
    if (!a.dgk || !a.dgv) {
      return InvalidArgument("WindowGlobalBackward: dgk and dgv are required with globals");
    }
  }
  if (a.q.rows == 0) return Status::Ok();
  // Same coverage rule as WindowGlobalPass: local K/V hold every window key of every query.
  const int64_t first = a.q_pos0, last = a.q_pos0 + a.q.rows - 1;
  const int64_t need_lo = std::max<int64_t>(0, first - spec.window + 1);
  const int64_t need_hi = spec.causal ? last + 1 : std::min(a.seq_len, last + spec.window);
  if (first < 0 || last >= a.seq_len || a.kv_pos0 > need_lo || a.kv_pos0 + a.k.rows < need_hi ||
      a.kv_pos0 + a.k.rows > a.seq_len) {
    return InvalidArgument(
        "local K/V [{}, {}) does not cover the windows of queries [{}, {}] (needs [{}, {}) "
        "within [0, {}))",
        a.kv_pos0, a.kv_pos0 + a.k.rows, first, last, need_lo, need_hi, a.seq_len);
  }
  ASSIGN_OR_RETURN(const Isa resolved, Resolve(exec.isa));
  detail::Kernels(resolved).window_global_bwd(a, spec, exec.pool);
  return Status::Ok();
}

namespace {

Status CheckDenseQueries(const TokenView& q, const TokenView& k, const TokenView& v,
                         std::span<const int64_t> q_pos, const AttentionSpec& spec,
                         std::string_view who) {
  RETURN_IF_ERROR(CheckHeads(q, k, v));
  RETURN_IF_ERROR(CheckF32(q, "q"));
  RETURN_IF_ERROR(CheckF32(k, "k"));
  RETURN_IF_ERROR(CheckF32(v, "v"));
  RETURN_IF_ERROR(CheckSpec(spec));
  if (int64_t(q_pos.size()) != q.rows) {
    return InvalidArgument("{}: {} positions for {} query rows", who, q_pos.size(), q.rows);
  }
  return CheckPositions(q_pos, std::numeric_limits<int64_t>::max(), "query positions");
}

}  // namespace

Status DensePartialBackward(const DensePartialGradArgs& a, const AttentionSpec& spec,
                            const ExecOptions& exec) {
  RETURN_IF_ERROR(CheckDenseQueries(a.q, a.k, a.v, a.q_pos, spec, "DensePartialBackward"));
  if (!a.lse || !a.dout || !a.delta || !a.dq || !a.dk || !a.dv) {
    return InvalidArgument("DensePartialBackward: lse, dout, delta, dq, dk and dv are required");
  }
  if (a.entropy_coef && !a.entropy) {
    return InvalidArgument("DensePartialBackward: entropy is required with entropy_coef");
  }
  if (a.q.rows == 0 || a.k.rows == 0) return Status::Ok();
  ASSIGN_OR_RETURN(const Isa resolved, Resolve(exec.isa));
  detail::Kernels(resolved).dense_partial_bwd(a, spec, exec.pool);
  return Status::Ok();
}

Status DensePartialScoreMoment(const DensePartialArgs& a, const float* lse, float* psum,
                               const AttentionSpec& spec, const ExecOptions& exec) {
  RETURN_IF_ERROR(CheckDenseQueries(a.q, a.k, a.v, a.q_pos, spec, "DensePartialScoreMoment"));
  if (!lse || !psum) return InvalidArgument("DensePartialScoreMoment: lse and psum are required");
  if (a.q.rows == 0) return Status::Ok();
  ASSIGN_OR_RETURN(const Isa resolved, Resolve(exec.isa));
  detail::Kernels(resolved).dense_score_moment(a, lse, psum, spec, exec.pool);
  return Status::Ok();
}

Status HybridAttentionBackward(const TokenView& q, const TokenView& k, const TokenView& v,
                               std::span<const int64_t> globals, const AttentionSpec& spec,
                               const float* out, const float* lse, const float* dout, float* dq,
                               float* dk, float* dv, const ExecOptions& exec,
                               const float* entropy_coef) {
  RETURN_IF_ERROR(ValidateAttentionInputs(q, k, v, globals, spec));
  RETURN_IF_ERROR(CheckF32(q, "q"));
  RETURN_IF_ERROR(CheckF32(k, "k"));
  if (!out || !lse || !dout || !dq || !dk || !dv) {
    return InvalidArgument("HybridAttentionBackward: out, lse, dout, dq, dk and dv are required");
  }
  const int64_t n = q.rows, H = q.heads, Hkv = k.heads, d = q.head_dim;
  if (n == 0) return Status::Ok();
  const int64_t g = int64_t(globals.size());
  const bool weighted = spec.fusion == Fusion::kWeighted;

  // 1) window + global keys of every row (global-query rows: window part only, weighted).
  std::vector<std::byte> gk_buf, gv_buf;
  std::vector<float> dgk(size_t(g * Hkv * d), 0.0f), dgv(size_t(g * Hkv * d), 0.0f);
  std::vector<float> window_dot(weighted && g > 0 ? size_t(n * H) : 0, 0.0f);
  WindowGlobalGradArgs wg;
  wg.q = q;
  wg.k = k;
  wg.v = v;
  wg.gk = GatherRows(k, globals, &gk_buf);
  wg.gv = GatherRows(v, globals, &gv_buf);
  wg.seq_len = n;
  wg.global_pos = globals;
  wg.dout = dout;
  wg.dq = dq;
  wg.dk = dk;
  wg.dv = dv;
  wg.dgk = dgk.data();
  wg.dgv = dgv.data();
  wg.window_dot = window_dot.empty() ? nullptr : window_dot.data();
  RETURN_IF_ERROR(WindowGlobalBackward(wg, spec, exec));
  if (g == 0) return Status::Ok();
  for (int64_t r = 0; r < g; ++r) {  // the packed globals' gradients to their positions
    for (int64_t e = 0; e < Hkv * d; ++e) {
      dk[globals[r] * Hkv * d + e] += dgk[size_t(r * Hkv * d + e)];
      dv[globals[r] * Hkv * d + e] += dgv[size_t(r * Hkv * d + e)];
    }
  }

  // 2) global queries over every visible key: dout_dense = w*dO with w = 1 (union) or 1-A,
  // delta = rowsum(dout_dense * O_all) = rowsum(dO * out) - A*window_dot (weighted).
  const float w = weighted ? 1.0f - spec.alpha : 1.0f;
  std::vector<std::byte> gq_buf;
  std::vector<float> lse_g(size_t(g * H)), dout_g(size_t(g * H * d)), delta(size_t(g * H));
  std::vector<float> coef_g, ent_g;
  for (int64_t r = 0; r < g; ++r) {
    const int64_t i = globals[r];
    for (int64_t h = 0; h < H; ++h) {
      const float* o = out + (i * H + h) * d;
      const float* go = dout + (i * H + h) * d;
      double dot = 0.0;
      for (int64_t e = 0; e < d; ++e) {
        dot += double(go[e]) * o[e];
        dout_g[size_t((r * H + h) * d + e)] = w * go[e];
      }
      if (weighted) dot -= double(spec.alpha) * window_dot[size_t(i * H + h)];
      delta[size_t(r * H + h)] = float(dot);
      lse_g[size_t(r * H + h)] = lse[i * H + h];
    }
  }
  DensePartialGradArgs dp;
  dp.q = GatherRows(q, globals, &gq_buf);
  dp.k = k;
  dp.v = v;
  dp.q_pos = globals;
  dp.kv_pos0 = 0;
  dp.lse = lse_g.data();
  dp.dout = dout_g.data();
  dp.delta = delta.data();
  if (entropy_coef) {
    // Entropy_i = L_i - sum_j P_ij s_ij over all visible keys (one range here).
    coef_g.resize(size_t(g * H));
    ent_g.resize(size_t(g * H));
    DensePartialArgs moment;
    moment.q = dp.q;
    moment.k = k;
    moment.v = v;
    moment.q_pos = globals;
    RETURN_IF_ERROR(DensePartialScoreMoment(moment, lse_g.data(), ent_g.data(), spec, exec));
    for (int64_t r = 0; r < g; ++r) {
      for (int64_t h = 0; h < H; ++h) {
        const size_t s = size_t(r * H + h);
        coef_g[s] = entropy_coef[globals[r] * H + h];
        ent_g[s] = lse_g[s] - ent_g[s];
      }
    }
    dp.entropy_coef = coef_g.data();
    dp.entropy = ent_g.data();
  }
  std::vector<float> dq_g(size_t(g * H * d), 0.0f);
  dp.dq = dq_g.data();
  dp.dk = dk;
  dp.dv = dv;
  RETURN_IF_ERROR(DensePartialBackward(dp, spec, exec));
  for (int64_t r = 0; r < g; ++r) {
    for (int64_t e = 0; e < H * d; ++e) dq[globals[r] * H * d + e] += dq_g[size_t(r * H * d + e)];
  }
  return Status::Ok();
}

}  // namespace longctx::attention
