// ShardPlan: which contiguous token range each rank owns (DESIGN.md §2), balanced by the
// attention work each token brings — its window keys, the globals it sees, and, as a key, the
// global queries that read it. A pure function of (n, globals, spec, ranks): every rank computes
// the same plan without talking. Valid for n < ranks (empty shards) and for shards shorter than
// the window (the halo then spans several ranks). Uses O(ranks + globals) memory, never O(n).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "longctx/attention/spec.h"
#include "longctx/core/status.h"

namespace longctx::attention {

struct ShardPlan {
  int64_t n = 0;                // tokens
  int64_t window = 0;           // W the plan was made for
  bool causal = true;
  std::vector<int64_t> bounds;  // ranks+1 entries: rank r owns [bounds[r], bounds[r+1])
  std::vector<int64_t> cost;    // per rank: the model's work units (allowed query-key pairs)

  int ranks() const { return int(bounds.size()) - 1; }
  int64_t begin(int r) const { return bounds[size_t(r)]; }
  int64_t end(int r) const { return bounds[size_t(r) + 1]; }
  int64_t rows(int r) const { return end(r) - begin(r); }
  // The rank owning token t (t in [0, n)); the last of equal bounds for empty shards.
  int Owner(int64_t t) const;
  // Keys rank r's queries read: [lo, hi) = its rows widened by the window (clamped to [0, n)).
  // Empty for an empty shard.
  std::pair<int64_t, int64_t> KeyRange(int r) const;

  std::string ToString() const;   // human-readable table
  std::string Serialize() const;  // one line: "longctx-shard-plan/1 n=.. window=.. causal=.. bounds=a,b,.. cost=.."
  static Result<ShardPlan> Parse(std::string_view text);
};

// Balances the cost model over `ranks` contiguous shards. globals: sorted unique in [0, n).
Result<ShardPlan> MakeShardPlan(int64_t n, std::span<const int64_t> globals,
                                const AttentionSpec& spec, int ranks);

}  // namespace longctx::attention
