// The backward of DistributedAttention (DESIGN.md §2, §6): the forward's exchanges mirrored.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "exchange.h"
#include "longctx/attention/attention_backward.h"
#include "longctx/worker/distributed_attention.h"

namespace longctx::worker {
namespace {

using attention::TokenView;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

Status DistributedAttentionBackward(comm::Communicator& comm, const attention::ShardPlan& plan,
                                    std::span<const int64_t> globals,
                                    const attention::AttentionSpec& spec, const ShardTensors& shard,
                                    const AttentionGradInputs& in, AttentionGrads* grads,
                                    const attention::ExecOptions& exec, DistributedStats* stats_out,
                                    DistributedWorkspace* workspace) {
  const auto t_start = Clock::now();
  const int P = comm.size(), me = comm.rank();
  if (plan.ranks() != P || plan.window != spec.window || plan.causal != spec.causal) {
    return InvalidArgument("attention backward: the shard plan does not match the call");
  }
  const int64_t s = plan.begin(me), e = plan.end(me), rows = e - s;
  const TokenView& q = shard.q;
  const TokenView& k = shard.k;
  const TokenView& v = shard.v;
  if (q.rows != rows || k.rows != rows || v.rows != rows) {
    return InvalidArgument("attention backward: rank {} owns {} rows but was given q {}, k {}, v {}",
                           me, rows, q.rows, k.rows, v.rows);
  }
  if (q.dtype != DType::kF32 || k.dtype != DType::kF32 || v.dtype != DType::kF32) {
    return InvalidArgument("attention backward: Q/K/V must be float32");
  }
  if (rows > 0 && (!in.out || !in.lse || !in.dout || !grads || !grads->dq || !grads->dk ||
                   !grads->dv)) {
    return InvalidArgument("attention backward: out, lse, dout and the gradients are required");
  }
  if (in.handicap.active() && in.entropy_weight != 0.0f) {
    return InvalidArgument("attention backward: a key handicap and the entropy term together "
                           "are not supported");
  }
  const int64_t H = q.heads, Hkv = k.heads, d = q.head_dim, E = Hkv * d;
  const int64_t g = int64_t(globals.size());
  const bool weighted = spec.fusion == attention::Fusion::kWeighted;
  const auto deadline = comm::DeadlineIn(comm::DefaultTimeout());
  DistributedWorkspace local_ws;
  DistributedWorkspace& ws = workspace ? *workspace : local_ws;
  DistributedStats st;
  st.rank = me;
  st.rows = rows;
  const auto [gi0, gi1] = internal::GlobalsIn(globals, s, e);
  const int64_t mine = gi1 - gi0;
  st.globals_owned = mine;

  // ---- 1. the forward's exchanges: halo K/V and the globals' K/V/Q ------------------------
  std::vector<comm::RequestPtr> halo;
  RETURN_IF_ERROR(internal::PostHalo(comm, plan, k, v, ws, &halo, &st));
  RETURN_IF_ERROR(internal::GatherGlobals(comm, plan, globals, q, k, v, ws, deadline, &st));
  auto t0 = Clock::now();
  RETURN_IF_ERROR(comm::WaitAll(halo, deadline));
  st.halo.seconds += Since(t0);

  // Keys [k0, k1) contiguous: left halo | own rows | right halo (float32 rows of E).
  const auto [k0, k1] = rows > 0 ? plan.KeyRange(me) : std::pair<int64_t, int64_t>{s, s};
  const int64_t nk = k1 - k0, own0 = s - k0;
  std::vector<float> keys_k(size_t(nk * E)), keys_v(keys_k.size());
  if (rows > 0) {
    std::memcpy(keys_k.data(), ws.left_k.data(), ws.left_k.size());
    std::memcpy(keys_v.data(), ws.left_v.data(), ws.left_v.size());
    std::memcpy(keys_k.data() + own0 * E, k.Row(0), sizeof(float) * rows * E);
    std::memcpy(keys_v.data() + own0 * E, v.Row(0), sizeof(float) * rows * E);
    std::memcpy(keys_k.data() + (own0 + rows) * E, ws.right_k.data(), ws.right_k.size());
    std::memcpy(keys_v.data() + (own0 + rows) * E, ws.right_v.data(), ws.right_v.size());
  }
  std::vector<float> ext_dk(keys_k.size(), 0.0f), ext_dv(keys_k.size(), 0.0f);
  // The reduced block: [g][H*d] dQ of global queries | [g][E] dK | [g][E] dV of global keys.
  std::vector<float> reduced(size_t(g * (H * d + 2 * E)), 0.0f);
  float* dq_g = reduced.data();
  float* dgk = dq_g + g * H * d;
  float* dgv = dgk + g * E;
  std::vector<float> window_dot(weighted ? size_t(rows * H) : 0, 0.0f);
  const TokenView gk = internal::RowsView(k, ws.gk.data(), g);
  const TokenView gv = internal::RowsView(v, ws.gv.data(), g);

  // ---- 2. own queries over the window keys and the global keys -----------------------------
  t0 = Clock::now();
  if (rows > 0) {
    std::fill_n(grads->dq, rows * H * d, 0.0f);
    attention::WindowGlobalGradArgs wa;
    wa.q = q;
    wa.k = TokenView::Dense(keys_k.data(), DType::kF32, nk, Hkv, d);
    wa.v = TokenView::Dense(keys_v.data(), DType::kF32, nk, Hkv, d);
    wa.gk = gk;
    wa.gv = gv;
    wa.q_pos0 = s;
    wa.kv_pos0 = k0;
    wa.seq_len = plan.n;
    wa.global_pos = globals;
    wa.dout = in.dout;
    wa.dq = grads->dq;
    wa.dk = ext_dk.data();
    wa.dv = ext_dv.data();
    wa.dgk = dgk;
    wa.dgv = dgv;
    wa.window_dot = weighted ? window_dot.data() : nullptr;
    RETURN_IF_ERROR(attention::WindowGlobalBackward(wa, spec, exec));
  }
  st.compute_seconds += Since(t0);

  // ---- 3. global queries: their dO (scaled by the fusion weight), LSE and D to every rank ---
  // Row of a global query: [H*d] dout_all | [H] lse | [H] delta, where dout_all = c*dO with
  // c = 1 (union) or 1-A (weighted), and delta = rowsum(dout_all * O_all) = rowsum(dO*O) -
  // A*rowsum(dO*O_win) (weighted: O = A*O_win + (1-A)*O_all).
  const int64_t grow = H * d + 2 * H;
  std::vector<float> my_rows(size_t(mine * grow));
  const float c = weighted ? 1.0f - spec.alpha : 1.0f;
  for (int64_t i = 0; i < mine; ++i) {
    const int64_t t = globals[size_t(gi0 + i)] - s;
    float* row = my_rows.data() + i * grow;
    for (int64_t h = 0; h < H; ++h) {
      const float* o = in.out + (t * H + h) * d;
      const float* dout = in.dout + (t * H + h) * d;
      double dot = 0.0;
      for (int64_t x = 0; x < d; ++x) {
        row[h * d + x] = c * dout[x];
        dot += double(dout[x]) * double(o[x]);
      }
      if (weighted) dot -= double(spec.alpha) * double(window_dot[size_t(t * H + h)]);
      row[H * d + h] = in.lse[t * H + h];
      row[H * d + H + h] = float(dot);
    }
  }
  std::vector<float> all_rows;
  t0 = Clock::now();
  RETURN_IF_ERROR(internal::GatherGlobalRows(comm, plan, globals, my_rows.data(), grow, &all_rows,
                                             deadline));
  st.global_q.seconds += Since(t0);
  st.global_q.received += size_t((g - mine) * grow) * sizeof(float);
  st.global_q.min_received += size_t((g - mine) * grow) * sizeof(float);
  st.global_q.sent += size_t(mine * grow) * sizeof(float) * size_t(P - 1);
  // Unpack into [g][H*d] dout, [g][H] lse, [g][H] delta.
  std::vector<float> g_dout(size_t(g * H * d)), g_lse(size_t(g * H)), g_delta(size_t(g * H));
  for (int64_t i = 0; i < g; ++i) {
    const float* row = all_rows.data() + i * grow;
    std::copy_n(row, H * d, g_dout.data() + i * H * d);
    std::copy_n(row + H * d, H, g_lse.data() + i * H);
    std::copy_n(row + H * d + H, H, g_delta.data() + i * H);
  }

  const int64_t vis0 = internal::FirstVisibleGlobal(plan, globals, me);
  const int64_t nvis = g - vis0;
  const TokenView gq = TokenView{ws.gq.data() + size_t(vis0 * H * d) * sizeof(float), DType::kF32,
                                 nvis, H, d, H * d};
  // Entropy of the global queries' rows: H_i = L_i - sum_j P_ij s_ij, the sum reduced over ranks.
  std::vector<float> g_entropy, g_coef;
  grads->entropy_sum = 0.0;
  if (in.entropy_weight != 0.0f && g > 0) {
    std::vector<double> moment(size_t(g * H), 0.0);
    if (rows > 0 && nvis > 0) {
      std::vector<float> part(size_t(nvis * H));
      attention::DensePartialArgs pa;
      pa.q = gq;
      pa.k = k;
      pa.v = v;
      pa.q_pos = globals.subspan(size_t(vis0));
      pa.kv_pos0 = s;
      RETURN_IF_ERROR(attention::DensePartialScoreMoment(pa, g_lse.data() + vis0 * H, part.data(),
                                                          spec, exec));
      for (int64_t i = 0; i < nvis * H; ++i) moment[size_t(vis0 * H + i)] = part[size_t(i)];
    }
    RETURN_IF_ERROR(comm.AllReduce(moment.data(), moment.size(), comm::ReduceType::kF64,
                                   comm::ReduceOp::kSum, deadline));
    g_entropy.resize(size_t(g * H));
    g_coef.assign(size_t(g * H), in.entropy_weight);
    for (int64_t i = 0; i < g * H; ++i) {
      g_entropy[size_t(i)] = float(double(g_lse[size_t(i)]) - moment[size_t(i)]);
      grads->entropy_sum += double(g_lse[size_t(i)]) - moment[size_t(i)];
    }
  }

  t0 = Clock::now();
  if (rows > 0 && nvis > 0) {
    attention::DensePartialGradArgs da;
    da.q = gq;
    da.q_pos = globals.subspan(size_t(vis0));
    da.dout = g_dout.data() + vis0 * H * d;
    da.delta = g_delta.data() + vis0 * H;
    if (!g_coef.empty()) {
      da.entropy_coef = g_coef.data() + vis0 * H;
      da.entropy = g_entropy.data() + vis0 * H;
    }
    da.dq = dq_g + vis0 * H * d;
    // A handicapped key's probability is exp(s - nats - L) = exp(s - (L + nats)): its segment
    // runs with the LSE raised by the handicap (the forward's simulated dilution).
    std::vector<float> raised_lse;
    if (in.handicap.active()) {
      raised_lse.assign(g_lse.begin() + vis0 * H, g_lse.end());
      for (float& l : raised_lse) l += in.handicap.nats;
    }
    for (const internal::KeySegment& seg : internal::HandicapSegments(s, e, in.handicap)) {
      const int64_t off = seg.begin - s, len = seg.end - seg.begin;
      da.k = TokenView{k.Row(off), k.dtype, len, k.heads, k.head_dim, k.row_stride};
      da.v = TokenView{v.Row(off), v.dtype, len, v.heads, v.head_dim, v.row_stride};
      da.kv_pos0 = seg.begin;
      da.lse = seg.handicapped ? raised_lse.data() : g_lse.data() + vis0 * H;
      da.dk = ext_dk.data() + (own0 + off) * E;
      da.dv = ext_dv.data() + (own0 + off) * E;
      RETURN_IF_ERROR(attention::DensePartialBackward(da, spec, exec));
    }
  }
  st.compute_seconds += Since(t0);

  // ---- 4. global queries' dQ and global keys' dK/dV: reduced, then added by their owners ----
  t0 = Clock::now();
  if (g > 0) {
    RETURN_IF_ERROR(comm.AllReduce(reduced.data(), reduced.size(), comm::ReduceType::kF32,
                                   comm::ReduceOp::kSum, deadline));
  }
  st.partials.seconds += Since(t0);
  st.partials.sent += reduced.size() * sizeof(float);
  st.partials.received += reduced.size() * sizeof(float);
  st.partials.min_received += size_t(mine * (H * d + 2 * E)) * sizeof(float);
  for (int64_t i = 0; i < mine; ++i) {
    const int64_t gi = gi0 + i, t = globals[size_t(gi)] - s;
    float* dq = grads->dq + t * H * d;
    for (int64_t x = 0; x < H * d; ++x) dq[x] += dq_g[gi * H * d + x];
    float* dk = ext_dk.data() + (own0 + t) * E;
    float* dv = ext_dv.data() + (own0 + t) * E;
    for (int64_t x = 0; x < E; ++x) dk[x] += dgk[gi * E + x];
    for (int64_t x = 0; x < E; ++x) dv[x] += dgv[gi * E + x];
  }

  // ---- 5. halo keys' dK/dV back to their owners ----------------------------------------------
  RETURN_IF_ERROR(internal::ReturnHaloGrads(
      comm, plan, E, ext_dk.data(), ext_dv.data(), ext_dk.data() + (own0 + rows) * E,
      ext_dv.data() + (own0 + rows) * E, ext_dk.data() + own0 * E, ext_dv.data() + own0 * E,
      deadline, &st));
  if (rows > 0) {
    std::copy_n(ext_dk.data() + own0 * E, rows * E, grads->dk);
    std::copy_n(ext_dv.data() + own0 * E, rows * E, grads->dv);
  }
  st.total_seconds = Since(t_start);
  if (stats_out) *stats_out = st;
  return Status::Ok();
}

}  // namespace longctx::worker
