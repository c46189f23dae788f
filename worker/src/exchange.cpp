#include "exchange.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace longctx::worker::internal {
namespace {

using attention::TokenView;
using Clock = std::chrono::steady_clock;

// Message tags. A pair of ranks exchanges at most one message per tag per call.
constexpr int kTagHaloK = 101;
constexpr int kTagHaloV = 102;
constexpr int kTagHaloGrad = 104;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

std::pair<int64_t, int64_t> GlobalsIn(std::span<const int64_t> g, int64_t lo, int64_t hi) {
  const auto a = std::lower_bound(g.begin(), g.end(), lo);
  const auto b = std::lower_bound(g.begin(), g.end(), hi);
  return {int64_t(a - g.begin()), int64_t(b - g.begin())};
}

int64_t FirstVisibleGlobal(const attention::ShardPlan& plan, std::span<const int64_t> g, int r) {
  if (plan.rows(r) == 0) return int64_t(g.size());
  if (!plan.causal) return 0;
  return int64_t(std::lower_bound(g.begin(), g.end(), plan.begin(r)) - g.begin());
}

std::vector<KeySegment> HandicapSegments(int64_t s, int64_t e, const KeyHandicap& h) {
  std::vector<KeySegment> out;
  int64_t at = s;
  if (h.active()) {
    for (const auto& [b0, b1] : h.spans) {
      const int64_t lo = std::max(b0, at), hi = std::min(b1, e);
      if (lo >= hi) continue;
      if (at < lo) out.push_back({at, lo, false});
      out.push_back({lo, hi, true});
      at = hi;
    }
  }
  if (at < e || out.empty()) out.push_back({at, e, false});
  return out;
}

TokenView RowsView(const TokenView& t, const std::byte* base, int64_t rows) {
  return TokenView{base, t.dtype, rows, t.heads, t.head_dim, t.heads * t.head_dim};
}

Status PostHalo(comm::Communicator& comm, const attention::ShardPlan& plan, const TokenView& k,
                const TokenView& v, DistributedWorkspace& ws,
                std::vector<comm::RequestPtr>* reqs, DistributedStats* st) {
  const int P = comm.size(), me = comm.rank();
  const int64_t s = plan.begin(me), e = plan.end(me), rows = e - s;
  const size_t kv_row = size_t(k.heads * k.head_dim) * DTypeSize(k.dtype);
  // Halo rows land in two small buffers, [k0, s) and [e, k1) (< W rows each); the own rows
  // are never copied wholesale.
  const auto [k0, k1] = plan.KeyRange(me);
  ws.left_k.resize(rows > 0 ? size_t(s - k0) * kv_row : 0);
  ws.left_v.resize(ws.left_k.size());
  ws.right_k.resize(rows > 0 ? size_t(k1 - e) * kv_row : 0);
  ws.right_v.resize(ws.right_k.size());
  for (int r = 0; r < P; ++r) {
    if (r == me) continue;
    // What I need from r: my key range intersected with its rows.
    const int64_t lo = std::max(k0, plan.begin(r)), hi = std::min(k1, plan.end(r));
    if (rows > 0 && lo < hi) {
      const size_t bytes = size_t(hi - lo) * kv_row;
      const bool left = hi <= s;
      const size_t offset = size_t(left ? lo - k0 : lo - e) * kv_row;
      for (auto [buf, tag] : {std::pair{left ? &ws.left_k : &ws.right_k, kTagHaloK},
                              std::pair{left ? &ws.left_v : &ws.right_v, kTagHaloV}}) {
        ASSIGN_OR_RETURN(comm::RequestPtr req,
                         comm.Irecv(comm::HostBuffer(buf->data() + offset, bytes), r, tag));
        reqs->push_back(std::move(req));
      }
      st->halo.received += 2 * bytes;
      st->halo_rows += hi - lo;
    }
    // What r needs from me: its key range intersected with my rows.
    const auto [rk0, rk1] = plan.KeyRange(r);
    const int64_t slo = std::max(rk0, s), shi = std::min(rk1, e);
    if (plan.rows(r) > 0 && slo < shi) {
      const size_t bytes = size_t(shi - slo) * kv_row;
      ASSIGN_OR_RETURN(comm::RequestPtr rk,
                       comm.Isend(comm::HostBuffer(k.Row(slo - s), bytes), r, kTagHaloK));
      ASSIGN_OR_RETURN(comm::RequestPtr rv,
                       comm.Isend(comm::HostBuffer(v.Row(slo - s), bytes), r, kTagHaloV));
      reqs->push_back(std::move(rk));
      reqs->push_back(std::move(rv));
      st->halo.sent += 2 * bytes;
    }
  }
  st->halo.min_received = rows > 0 ? 2 * size_t((k1 - k0) - rows) * kv_row : 0;
  return Status::Ok();
}

Status ReturnHaloGrads(comm::Communicator& comm, const attention::ShardPlan& plan,
                       int64_t kv_elems_per_row, const float* left_dk, const float* left_dv,
                       const float* right_dk, const float* right_dv, float* dk, float* dv,
                       comm::Deadline deadline, DistributedStats* st) {
  const int P = comm.size(), me = comm.rank();
  const int64_t s = plan.begin(me), e = plan.end(me), rows = e - s;
  const int64_t E = kv_elems_per_row;
  const auto [k0, k1] = plan.KeyRange(me);
  // Send: the rows of my halo that r owns, dK then dV in one message [2][cnt][E].
  std::vector<std::vector<float>> send(static_cast<size_t>(P)), recv(static_cast<size_t>(P));
  std::vector<comm::RequestPtr> reqs;
  for (int r = 0; r < P; ++r) {
    if (r == me) continue;
    const int64_t lo = std::max(k0, plan.begin(r)), hi = std::min(k1, plan.end(r));
    if (rows > 0 && lo < hi) {
      const bool left = hi <= s;
      const float* src_k = left ? left_dk + (lo - k0) * E : right_dk + (lo - e) * E;
      const float* src_v = left ? left_dv + (lo - k0) * E : right_dv + (lo - e) * E;
      std::vector<float>& buf = send[size_t(r)];
      buf.resize(size_t(2 * (hi - lo) * E));
      std::copy_n(src_k, (hi - lo) * E, buf.data());
      std::copy_n(src_v, (hi - lo) * E, buf.data() + (hi - lo) * E);
      ASSIGN_OR_RETURN(comm::RequestPtr req,
                       comm.Isend(comm::HostBuffer(buf.data(), buf.size() * sizeof(float)), r,
                                  kTagHaloGrad));
      reqs.push_back(std::move(req));
      st->halo.sent += buf.size() * sizeof(float);
    }
    const auto [rk0, rk1] = plan.KeyRange(r);
    const int64_t slo = std::max(rk0, s), shi = std::min(rk1, e);
    if (plan.rows(r) > 0 && slo < shi) {
      std::vector<float>& buf = recv[size_t(r)];
      buf.resize(size_t(2 * (shi - slo) * E));
      ASSIGN_OR_RETURN(comm::RequestPtr req,
                       comm.Irecv(comm::HostBuffer(buf.data(), buf.size() * sizeof(float)), r,
                                  kTagHaloGrad));
      reqs.push_back(std::move(req));
      st->halo.received += buf.size() * sizeof(float);
    }
  }
  const auto t0 = Clock::now();
  RETURN_IF_ERROR(comm::WaitAll(reqs, deadline));
  st->halo.seconds += Since(t0);
  for (int r = 0; r < P; ++r) {  // rank order: the sum is repeatable
    if (recv[size_t(r)].empty()) continue;
    const auto [rk0, rk1] = plan.KeyRange(r);
    const int64_t slo = std::max(rk0, s), shi = std::min(rk1, e), cnt = shi - slo;
    const float* src = recv[size_t(r)].data();
    float* dst_k = dk + (slo - s) * E;
    float* dst_v = dv + (slo - s) * E;
    for (int64_t i = 0; i < cnt * E; ++i) dst_k[i] += src[i];
    for (int64_t i = 0; i < cnt * E; ++i) dst_v[i] += src[cnt * E + i];
  }
  return Status::Ok();
}

Status GatherGlobals(comm::Communicator& comm, const attention::ShardPlan& plan,
                     std::span<const int64_t> globals, const TokenView& q, const TokenView& k,
                     const TokenView& v, DistributedWorkspace& ws, comm::Deadline deadline,
                     DistributedStats* st) {
  // Rank r's block is [its global K rows | V rows | Q rows]; one collective instead of three
  // (OpenMPI's non-blocking collectives cost ~0.2 ms each here, more than the bytes).
  const auto t0 = Clock::now();
  const int P = comm.size(), me = comm.rank();
  const int64_t s = plan.begin(me), e = plan.end(me);
  const int64_t g = int64_t(globals.size());
  const size_t kv_row = size_t(k.heads * k.head_dim) * DTypeSize(k.dtype);
  const size_t q_row = size_t(q.heads * q.head_dim) * DTypeSize(q.dtype);
  const size_t global_row = 2 * kv_row + q_row;
  const auto [gi0, gi1] = GlobalsIn(globals, s, e);
  std::vector<size_t> counts(static_cast<size_t>(P));
  std::vector<int64_t> first_global(static_cast<size_t>(P) + 1, 0);
  for (int r = 0; r < P; ++r) {
    const auto [a, b] = GlobalsIn(globals, plan.begin(r), plan.end(r));
    counts[size_t(r)] = size_t(b - a) * global_row;
    first_global[size_t(r)] = a;
  }
  first_global[size_t(P)] = g;
  const int64_t mine = gi1 - gi0;
  ws.block.resize(size_t(mine) * global_row);
  ws.gathered.resize(size_t(g) * global_row);
  for (int64_t i = 0; i < mine; ++i) {
    const int64_t t = globals[size_t(gi0 + i)] - s;
    std::memcpy(ws.block.data() + size_t(i) * kv_row, k.Row(t), kv_row);
    std::memcpy(ws.block.data() + size_t(mine) * kv_row + size_t(i) * kv_row, v.Row(t), kv_row);
    std::memcpy(ws.block.data() + 2 * size_t(mine) * kv_row + size_t(i) * q_row, q.Row(t), q_row);
  }
  RETURN_IF_ERROR(comm.AllGatherV(comm::HostBuffer(ws.block.data(), ws.block.size()),
                                  comm::HostBuffer(ws.gathered.data(), ws.gathered.size()),
                                  counts, deadline));
  // Unpack into position-ordered K, V and Q of all g globals.
  ws.gk.resize(size_t(g) * kv_row);
  ws.gv.resize(ws.gk.size());
  ws.gq.resize(size_t(g) * q_row);
  size_t offset = 0;
  for (int r = 0; r < P; ++r) {
    const int64_t a = first_global[size_t(r)];
    const size_t cnt = size_t(first_global[size_t(r) + 1] - a);
    const std::byte* src = ws.gathered.data() + offset;
    if (cnt == 0) continue;  // (and no memcpy from a null, empty buffer)
    std::memcpy(ws.gk.data() + size_t(a) * kv_row, src, cnt * kv_row);
    std::memcpy(ws.gv.data() + size_t(a) * kv_row, src + cnt * kv_row, cnt * kv_row);
    std::memcpy(ws.gq.data() + size_t(a) * q_row, src + 2 * cnt * kv_row, cnt * q_row);
    offset += counts[size_t(r)];
  }
  st->global_kv.seconds += Since(t0);  // the one gather; global_q's share is reported here too
  st->global_kv.received += 2 * size_t(g - mine) * kv_row;
  st->global_kv.min_received += 2 * size_t(g - mine) * kv_row;
  st->global_kv.sent += 2 * size_t(mine) * kv_row * size_t(P - 1);
  st->global_q.received += size_t(g - mine) * q_row;
  st->global_q.min_received += size_t(g - mine) * q_row;
  st->global_q.sent += size_t(mine) * q_row * size_t(P - 1);
  return Status::Ok();
}

Status GatherGlobalRows(comm::Communicator& comm, const attention::ShardPlan& plan,
                        std::span<const int64_t> globals, const float* mine, int64_t row_floats,
                        std::vector<float>* all, comm::Deadline deadline) {
  const int P = comm.size();
  std::vector<size_t> counts(static_cast<size_t>(P));
  for (int r = 0; r < P; ++r) {
    const auto [a, b] = GlobalsIn(globals, plan.begin(r), plan.end(r));
    counts[size_t(r)] = size_t(b - a) * size_t(row_floats) * sizeof(float);
  }
  all->resize(globals.size() * size_t(row_floats));
  // Shards are contiguous and in rank order, so the concatenation is in position order.
  return comm.AllGatherV(comm::HostBuffer(mine, counts[size_t(comm.rank())]),
                         comm::HostBuffer(all->data(), all->size() * sizeof(float)), counts,
                         deadline);
}

}  // namespace longctx::worker::internal
