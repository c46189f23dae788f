#include "longctx/worker/distributed_attention.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "exchange.h"
#include "longctx/attention/lse_merge.h"
#include "longctx/core/trace.h"

namespace longctx::worker {
namespace {

using attention::TokenView;
using Clock = std::chrono::steady_clock;

// Message tag of the partials. A pair of ranks exchanges at most one message per tag.
constexpr int kTagPartials = 103;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

using internal::FirstVisibleGlobal;
using internal::GlobalsIn;
using internal::RowsView;

}  // namespace

Status DistributedAttention(comm::Communicator& comm, const attention::ShardPlan& plan,
                            std::span<const int64_t> globals, const attention::AttentionSpec& spec,
                            const ShardTensors& shard, float* out, float* lse,
                            const attention::ExecOptions& exec, DistributedStats* stats_out,
                            const DistributedOptions& options) {
  const auto t_start = Clock::now();
  const int P = comm.size(), me = comm.rank();
  if (plan.ranks() != P) {
    return InvalidArgument("shard plan has {} ranks, the communicator {}", plan.ranks(), P);
  }
  if (plan.window != spec.window || plan.causal != spec.causal) {
    return InvalidArgument("shard plan was made for window {} {}, the call uses window {} {}",
                           plan.window, plan.causal ? "causal" : "bidirectional", spec.window,
                           spec.causal ? "causal" : "bidirectional");
  }
  const int64_t s = plan.begin(me), e = plan.end(me), rows = e - s;
  const TokenView& q = shard.q;
  const TokenView& k = shard.k;
  if (q.rows != rows || k.rows != rows || shard.v.rows != rows) {
    return InvalidArgument("rank {} owns {} rows but was given q {}, k {}, v {}", me, rows, q.rows,
                           k.rows, shard.v.rows);
  }
  if (k.dtype != shard.v.dtype || k.heads != shard.v.heads || k.head_dim != q.head_dim ||
      shard.v.head_dim != q.head_dim || k.heads < 1 || q.heads % k.heads != 0) {
    return InvalidArgument("q/k/v shard shapes disagree: q [{}, {}, {}], k [{}, {}, {}], v [{}, {}, {}]",
                           q.rows, q.heads, q.head_dim, k.rows, k.heads, k.head_dim, shard.v.rows,
                           shard.v.heads, shard.v.head_dim);
  }
  for (size_t i = 0; i < globals.size(); ++i) {
    if (globals[i] < 0 || globals[i] >= plan.n || (i > 0 && globals[i] <= globals[i - 1])) {
      return InvalidArgument("globals must be sorted, unique and in [0, {})", plan.n);
    }
  }
  const int64_t H = q.heads, Hkv = k.heads, d = q.head_dim;
  const int64_t g = int64_t(globals.size());
  const size_t kv_row = size_t(Hkv * d) * DTypeSize(k.dtype);  // bytes per K (or V) row
  const size_t q_row = size_t(H * d) * DTypeSize(q.dtype);
  const auto deadline = comm::DeadlineIn(comm::DefaultTimeout());

  DistributedWorkspace local_ws;
  DistributedWorkspace& ws = options.workspace ? *options.workspace : local_ws;
  DistributedStats st;
  st.rank = me;
  st.rows = rows;
  const auto [gi0, gi1] = GlobalsIn(globals, s, e);  // my globals: indexes [gi0, gi1)
  st.globals_owned = gi1 - gi0;

  // ---- 1. halo: post every receive and send before anything else -------------------------
  const auto [k0, k1] = plan.KeyRange(me);
  std::vector<comm::RequestPtr> halo;
  trace::TraceSpan halo_post("halo_post", "comm");
  RETURN_IF_ERROR(internal::PostHalo(comm, plan, k, shard.v, ws, &halo, &st));
  halo_post.End();
  const auto& left_k = ws.left_k;
  const auto& left_v = ws.left_v;
  const auto& right_k = ws.right_k;
  const auto& right_v = ws.right_v;

  // ---- 2. global K/V and Q: one all-gather, each rank contributing the globals it owns -----
  trace::TraceSpan global_exchange("global_exchange", "comm");
  RETURN_IF_ERROR(internal::GatherGlobals(comm, plan, globals, q, k, shard.v, ws, deadline, &st));
  global_exchange.End();
  const int64_t mine = gi1 - gi0;
  const auto& gk = ws.gk;
  const auto& gv = ws.gv;
  const auto& gq = ws.gq;
  auto t0 = Clock::now();

  // ---- 3. own queries: the interior while the halo is in flight, then the edges -----------
  const TokenView gkv = RowsView(k, gk.data(), g), gvv = RowsView(shard.v, gv.data(), g);
  auto window_pass = [&](int64_t a, int64_t b, const TokenView& kv_k, const TokenView& kv_v,
                         int64_t kv_pos0) -> Status {
    if (a >= b || options.exchange_only) return Status::Ok();
    attention::WindowGlobalArgs wa;
    wa.q = TokenView{q.Row(a - s), q.dtype, b - a, H, d, q.row_stride};
    wa.k = kv_k;
    wa.v = kv_v;
    wa.gk = gkv;
    wa.gv = gvv;
    wa.q_pos0 = a;
    wa.kv_pos0 = kv_pos0;
    wa.seq_len = plan.n;
    wa.global_pos = globals;
    wa.out = out + (a - s) * H * d;
    wa.lse = lse + (a - s) * H;
    return attention::WindowGlobalPass(wa, spec, exec);
  };
  // Interior: queries whose whole window lies in my rows [s, e).
  int64_t ia = s, ib = e;
  if (k0 < s) ia = std::min(e, s + spec.window - 1);
  if (k1 > e) ib = std::max(ia, e - spec.window + 1);
  t0 = Clock::now();
  if (rows > 0) {
    trace::TraceSpan span("attn_interior", "attention", "queries", ib - ia);
    RETURN_IF_ERROR(window_pass(ia, ib, k, shard.v, s));
  }
  st.compute_seconds += Since(t0);
  t0 = Clock::now();
  trace::TraceSpan halo_wait("halo_wait", "comm");
  RETURN_IF_ERROR(comm::WaitAll(halo, deadline));
  halo_wait.End();
  st.halo.seconds = Since(t0);
  t0 = Clock::now();
  // Edge queries [a, b): their keys, assembled from the halo buffers and the own rows
  // (at most 3W rows).
  auto& edge_k = ws.edge_k;
  auto& edge_v = ws.edge_v;
  auto edge_pass = [&](int64_t a, int64_t b) -> Status {
    if (a >= b) return Status::Ok();
    const int64_t lo = std::max(k0, a - spec.window + 1);
    const int64_t hi = spec.causal ? b : std::min(k1, b + spec.window - 1);
    edge_k.resize(size_t(hi - lo) * kv_row);
    edge_v.resize(edge_k.size());
    auto copy = [&](int64_t from, int64_t to, const std::byte* src_k, const std::byte* src_v,
                    int64_t src_pos0) {
      if (from >= to) return;
      const size_t dst = size_t(from - lo) * kv_row, src = size_t(from - src_pos0) * kv_row;
      std::memcpy(edge_k.data() + dst, src_k + src, size_t(to - from) * kv_row);
      std::memcpy(edge_v.data() + dst, src_v + src, size_t(to - from) * kv_row);
    };
    copy(lo, std::min(hi, s), left_k.data(), left_v.data(), k0);
    copy(std::max(lo, s), std::min(hi, e), k.Row(0), shard.v.Row(0), s);
    copy(std::max(lo, e), hi, right_k.data(), right_v.data(), e);
    return window_pass(a, b, RowsView(k, edge_k.data(), hi - lo),
                       RowsView(k, edge_v.data(), hi - lo), lo);
  };
  trace::TraceSpan edges("attn_edges", "attention", "queries", (ia - s) + (e - ib));
  RETURN_IF_ERROR(edge_pass(s, ia));
  RETURN_IF_ERROR(edge_pass(ib, e));
  edges.End();

  // ---- 4. global queries: my partial (O, L) of every global query that sees my keys -------
  const int64_t vis0 = FirstVisibleGlobal(plan, globals, me);
  auto& part = ws.part;  // [g-vis0][H][d] O, then [g-vis0][H] L
  part.resize(size_t(g - vis0) * H * (d + 1));
  float* part_o = part.data();
  float* part_l = part.data() + size_t(g - vis0) * H * d;
  if (g - vis0 > 0 && !options.exchange_only) {
    attention::DensePartialArgs pa;
    pa.q = TokenView{gq.data() + size_t(vis0) * q_row, q.dtype, g - vis0, H, d, H * d};
    pa.q_pos = globals.subspan(size_t(vis0));
    trace::TraceSpan span("attn_global_partial", "attention", "queries", g - vis0);
    const auto segments = internal::HandicapSegments(s, e, options.handicap);
    if (segments.size() == 1 && !segments[0].handicapped) {
      pa.k = k;
      pa.v = shard.v;
      pa.kv_pos0 = s;
      pa.out = part_o;
      pa.lse = part_l;
      RETURN_IF_ERROR(attention::DensePartialPass(pa, spec, exec));
    } else {
      // Simulated dilution (training): one partial per segment, the handicapped ones' LSE
      // lowered by the handicap (every logit of the segment minus `nats`), merged in order.
      const int64_t nq = g - vis0;
      std::fill_n(part_o, nq * H * d, 0.0f);
      std::fill_n(part_l, nq * H, -std::numeric_limits<float>::infinity());
      std::vector<float> seg_o(size_t(nq * H * d)), seg_l(size_t(nq * H));
      for (const internal::KeySegment& seg : segments) {
        const int64_t off = seg.begin - s, len = seg.end - seg.begin;
        pa.k = TokenView{k.Row(off), k.dtype, len, k.heads, k.head_dim, k.row_stride};
        pa.v = TokenView{shard.v.Row(off), shard.v.dtype, len, shard.v.heads, shard.v.head_dim,
                         shard.v.row_stride};
        pa.kv_pos0 = seg.begin;
        pa.out = seg_o.data();
        pa.lse = seg_l.data();
        RETURN_IF_ERROR(attention::DensePartialPass(pa, spec, exec));
        if (seg.handicapped) {
          for (float& l : seg_l) l -= options.handicap.nats;
        }
        attention::MergeStates(part_o, part_l, seg_o.data(), seg_l.data(), nq * H, d);
      }
    }
  }
  st.compute_seconds += Since(t0);

  // Send each owner the rows of its globals; receive, from every rank whose keys my globals see,
  // the partials of my globals. Messages are [cnt][H][d] O followed by [cnt][H] L.
  t0 = Clock::now();
  trace::TraceSpan partials_exchange("partials_exchange", "comm");
  auto& send_bufs = ws.send_bufs;
  auto& recv_bufs = ws.recv_bufs;
  send_bufs.resize(static_cast<size_t>(P));
  recv_bufs.resize(static_cast<size_t>(P));
  std::vector<comm::RequestPtr> reqs;
  for (int r = 0; r < P; ++r) {
    if (r == me) continue;
    const auto [a, b] = GlobalsIn(globals, plan.begin(r), plan.end(r));
    const int64_t lo = std::max(a, vis0), cnt = b - lo;
    if (cnt > 0) {  // r owns globals that see my keys
      std::vector<float>& buf = send_bufs[size_t(r)];
      buf.resize(size_t(cnt) * H * (d + 1));
      std::memcpy(buf.data(), part_o + size_t(lo - vis0) * H * d, sizeof(float) * cnt * H * d);
      std::memcpy(buf.data() + size_t(cnt) * H * d, part_l + size_t(lo - vis0) * H,
                  sizeof(float) * cnt * H);
      ASSIGN_OR_RETURN(comm::RequestPtr req,
                       comm.Isend(comm::HostBuffer(buf.data(), buf.size() * sizeof(float)), r,
                                  kTagPartials));
      reqs.push_back(std::move(req));
      st.partials.sent += buf.size() * sizeof(float);
    }
    const int64_t rvis = FirstVisibleGlobal(plan, globals, r);
    const int64_t rlo = std::max(gi0, rvis), rcnt = gi1 - rlo;
    if (rcnt > 0) {  // r's keys are seen by my globals [rlo, gi1)
      std::vector<float>& buf = recv_bufs[size_t(r)];
      buf.resize(size_t(rcnt) * H * (d + 1));
      ASSIGN_OR_RETURN(comm::RequestPtr req,
                       comm.Irecv(comm::HostBuffer(buf.data(), buf.size() * sizeof(float)), r,
                                  kTagPartials));
      reqs.push_back(std::move(req));
      st.partials.received += buf.size() * sizeof(float);
    }
  }
  st.partials.min_received = st.partials.received;  // exactly the non-empty partials of mine
  RETURN_IF_ERROR(comm::WaitAll(reqs, deadline));
  partials_exchange.End();
  st.partials.seconds = Since(t0);

  // ---- 5. merge in rank order at the owner, then fuse with the window component -----------
  t0 = Clock::now();
  trace::TraceSpan merge_span("merge", "attention", "globals", mine);
  if (mine > 0) {
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    auto& o_all = ws.o_all;
    auto& l_all = ws.l_all;
    o_all.assign(size_t(mine) * H * d, 0.0f);
    l_all.assign(size_t(mine) * H, kNegInf);
    for (int r = 0; r < P; ++r) {
      const int64_t rvis = FirstVisibleGlobal(plan, globals, r);
      const int64_t rlo = std::max(gi0, rvis), rcnt = gi1 - rlo;
      if (rcnt <= 0) continue;
      const float *po, *pl;
      if (r == me) {
        po = part_o + size_t(rlo - vis0) * H * d;
        pl = part_l + size_t(rlo - vis0) * H;
      } else {
        po = recv_bufs[size_t(r)].data();
        pl = po + size_t(rcnt) * H * d;
      }
      attention::MergeStates(o_all.data() + size_t(rlo - gi0) * H * d,
                             l_all.data() + size_t(rlo - gi0) * H, po, pl, rcnt * H, d);
    }
    auto& o_win = ws.o_win;
    auto& l_win = ws.l_win;
    o_win.resize(o_all.size());
    l_win.resize(l_all.size());
    for (int64_t i = 0; i < mine; ++i) {
      const int64_t t = globals[size_t(gi0 + i)] - s;
      std::copy_n(out + t * H * d, H * d, o_win.data() + i * H * d);
      std::copy_n(lse + t * H, H, l_win.data() + i * H);
    }
    attention::FuseGlobalQueries(spec, mine, H, d, o_win.data(), l_win.data(), o_all.data(),
                                 l_all.data());
    for (int64_t i = 0; i < mine; ++i) {
      const int64_t t = globals[size_t(gi0 + i)] - s;
      std::copy_n(o_win.data() + i * H * d, H * d, out + t * H * d);
      std::copy_n(l_win.data() + i * H, H, lse + t * H);
    }
  }
  st.compute_seconds += Since(t0);
  st.total_seconds = Since(t_start);
  if (stats_out) *stats_out = st;
  return Status::Ok();
}

std::string FormatStats(const DistributedStats& s) {
  auto mib = [](uint64_t b) { return double(b) / (1024.0 * 1024.0); };
  auto line = [&](std::string_view name, const PhaseTraffic& p) {
    const double ratio = p.min_received ? double(p.received) / double(p.min_received) : 1.0;
    return fmt::format("  rank {:>3} {:<10} sent {:>9.3f} MiB  recv {:>9.3f} MiB  min recv {:>9.3f} "
                       "MiB ({:.2f}x)  wait {:.4f} s\n",
                       s.rank, name, mib(p.sent), mib(p.received), mib(p.min_received), ratio,
                       p.seconds);
  };
  std::string out = fmt::format(
      "  rank {:>3} rows {} halo_rows {} globals_owned {} compute {:.4f} s total {:.4f} s\n",
      s.rank, s.rows, s.halo_rows, s.globals_owned, s.compute_seconds, s.total_seconds);
  out += line("halo", s.halo);
  out += line("global_kv", s.global_kv);
  out += line("global_q", s.global_q);
  out += line("partials", s.partials);
  return out;
}

}  // namespace longctx::worker
