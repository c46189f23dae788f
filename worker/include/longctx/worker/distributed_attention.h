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
#include <utility>
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

// Training only (simulated dilution, docs/training.md "Training for a million tokens at 64K"):
// the logits of the keys in `spans` are lowered by `nats` in every global query's softmax over
// the visible keys — what a softmax sees when every other key is exp(nats) times as many — so
// that a retrieval learned on n tokens must hold against the filler of n * exp(nats). The
// window rows and the non-global queries are untouched; inference never sets it.
struct KeyHandicap {
  std::span<const std::pair<int64_t, int64_t>> spans;  // sorted, disjoint [begin, end) positions
  float nats = 0.0f;                                   // >= 0
  bool active() const { return nats != 0.0f && !spans.empty(); }
};

struct DistributedOptions {
  // Benchmarks only: do every exchange with its real sizes but skip the attention kernels
  // (out/lse are then left unspecified), to time the communication alone.
  bool exchange_only = false;
  DistributedWorkspace* workspace = nullptr;  // optional; a local one otherwise
  KeyHandicap handicap;                       // training only; none by default
};

// out: [rows, H, d] float32, lse: [rows, H] float32 for this rank's rows. Every rank of `comm`
// must call it with the same plan, globals and spec. stats may be null.
Status DistributedAttention(comm::Communicator& comm, const attention::ShardPlan& plan,
                            std::span<const int64_t> globals, const attention::AttentionSpec& spec,
                            const ShardTensors& shard, float* out, float* lse,
                            const attention::ExecOptions& exec, DistributedStats* stats,
                            const DistributedOptions& options = {});

// ---- backward (training; DESIGN.md §6) ----------------------------------------------------

// What the backward of one layer's attention needs besides Q/K/V: the forward's own-row results
// and the gradient of the loss with respect to them.
struct AttentionGradInputs {
  const float* out = nullptr;   // [rows, H, d] DistributedAttention's out for the own rows
  const float* lse = nullptr;   // [rows, H]    its lse
  const float* dout = nullptr;  // [rows, H, d] dLoss/dout
  // Weight c of the entropy term c * sum over (global query, head) of the entropy (nats) of the
  // query's softmax over all its visible keys. 0: no entropy term.
  float entropy_weight = 0.0f;
  KeyHandicap handicap;  // the forward's (must be the same); not with entropy_weight
};

struct AttentionGrads {
  float* dq = nullptr;  // [rows, H, d]   overwritten: dLoss/dQ of the own rows
  float* dk = nullptr;  // [rows, Hkv, d] overwritten: dLoss/dK of the own rows (all ranks' parts)
  float* dv = nullptr;  // [rows, Hkv, d]
  double entropy_sum = 0.0;  // out: sum of the global queries' entropies (same on every rank)
};

// The backward of DistributedAttention over the same plan, globals and spec (f32 Q/K/V only).
// Mirrors the forward's exchanges: the halo K/V and the globals' K/V/Q again, the gradients of
// halo keys back to their owners, the global queries' dO/LSE/D rows to every rank (each computes
// their partial dQ and its own keys' dK/dV), and the global keys' dK/dV and global queries' dQ
// reduced to their owners. O((W + g) * H * d) bytes per rank, independent of n. Equal to the
// one-process backward up to fp32 rounding; bitwise repeatable for a fixed rank count.
Status DistributedAttentionBackward(comm::Communicator& comm, const attention::ShardPlan& plan,
                                    std::span<const int64_t> globals,
                                    const attention::AttentionSpec& spec, const ShardTensors& shard,
                                    const AttentionGradInputs& in, AttentionGrads* grads,
                                    const attention::ExecOptions& exec, DistributedStats* stats,
                                    DistributedWorkspace* workspace = nullptr);

// One line per phase: "halo  sent 1.2 MiB  recv 1.2 MiB  min 1.2 MiB (1.00x)  0.003 s".
std::string FormatStats(const DistributedStats& s);

}  // namespace longctx::worker
