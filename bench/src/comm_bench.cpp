#include "longctx/core/file.h"
#include "longctx/bench/comm_bench.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <vector>

#include <fmt/format.h>

#include "longctx/attention/shard_plan.h"
#include "longctx/worker/distributed_attention.h"

namespace longctx::bench {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The slowest rank's time is the job's time.
Result<double> MaxOverRanks(comm::Communicator& c, double x) {
  RETURN_IF_ERROR(c.AllReduce(&x, 1, comm::ReduceType::kF64, comm::ReduceOp::kMax,
                              comm::DeadlineIn(comm::DefaultTimeout())));
  return x;
}
Result<double> SumOverRanks(comm::Communicator& c, double x) {
  RETURN_IF_ERROR(c.AllReduce(&x, 1, comm::ReduceType::kF64, comm::ReduceOp::kSum,
                              comm::DeadlineIn(comm::DefaultTimeout())));
  return x;
}

Status MpiOk(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return Status::Ok();
  return Internal("{} failed with MPI error {}", what, rc);
}

// The same messages DistributedAttention sends for `plan`, as bare MPI on raw buffers.
struct BarePattern {
  std::vector<std::pair<int, size_t>> halo_recv, halo_send;  // (peer, bytes) for K, again for V
  std::vector<int> kv_counts, q_counts;                       // all-gather counts (bytes)
  std::vector<std::pair<int, size_t>> part_send, part_recv;
};

BarePattern Pattern(const attention::ShardPlan& plan, const std::vector<int64_t>& g, int me,
                    size_t kv_row, size_t q_row, size_t state_row) {
  BarePattern b;
  const int P = plan.ranks();
  auto in = [&](int64_t lo, int64_t hi) {
    return std::pair{std::lower_bound(g.begin(), g.end(), lo) - g.begin(),
                     std::lower_bound(g.begin(), g.end(), hi) - g.begin()};
  };
  auto first_visible = [&](int r) -> int64_t {
    if (plan.rows(r) == 0) return int64_t(g.size());
    if (!plan.causal) return 0;
    return std::lower_bound(g.begin(), g.end(), plan.begin(r)) - g.begin();
  };
  const auto [k0, k1] = plan.KeyRange(me);
  const auto [gi0, gi1] = in(plan.begin(me), plan.end(me));
  const int64_t vis0 = first_visible(me);
  for (int r = 0; r < P; ++r) {
    const auto [a, bb] = in(plan.begin(r), plan.end(r));
    b.kv_counts.push_back(int((bb - a) * int64_t(kv_row)));
    b.q_counts.push_back(int((bb - a) * int64_t(q_row)));
    if (r == me) continue;
    const int64_t lo = std::max(k0, plan.begin(r)), hi = std::min(k1, plan.end(r));
    if (plan.rows(me) > 0 && lo < hi) b.halo_recv.push_back({r, size_t(hi - lo) * kv_row});
    const auto [rk0, rk1] = plan.KeyRange(r);
    const int64_t slo = std::max(rk0, plan.begin(me)), shi = std::min(rk1, plan.end(me));
    if (plan.rows(r) > 0 && slo < shi) b.halo_send.push_back({r, size_t(shi - slo) * kv_row});
    const int64_t cnt = bb - std::max<int64_t>(a, vis0);
    if (cnt > 0) b.part_send.push_back({r, size_t(cnt) * state_row});
    const int64_t rcnt = gi1 - std::max<int64_t>(gi0, first_visible(r));
    if (rcnt > 0) b.part_recv.push_back({r, size_t(rcnt) * state_row});
  }
  return b;
}

Status RunBare(const BarePattern& b, int me) {
  auto bytes = [](const auto& v) {
    size_t s = 0;
    for (const auto& [peer, n] : v) s += n;
    return s;
  };
  std::vector<char> hr(2 * bytes(b.halo_recv) + 1), hs(2 * bytes(b.halo_send) + 1);
  std::vector<MPI_Request> reqs;
  size_t off_r = 0, off_s = 0;
  for (int rep = 0; rep < 2; ++rep) {  // K, then V
    for (const auto& [peer, n] : b.halo_recv) {
      reqs.emplace_back();
      RETURN_IF_ERROR(MpiOk(MPI_Irecv(hr.data() + off_r, int(n), MPI_BYTE, peer, 201 + rep,
                                      MPI_COMM_WORLD, &reqs.back()), "MPI_Irecv"));
      off_r += n;
    }
    for (const auto& [peer, n] : b.halo_send) {
      reqs.emplace_back();
      RETURN_IF_ERROR(MpiOk(MPI_Isend(hs.data() + off_s, int(n), MPI_BYTE, peer, 201 + rep,
                                      MPI_COMM_WORLD, &reqs.back()), "MPI_Isend"));
      off_s += n;
    }
  }
  for (const auto* counts : {&b.kv_counts, &b.kv_counts, &b.q_counts}) {
    std::vector<int> displs(counts->size());
    int total = 0;
    for (size_t r = 0; r < counts->size(); ++r) {
      displs[r] = total;
      total += (*counts)[r];
    }
    std::vector<char> mine(size_t((*counts)[size_t(me)]) + 1), all(size_t(total) + 1);
    RETURN_IF_ERROR(MpiOk(MPI_Allgatherv(mine.data(), (*counts)[size_t(me)], MPI_BYTE, all.data(),
                                         counts->data(), displs.data(), MPI_BYTE, MPI_COMM_WORLD),
                          "MPI_Allgatherv"));
  }
  RETURN_IF_ERROR(MpiOk(MPI_Waitall(int(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE), "MPI_Waitall"));
  reqs.clear();
  std::vector<char> pr(bytes(b.part_recv) + 1), ps(bytes(b.part_send) + 1);
  off_r = off_s = 0;
  for (const auto& [peer, n] : b.part_recv) {
    reqs.emplace_back();
    RETURN_IF_ERROR(MpiOk(MPI_Irecv(pr.data() + off_r, int(n), MPI_BYTE, peer, 203, MPI_COMM_WORLD,
                                    &reqs.back()), "MPI_Irecv"));
    off_r += n;
  }
  for (const auto& [peer, n] : b.part_send) {
    reqs.emplace_back();
    RETURN_IF_ERROR(MpiOk(MPI_Isend(ps.data() + off_s, int(n), MPI_BYTE, peer, 203, MPI_COMM_WORLD,
                                    &reqs.back()), "MPI_Isend"));
    off_s += n;
  }
  return MpiOk(MPI_Waitall(int(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
}

}  // namespace

int64_t LogGlobalCount(int64_t n) {
  if (n <= 1) return n;
  return std::min<int64_t>(n, 16 * int64_t(std::ceil(std::log2(double(n)))));
}

std::vector<int64_t> EvenGlobals(int64_t n, int64_t count) {
  count = std::min(count, n);
  std::vector<int64_t> pos;
  for (int64_t i = 0; i < std::min<int64_t>(4, count); ++i) pos.push_back(i);  // sinks
  const int64_t rest = count - int64_t(pos.size());
  for (int64_t r = 0; r < rest; ++r) pos.push_back(4 + (r + 1) * (n - 4) / (rest + 1));
  std::sort(pos.begin(), pos.end());
  pos.erase(std::unique(pos.begin(), pos.end()), pos.end());
  return pos;
}

Status RunCommBench(const CommBenchOptions& o, comm::Communicator& c) {
  const int P = c.size(), me = c.rank();
  if (c.backend() != "mpi") {
    return FailedPrecondition("bench comm needs MPI: run it as mpirun -np P longctx bench comm");
  }
  if (o.reps < 1 || o.heads < 1 || o.kv_heads < 1 || o.heads % o.kv_heads) {
    return InvalidArgument("bench comm: need reps >= 1 and heads a positive multiple of kv-heads");
  }
  if (me == 0) {
    fmt::print("# ranks={} heads={}/{} f32, causal, union. recv/min: the busiest rank's bytes received "
               "and its minimum; ratio: all ranks' received / all ranks' minimum. Times: the slowest "
               "rank, best of {}. ours: DistributedAttention's exchanges with the kernels skipped; "
               "bare: MPI_Isend/Irecv + MPI_Allgatherv of the same bytes; naive: MPI_Allgatherv of the "
               "full K and V\n", P, o.heads, o.kv_heads, o.reps);
    fmt::print("{:>8} {:>4} {:>5} {:>5} | {:>10} {:>10} {:>6} | {:>9} {:>9} {:>6} | {:>11} {:>9} {:>8} {:>8}\n",
               "n", "d", "W", "globs", "recv MiB", "min MiB", "ratio", "ours s", "bare s",
               "ratio", "naive MiB", "naive s", "bytes x", "time x");
  }
  std::string json = "[\n";
  bool first = true;
  for (int64_t n : o.n) {
    for (int64_t d : o.head_dim) {
      for (int64_t W : o.window) {
        for (const auto& gmode : o.globals) {
          if (gmode != "none" && gmode != "log") return InvalidArgument("--globals takes none/log");
          const std::vector<int64_t> globals =
              gmode == "log" ? EvenGlobals(n, LogGlobalCount(n)) : std::vector<int64_t>{};
          attention::AttentionSpec spec;
          spec.window = W;
          ASSIGN_OR_RETURN(attention::ShardPlan plan, attention::MakeShardPlan(n, globals, spec, P));
          const int64_t rows = plan.rows(me);
          std::vector<float> q(size_t(rows * o.heads * d), 0.5f), k(size_t(rows * o.kv_heads * d), 0.25f),
              v(k.size(), 1.0f), out(q.size()), lse(size_t(rows * o.heads));
          worker::ShardTensors shard{
              attention::TokenView::Dense(q.data(), DType::kF32, rows, o.heads, d),
              attention::TokenView::Dense(k.data(), DType::kF32, rows, o.kv_heads, d),
              attention::TokenView::Dense(v.data(), DType::kF32, rows, o.kv_heads, d)};
          worker::DistributedStats st;
          worker::DistributedWorkspace workspace;  // kept across repetitions, as across layers
          worker::DistributedOptions exchange_only;
          exchange_only.exchange_only = true;
          exchange_only.workspace = &workspace;
          double ours = 1e30, bare = 1e30;
          const size_t kv_row = size_t(o.kv_heads * d) * 4, q_row = size_t(o.heads * d) * 4;
          const BarePattern pattern = Pattern(plan, globals, me, kv_row, q_row,
                                              size_t(o.heads * (d + 1)) * 4);
          for (int rep = 0; rep <= o.reps; ++rep) {  // alternate, so drift hits both alike
            RETURN_IF_ERROR(c.Barrier(comm::DeadlineIn(comm::DefaultTimeout())));
            auto t0 = Clock::now();
            RETURN_IF_ERROR(worker::DistributedAttention(c, plan, globals, spec, shard, out.data(),
                                                         lse.data(), {}, &st, exchange_only));
            ASSIGN_OR_RETURN(double t, MaxOverRanks(c, Seconds(t0)));
            if (rep > 0) ours = std::min(ours, t);
            RETURN_IF_ERROR(c.Barrier(comm::DeadlineIn(comm::DefaultTimeout())));
            t0 = Clock::now();
            RETURN_IF_ERROR(RunBare(pattern, me));
            ASSIGN_OR_RETURN(t, MaxOverRanks(c, Seconds(t0)));
            if (rep > 0) bare = std::min(bare, t);
          }
          const double recv = double(st.halo.received + st.global_kv.received + st.global_q.received +
                                     st.partials.received);
          const double min = double(st.halo.min_received + st.global_kv.min_received +
                                    st.global_q.min_received + st.partials.min_received);
          ASSIGN_OR_RETURN(const double recv_max, MaxOverRanks(c, recv));
          ASSIGN_OR_RETURN(const double recv_sum, SumOverRanks(c, recv));
          ASSIGN_OR_RETURN(const double min_sum, SumOverRanks(c, min));
          ASSIGN_OR_RETURN(const double min_max, MaxOverRanks(c, min));
          // Naive: every rank all-gathers the full K and V.
          double naive_s = 0.0, naive_bytes = 2.0 * double(n - rows) * double(kv_row);
          if (o.naive) {
            std::vector<int> counts(static_cast<size_t>(P)), displs(static_cast<size_t>(P));
            int64_t total = 0;
            for (int r = 0; r < P; ++r) {
              const int64_t b = plan.rows(r) * int64_t(kv_row);
              if (b > INT32_MAX || total > INT32_MAX) return Unimplemented("naive all-gather over 2 GiB");
              counts[size_t(r)] = int(b);
              displs[size_t(r)] = int(total);
              total += b;
            }
            std::vector<char> full(size_t(total) + 1);
            double best = 1e30;
            for (int rep = 0; rep < std::min(o.reps, 2) + 1; ++rep) {
              RETURN_IF_ERROR(c.Barrier(comm::DeadlineIn(comm::DefaultTimeout())));
              const auto t0 = Clock::now();
              for (const auto* src : {&k, &v}) {
                RETURN_IF_ERROR(MpiOk(MPI_Allgatherv(src->data(), counts[size_t(me)], MPI_BYTE,
                                                     full.data(), counts.data(), displs.data(),
                                                     MPI_BYTE, MPI_COMM_WORLD), "MPI_Allgatherv"));
              }
              ASSIGN_OR_RETURN(double t, MaxOverRanks(c, Seconds(t0)));
              if (rep > 0) best = std::min(best, t);
            }
            naive_s = best;
          }
          ASSIGN_OR_RETURN(naive_bytes, MaxOverRanks(c, naive_bytes));
          const double mib = 1024.0 * 1024.0;
          if (me == 0) {
            fmt::print("{:>8} {:>4} {:>5} {:>5} | {:>10.3f} {:>10.3f} {:>6.3f} | {:>9.5f} {:>9.5f} "
                       "{:>6.2f} | {:>11.1f} {:>9.4f} {:>8.0f} {:>8.1f}\n",
                       n, d, W, globals.size(), recv_max / mib, min_max / mib,
                       min_sum > 0 ? recv_sum / min_sum : 1.0, ours, bare, ours / bare,
                       naive_bytes / mib, naive_s, naive_bytes / std::max(1.0, recv_max),
                       o.naive ? naive_s / ours : 0.0);
            std::fflush(stdout);
            json += fmt::format(
                "{}  {{\"ranks\": {}, \"n\": {}, \"d\": {}, \"window\": {}, \"globals\": {}, "
                "\"recv_bytes_max_rank\": {:.0f}, \"recv_over_min\": {:.4f}, \"ours_s\": {:.6f}, "
                "\"bare_mpi_s\": {:.6f}, \"naive_bytes\": {:.0f}, \"naive_s\": {:.6f}}}",
                first ? "" : ",\n", P, n, d, W, globals.size(), recv_max,
                min_sum > 0 ? recv_sum / min_sum : 1.0, ours, bare, naive_bytes, naive_s);
            first = false;
          }
        }
      }
    }
  }
  if (me == 0 && !o.json.empty()) {
    RETURN_IF_ERROR(WriteFileAtomically(o.json, json + "\n]\n").WithContext("--json"));
  }
  return Status::Ok();
}

}  // namespace longctx::bench
