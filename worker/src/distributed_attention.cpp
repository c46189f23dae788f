#include "longctx/worker/distributed_attention.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "longctx/attention/lse_merge.h"

namespace longctx::worker {
namespace {

using attention::TokenView;
using Clock = std::chrono::steady_clock;

// Message tags of one attention call. A pair of ranks exchanges at most one message per tag.
constexpr int kTagHaloK = 101;
constexpr int kTagHaloV = 102;
constexpr int kTagPartials = 103;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Index range [first, last) of the sorted globals that fall in [lo, hi).
std::pair<int64_t, int64_t> GlobalsIn(std::span<const int64_t> g, int64_t lo, int64_t hi) {
  const auto a = std::lower_bound(g.begin(), g.end(), lo);
  const auto b = std::lower_bound(g.begin(), g.end(), hi);
  return {int64_t(a - g.begin()), int64_t(b - g.begin())};
}

// The global queries whose partial over rank r's keys is non-empty: indexes [first, g).
// Causal: a query at p reads keys <= p, so only globals at or after the shard's start.
int64_t FirstVisibleGlobal(const attention::ShardPlan& plan, std::span<const int64_t> g, int r) {
  if (plan.rows(r) == 0) return int64_t(g.size());
  if (!plan.causal) return 0;
  return int64_t(std::lower_bound(g.begin(), g.end(), plan.begin(r)) - g.begin());
}

TokenView RowsView(const TokenView& t, const std::byte* base, int64_t rows) {
  return TokenView{base, t.dtype, rows, t.heads, t.head_dim, t.heads * t.head_dim};
}

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
  // Halo rows land in two small buffers, [k0, s) and [e, k1) (< W rows each); the own rows
  // are never copied wholesale.
  const auto [k0, k1] = plan.KeyRange(me);
  auto& left_k = ws.left_k;
  auto& left_v = ws.left_v;
  auto& right_k = ws.right_k;
  auto& right_v = ws.right_v;
  left_k.resize(rows > 0 ? size_t(s - k0) * kv_row : 0);
  left_v.resize(left_k.size());
  right_k.resize(rows > 0 ? size_t(k1 - e) * kv_row : 0);
  right_v.resize(right_k.size());
  std::vector<comm::RequestPtr> halo;
  for (int r = 0; r < P; ++r) {
    if (r == me) continue;
    // What I need from r: my key range intersected with its rows.
    const int64_t lo = std::max(k0, plan.begin(r)), hi = std::min(k1, plan.end(r));
    if (rows > 0 && lo < hi) {
      const size_t bytes = size_t(hi - lo) * kv_row;
      const bool left = hi <= s;
      const size_t offset = size_t(left ? lo - k0 : lo - e) * kv_row;
      for (auto [buf, tag] : {std::pair{left ? &left_k : &right_k, kTagHaloK},
                              std::pair{left ? &left_v : &right_v, kTagHaloV}}) {
        ASSIGN_OR_RETURN(comm::RequestPtr req,
                         comm.Irecv(comm::HostBuffer(buf->data() + offset, bytes), r, tag));
        halo.push_back(std::move(req));
      }
      st.halo.received += 2 * bytes;
      st.halo_rows += hi - lo;
    }
    // What r needs from me: its key range intersected with my rows.
    const auto [rk0, rk1] = plan.KeyRange(r);
    const int64_t slo = std::max(rk0, s), shi = std::min(rk1, e);
    if (plan.rows(r) > 0 && slo < shi) {
      const size_t bytes = size_t(shi - slo) * kv_row;
      ASSIGN_OR_RETURN(comm::RequestPtr rk,
                       comm.Isend(comm::HostBuffer(k.Row(slo - s), bytes), r, kTagHaloK));
      ASSIGN_OR_RETURN(comm::RequestPtr rv,
                       comm.Isend(comm::HostBuffer(shard.v.Row(slo - s), bytes), r, kTagHaloV));
      halo.push_back(std::move(rk));
      halo.push_back(std::move(rv));
      st.halo.sent += 2 * bytes;
    }
  }
  st.halo.min_received = rows > 0 ? 2 * size_t((k1 - k0) - rows) * kv_row : 0;

  // ---- 2. global K/V and Q: one all-gather, each rank contributing the globals it owns -----
  // Rank r's block is [its global K rows | V rows | Q rows]; one collective instead of three
  // (OpenMPI's non-blocking collectives cost ~0.2 ms each here, more than the bytes).
  auto t0 = Clock::now();
  const size_t global_row = 2 * kv_row + q_row;
  std::vector<size_t> counts(static_cast<size_t>(P));
  std::vector<int64_t> first_global(static_cast<size_t>(P) + 1, 0);
  for (int r = 0; r < P; ++r) {
    const auto [a, b] = GlobalsIn(globals, plan.begin(r), plan.end(r));
    counts[size_t(r)] = size_t(b - a) * global_row;
    first_global[size_t(r)] = a;
  }
  first_global[size_t(P)] = g;
  const int64_t mine = gi1 - gi0;
  auto& block = ws.block;
  auto& gathered = ws.gathered;
  block.resize(size_t(mine) * global_row);
  gathered.resize(size_t(g) * global_row);
  for (int64_t i = 0; i < mine; ++i) {
    const int64_t t = globals[size_t(gi0 + i)] - s;
    std::memcpy(block.data() + size_t(i) * kv_row, k.Row(t), kv_row);
    std::memcpy(block.data() + size_t(mine) * kv_row + size_t(i) * kv_row, shard.v.Row(t), kv_row);
    std::memcpy(block.data() + 2 * size_t(mine) * kv_row + size_t(i) * q_row, q.Row(t), q_row);
  }
  RETURN_IF_ERROR(comm.AllGatherV(comm::HostBuffer(block.data(), block.size()),
                                  comm::HostBuffer(gathered.data(), gathered.size()), counts,
                                  deadline));
  // Unpack into position-ordered K, V and Q of all g globals.
  auto& gk = ws.gk;
  auto& gv = ws.gv;
  auto& gq = ws.gq;
  gk.resize(size_t(g) * kv_row);
  gv.resize(gk.size());
  gq.resize(size_t(g) * q_row);
  size_t offset = 0;
  for (int r = 0; r < P; ++r) {
    const int64_t a = first_global[size_t(r)];
    const size_t cnt = size_t(first_global[size_t(r) + 1] - a);
    const std::byte* src = gathered.data() + offset;
    if (cnt == 0) continue;  // (and no memcpy from a null, empty buffer)
    std::memcpy(gk.data() + size_t(a) * kv_row, src, cnt * kv_row);
    std::memcpy(gv.data() + size_t(a) * kv_row, src + cnt * kv_row, cnt * kv_row);
    std::memcpy(gq.data() + size_t(a) * q_row, src + 2 * cnt * kv_row, cnt * q_row);
    offset += counts[size_t(r)];
  }
  st.global_kv.seconds = Since(t0);  // the one gather; global_q's share is reported here too
  st.global_kv.received = st.global_kv.min_received = 2 * size_t(g - mine) * kv_row;
  st.global_kv.sent = 2 * size_t(mine) * kv_row * size_t(P - 1);
  st.global_q.received = st.global_q.min_received = size_t(g - mine) * q_row;
  st.global_q.sent = size_t(mine) * q_row * size_t(P - 1);

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
    RETURN_IF_ERROR(window_pass(ia, ib, k, shard.v, s));
  }
  st.compute_seconds += Since(t0);
  t0 = Clock::now();
  RETURN_IF_ERROR(comm::WaitAll(halo, deadline));
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
  RETURN_IF_ERROR(edge_pass(s, ia));
  RETURN_IF_ERROR(edge_pass(ib, e));

  // ---- 4. global queries: my partial (O, L) of every global query that sees my keys -------
  const int64_t vis0 = FirstVisibleGlobal(plan, globals, me);
  auto& part = ws.part;  // [g-vis0][H][d] O, then [g-vis0][H] L
  part.resize(size_t(g - vis0) * H * (d + 1));
  float* part_o = part.data();
  float* part_l = part.data() + size_t(g - vis0) * H * d;
  if (g - vis0 > 0 && !options.exchange_only) {
    attention::DensePartialArgs pa;
    pa.q = TokenView{gq.data() + size_t(vis0) * q_row, q.dtype, g - vis0, H, d, H * d};
    pa.k = k;
    pa.v = shard.v;
    pa.q_pos = globals.subspan(size_t(vis0));
    pa.kv_pos0 = s;
    pa.out = part_o;
    pa.lse = part_l;
    RETURN_IF_ERROR(attention::DensePartialPass(pa, spec, exec));
  }
  st.compute_seconds += Since(t0);

  // Send each owner the rows of its globals; receive, from every rank whose keys my globals see,
  // the partials of my globals. Messages are [cnt][H][d] O followed by [cnt][H] L.
  t0 = Clock::now();
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
  st.partials.seconds = Since(t0);

  // ---- 5. merge in rank order at the owner, then fuse with the window component -----------
  t0 = Clock::now();
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
