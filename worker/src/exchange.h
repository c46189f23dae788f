// The two exchanges of a sharded attention layer (DESIGN.md §2), shared by the forward
// (distributed_attention.cpp) and the backward (distributed_attention_backward.cpp):
//  - the halo: K/V rows of the window keys a rank's queries read from other shards, and, in
//    the backward, the gradients of those rows sent back to their owners;
//  - the globals: one all-gather of the global tokens' K, V and Q rows.
// Private to longctx_worker. Sizes are bytes unless named rows.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "longctx/attention/shard_plan.h"
#include "longctx/comm/communicator.h"
#include "longctx/worker/distributed_attention.h"

namespace longctx::worker::internal {

// Index range [first, last) of the sorted globals that fall in [lo, hi).
std::pair<int64_t, int64_t> GlobalsIn(std::span<const int64_t> g, int64_t lo, int64_t hi);

// The global queries whose partial over rank r's keys is non-empty: indexes [first, g).
// Causal: a query at p reads keys <= p, so only globals at or after the shard's start.
int64_t FirstVisibleGlobal(const attention::ShardPlan& plan, std::span<const int64_t> g, int r);

// The own key range [s, e) cut at the edges of a KeyHandicap's spans: consecutive segments
// covering [s, e), each with whether its keys are handicapped. One unbiased segment when the
// handicap is inactive or misses [s, e).
struct KeySegment {
  int64_t begin = 0, end = 0;
  bool handicapped = false;
};
std::vector<KeySegment> HandicapSegments(int64_t s, int64_t e, const KeyHandicap& h);

// A view of `rows` dense rows at `base` with t's dtype and heads.
attention::TokenView RowsView(const attention::TokenView& t, const std::byte* base, int64_t rows);

// Posts every receive and send of the halo of rank comm.rank(): the rows [k0, s) land in
// ws.left_k/left_v and [e, k1) in ws.right_k/right_v ((k0, k1) = plan.KeyRange(rank)). k/v are
// the own rows. Adds the requests to `reqs` (wait for them before reading the buffers or
// changing k/v) and the traffic to st->halo / st->halo_rows.
Status PostHalo(comm::Communicator& comm, const attention::ShardPlan& plan,
                const attention::TokenView& k, const attention::TokenView& v,
                DistributedWorkspace& ws, std::vector<comm::RequestPtr>* reqs,
                DistributedStats* st);

// The reverse of PostHalo for the backward: sends the gradients of the halo rows (dk/dv rows
// [k0, s) at left_*, [e, k1) at right_*; float32 [rows, Hkv, d]) to their owners, receives the
// gradients other ranks computed for my rows and adds them into dk/dv [rows, Hkv, d] (own rows)
// in rank order (bitwise repeatable). Blocking, with `deadline`.
Status ReturnHaloGrads(comm::Communicator& comm, const attention::ShardPlan& plan,
                       int64_t kv_elems_per_row, const float* left_dk, const float* left_dv,
                       const float* right_dk, const float* right_dv, float* dk, float* dv,
                       comm::Deadline deadline, DistributedStats* st);

// All-gathers the K, V and Q rows of every global token (each rank contributes those it owns)
// into ws.gk, ws.gv (g rows of K/V) and ws.gq (g rows of Q), in position order. One collective.
Status GatherGlobals(comm::Communicator& comm, const attention::ShardPlan& plan,
                     std::span<const int64_t> globals, const attention::TokenView& q,
                     const attention::TokenView& k, const attention::TokenView& v,
                     DistributedWorkspace& ws, comm::Deadline deadline, DistributedStats* st);

// All-gathers float32 rows of `row_floats` floats per global token (each rank contributes the
// rows of the globals it owns, in position order) into `all` [g][row_floats].
Status GatherGlobalRows(comm::Communicator& comm, const attention::ShardPlan& plan,
                        std::span<const int64_t> globals, const float* mine, int64_t row_floats,
                        std::vector<float>* all, comm::Deadline deadline);

}  // namespace longctx::worker::internal
