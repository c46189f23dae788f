// Hybrid attention over a sequence sharded across the ranks of a Communicator (DESIGN.md §2):
// halo K/V from the neighbouring shards (as many ranks as the window spans; both sides when
// bidirectional), all-gathered global K/V and Q, own queries with the interior computed while
// the halo is in flight, and global queries as partial (O, LSE) per rank merged at the owner in
// rank order. Per-rank traffic is O((W + g) * Hkv * d), independent of n; no rank holds more
// than its shard, its halo and the globals. Equal to HybridAttention on one process up to fp32
// rounding, and bitwise repeatable for a fixed rank count.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "longctx/attention/hybrid_attention.h"
#include "longctx/attention/shard_plan.h"
#include "longctx/comm/communicator.h"

namespace longctx::worker {

struct PhaseTraffic {
  uint64_t sent = 0;          // bytes this rank handed to the communicator in this phase
  uint64_t received = 0;      // bytes it received
  uint64_t min_received = 0;  // bytes it must receive at least: data it needs and does not own
  double seconds = 0.0;       // wall time spent waiting in this phase
};

struct DistributedStats {
  int rank = 0;
  int64_t rows = 0;        // tokens owned
  int64_t halo_rows = 0;   // K/V rows received from other shards
  int64_t globals_owned = 0;
  PhaseTraffic halo, global_kv, global_q, partials;
  double compute_seconds = 0.0;
  double total_seconds = 0.0;
};

// This rank's own rows [plan.begin(rank), plan.end(rank)) of Q [rows,H,d] and K/V [rows,Hkv,d].
// For an empty shard the views have rows == 0 (heads/head_dim still set, data may be null).
struct ShardTensors {
  attention::TokenView q, k, v;
};

// Buffers of one call, kept by the caller across calls (layers, benchmark repetitions) so that
// a call allocates and zero-fills nothing once sizes are stable. Contents are scratch.
struct DistributedWorkspace {
  std::vector<std::byte> left_k, left_v, right_k, right_v;  // halo rows
  std::vector<std::byte> block, gathered, gk, gv, gq;        // global K/V/Q
  std::vector<std::byte> edge_k, edge_v;                     // keys of the edge queries
  std::vector<float> part, o_all, l_all, o_win, l_win;       // global-query partials
  std::vector<std::vector<float>> send_bufs, recv_bufs;      // partials per peer
};

struct DistributedOptions {
  // Benchmarks only: do every exchange with its real sizes but skip the attention kernels
  // (out/lse are then left unspecified), to time the communication alone.
  bool exchange_only = false;
  DistributedWorkspace* workspace = nullptr;  // optional; a local one otherwise
};

// out: [rows, H, d] float32, lse: [rows, H] float32 for this rank's rows. Every rank of `comm`
// must call it with the same plan, globals and spec. stats may be null.
Status DistributedAttention(comm::Communicator& comm, const attention::ShardPlan& plan,
                            std::span<const int64_t> globals, const attention::AttentionSpec& spec,
                            const ShardTensors& shard, float* out, float* lse,
                            const attention::ExecOptions& exec, DistributedStats* stats,
                            const DistributedOptions& options = {});

// One line per phase: "halo  sent 1.2 MiB  recv 1.2 MiB  min 1.2 MiB (1.00x)  0.003 s".
std::string FormatStats(const DistributedStats& s);

}  // namespace longctx::worker
