#include "longctx/attention/hybrid_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernel.h"
#include "validate.h"

namespace longctx::attention {
using detail::CheckHeads;
using detail::CheckPositions;
using detail::CheckSpec;
using detail::CheckView;
using detail::GatherRows;
using detail::Resolve;

namespace {

// The global queries' rows over every key they may see (one dense partial over the whole
// sequence): out [g, H, d], lse [g, H]. What both HybridAttention and its chunked form fuse
// into the window pass's rows.
Status GlobalQueryRows(const TokenView& q, const TokenView& k, const TokenView& v,
                       std::span<const int64_t> globals, const AttentionSpec& spec,
                       const ExecOptions& exec, std::vector<float>* out,
                       std::vector<float>* lse) {
  const int64_t g = int64_t(globals.size());
  std::vector<std::byte> gq_buf;
  out->resize(size_t(g * q.heads * q.head_dim));
  lse->resize(size_t(g * q.heads));
  DensePartialArgs dp;
  dp.q = GatherRows(q, globals, &gq_buf);
  dp.k = k;
  dp.v = v;
  dp.q_pos = globals;
  dp.kv_pos0 = 0;
  dp.out = out->data();
  dp.lse = lse->data();
  return DensePartialPass(dp, spec, exec);
}

}  // namespace

Status ValidateAttentionInputs(const TokenView& q, const TokenView& k, const TokenView& v,
                               std::span<const int64_t> globals, const AttentionSpec& spec) {
  RETURN_IF_ERROR(CheckHeads(q, k, v));
  if (q.rows != k.rows) {
    return InvalidArgument("q has {} tokens but k/v have {}", q.rows, k.rows);
  }
  RETURN_IF_ERROR(CheckSpec(spec));
  return CheckPositions(globals, q.rows, "globals");
}

Status WindowGlobalPass(const WindowGlobalArgs& a, const AttentionSpec& spec,
                        const ExecOptions& exec) {
  RETURN_IF_ERROR(CheckHeads(a.q, a.k, a.v));
  RETURN_IF_ERROR(CheckSpec(spec));
  RETURN_IF_ERROR(CheckPositions(a.global_pos, a.seq_len, "global positions"));
  if (!a.out || !a.lse) return InvalidArgument("WindowGlobalPass: out and lse are required");
  if (!a.global_pos.empty()) {
    RETURN_IF_ERROR(CheckView(a.gk, "global k"));
    RETURN_IF_ERROR(CheckView(a.gv, "global v"));
    if (a.gk.rows != int64_t(a.global_pos.size()) || a.gv.rows != a.gk.rows ||
        a.gk.heads != a.k.heads || a.gk.head_dim != a.k.head_dim || a.gk.dtype != a.k.dtype ||
        a.gv.heads != a.k.heads || a.gv.head_dim != a.k.head_dim || a.gv.dtype != a.k.dtype) {
      return InvalidArgument("packed global K/V must be [{}, {}, {}] {}", a.global_pos.size(),
                             a.k.heads, a.k.head_dim, DTypeName(a.k.dtype));
    }
  }
  if (a.q.rows == 0) return Status::Ok();
  // The local K/V must hold every window key of every query that exists in [0, seq_len).
  const int64_t first = a.q_pos0, last = a.q_pos0 + a.q.rows - 1;
  const int64_t need_lo = std::max<int64_t>(0, first - spec.window + 1);
  const int64_t need_hi = spec.causal ? last + 1 : std::min(a.seq_len, last + spec.window);
  if (first < 0 || last >= a.seq_len || a.kv_pos0 > need_lo ||
      a.kv_pos0 + a.k.rows < need_hi) {
    return InvalidArgument(
        "local K/V [{}, {}) does not cover the windows of queries [{}, {}] (needs [{}, {}))",
        a.kv_pos0, a.kv_pos0 + a.k.rows, first, last, need_lo, need_hi);
  }
  ASSIGN_OR_RETURN(const Isa resolved, Resolve(exec.isa));
  detail::Kernels(resolved).window_global(a, spec, exec.pool);
  return Status::Ok();
}

Status DensePartialPass(const DensePartialArgs& a, const AttentionSpec& spec,
                        const ExecOptions& exec) {
  RETURN_IF_ERROR(CheckHeads(a.q, a.k, a.v));
  RETURN_IF_ERROR(CheckSpec(spec));
  if (int64_t(a.q_pos.size()) != a.q.rows) {
    return InvalidArgument("DensePartialPass: {} positions for {} query rows", a.q_pos.size(),
                           a.q.rows);
  }
  RETURN_IF_ERROR(CheckPositions(a.q_pos, std::numeric_limits<int64_t>::max(), "query positions"));
  if (!a.out || !a.lse) return InvalidArgument("DensePartialPass: out and lse are required");
  if (a.q.rows == 0) return Status::Ok();
  if (a.k.rows == 0) {
    std::fill_n(a.out, a.q.rows * a.q.heads * a.q.head_dim, 0.0f);
    std::fill_n(a.lse, a.q.rows * a.q.heads, -std::numeric_limits<float>::infinity());
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(const Isa resolved, Resolve(exec.isa));
  detail::Kernels(resolved).dense_partial(a, spec, exec.pool);
  return Status::Ok();
}

void FuseGlobalQueries(const AttentionSpec& spec, int64_t rows, int64_t heads, int64_t head_dim,
                       float* o_win, float* l_win, const float* o_all, const float* l_all) {
  const int64_t states = rows * heads;
  for (int64_t s = 0; s < states; ++s) {
    float* o = o_win + s * head_dim;
    const float* oa = o_all + s * head_dim;
    if (spec.fusion == Fusion::kUnion) {
      std::copy_n(oa, head_dim, o);
    } else {
      for (int64_t e = 0; e < head_dim; ++e) o[e] = spec.alpha * o[e] + (1.0f - spec.alpha) * oa[e];
    }
    l_win[s] = l_all[s];
  }
}

Status HybridAttention(const TokenView& q, const TokenView& k, const TokenView& v,
                       std::span<const int64_t> globals, const AttentionSpec& spec, float* out,
                       float* lse, const ExecOptions& exec) {
  RETURN_IF_ERROR(ValidateAttentionInputs(q, k, v, globals, spec));
  if (!out) return InvalidArgument("HybridAttention: out is required");
  const int64_t n = q.rows, H = q.heads, d = q.head_dim;
  if (n == 0) return Status::Ok();
  std::vector<float> lse_buf;
  if (!lse) {
    lse_buf.resize(size_t(n * H));
    lse = lse_buf.data();
  }
  std::vector<std::byte> gk_buf, gv_buf;
  WindowGlobalArgs wg;
  wg.q = q;
  wg.k = k;
  wg.v = v;
  wg.gk = GatherRows(k, globals, &gk_buf);
  wg.gv = GatherRows(v, globals, &gv_buf);
  wg.seq_len = n;
  wg.global_pos = globals;
  wg.out = out;
  wg.lse = lse;
  RETURN_IF_ERROR(WindowGlobalPass(wg, spec, exec));
  if (globals.empty()) return Status::Ok();

  // Global queries see every visible key: one partial over the whole sequence.
  const int64_t g = int64_t(globals.size());
  std::vector<float> o_all, l_all;
  RETURN_IF_ERROR(GlobalQueryRows(q, k, v, globals, spec, exec, &o_all, &l_all));

  std::vector<float> o_win(size_t(g * H * d)), l_win(size_t(g * H));
  for (int64_t r = 0; r < g; ++r) {
    std::copy_n(out + globals[r] * H * d, H * d, o_win.data() + r * H * d);
    std::copy_n(lse + globals[r] * H, H, l_win.data() + r * H);
  }
  FuseGlobalQueries(spec, g, H, d, o_win.data(), l_win.data(), o_all.data(), l_all.data());
  for (int64_t r = 0; r < g; ++r) {
    std::copy_n(o_win.data() + r * H * d, H * d, out + globals[r] * H * d);
    std::copy_n(l_win.data() + r * H, H, lse + globals[r] * H);
  }
  return Status::Ok();
}

Status HybridAttentionInChunks(const TokenView& q, const TokenView& k, const TokenView& v,
                               std::span<const int64_t> globals, const AttentionSpec& spec,
                               int64_t chunk_rows, ChunkSink& sink, const ExecOptions& exec) {
  RETURN_IF_ERROR(ValidateAttentionInputs(q, k, v, globals, spec));
  if (chunk_rows < 1) return InvalidArgument("chunk_rows must be >= 1, got {}", chunk_rows);
  const int64_t n = q.rows, H = q.heads, d = q.head_dim, g = int64_t(globals.size());
  // Whole kernel tasks per chunk, so every row is computed exactly as HybridAttention does.
  const int64_t granule = detail::QueryPositionsPerTask(H / k.heads);
  chunk_rows = (chunk_rows + granule - 1) / granule * granule;

  // The global queries' full rows (every visible key), once, before any chunk.
  std::vector<std::byte> gk_buf, gv_buf;
  std::vector<float> o_all, l_all;
  if (g > 0) RETURN_IF_ERROR(GlobalQueryRows(q, k, v, globals, spec, exec, &o_all, &l_all));

  WindowGlobalArgs wg;
  wg.k = k;
  wg.v = v;
  wg.gk = GatherRows(k, globals, &gk_buf);
  wg.gv = GatherRows(v, globals, &gv_buf);
  wg.seq_len = n;
  wg.global_pos = globals;
  size_t gi = 0;  // globals[0, gi) lie in chunks already done
  for (int64_t row0 = 0; row0 < n; row0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, n - row0);
    ASSIGN_OR_RETURN(ChunkSink::Buffer buf, sink.Acquire(row0, rows));
    if (!buf.out || !buf.lse) return InvalidArgument("ChunkSink: out and lse are required");
    wg.q = TokenView{q.Row(row0), q.dtype, rows, H, d, q.row_stride};
    wg.q_pos0 = row0;
    wg.out = buf.out;
    wg.lse = buf.lse;
    RETURN_IF_ERROR(WindowGlobalPass(wg, spec, exec));
    // Complete this chunk's global queries with their dense partial, as HybridAttention does.
    for (; gi < globals.size() && globals[gi] < row0 + rows; ++gi) {
      const int64_t r = globals[gi] - row0;
      FuseGlobalQueries(spec, 1, H, d, buf.out + r * H * d, buf.lse + r * H,
                        o_all.data() + int64_t(gi) * H * d, l_all.data() + int64_t(gi) * H);
    }
    RETURN_IF_ERROR(sink.Done(row0, rows));
  }
  return Status::Ok();
}

int64_t AllowedPairs(int64_t n, int64_t heads, std::span<const int64_t> globals,
                     const AttentionSpec& spec) {
  const int64_t W = spec.window;
  const int64_t g = int64_t(globals.size());
  int64_t pairs = 0;
  size_t gi = 0;  // globals[0, gi) are <= i
  for (int64_t i = 0; i < n; ++i) {
    while (gi < globals.size() && globals[gi] <= i) ++gi;
    const int64_t lo = std::max<int64_t>(0, i - W + 1);
    const int64_t hi = spec.causal ? i + 1 : std::min(n, i + W);  // window = [lo, hi)
    const bool is_global = gi > 0 && globals[gi - 1] == i;
    if (is_global) {
      pairs += spec.causal ? i + 1 : n;
      continue;
    }
    const int64_t visible = spec.causal ? int64_t(gi) : g;
    const auto in_lo = std::lower_bound(globals.begin(), globals.end(), lo);
    const auto in_hi = std::lower_bound(globals.begin(), globals.end(), hi);
    pairs += (hi - lo) + visible - int64_t(in_hi - in_lo);
  }
  return pairs * heads;
}

}  // namespace longctx::attention
