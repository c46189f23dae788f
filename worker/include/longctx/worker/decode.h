// Questions and generation against a prefilled document (DESIGN.md §1-2): new tokens are
// appended after the document, owned by the last rank, one at a time. Each rank keeps its rows'
// K/V of every layer from the prefill (the KV cache) and never recomputes the document. Per new
// token and layer, every rank computes the partial (O, LSE) of its query over the rank's keys the
// query may see — its window, the global keys, or, for a global query, every key — and the
// partials are merged in rank order on the last rank: the result equals one forward pass over
// the whole sequence with the same globals. Per step and layer a rank moves O(H * hd) bytes.
//
// The K/V come from the rank's TieredKvCache: a query that is not global reads only its window
// and the global rows (the cache's persistent set: resident); a global query reads every block of
// every layer, so the next layer's blocks are prefetched while the current layer computes. Over
// all rows the blocks are copied, in row order, into fixed chunks of 8192 rows, one partial per
// chunk merged in row order, so the result is the same (bitwise) whatever the tier budgets and
// the codec's round trip (exact for f32).
#pragma once

#include <cstdint>
#include <vector>

#include "longctx/attention/global_selection.h"
#include "longctx/worker/forward.h"

namespace longctx::worker {

class Decoder {
 public:
  // bounds: the prefill's shard bounds (ranks+1 entries; bounds.back() = document tokens).
  // globals: the document's global positions (sorted). cache: this rank's K/V from ForwardShard
  // (not owned; the last rank's appended tokens are appended to it).
  Decoder(comm::Communicator& comm, const model::ModelConfig& config, const Weights& weights,
          std::vector<int64_t> bounds, std::span<const int64_t> globals,
          cache::TieredKvCache* cache, const attention::ExecOptions& exec);

  int last_rank() const { return comm_.size() - 1; }
  int64_t next_position() const { return next_pos_; }

  // Appends `token` at next_position(), global or not. Every rank calls it with the same
  // arguments. On every rank: *next_token = the greedy next token (argmax of the logits, lowest
  // id on ties). On the last rank: hidden_out [hidden] = the token's final-norm hidden state
  // (may be null elsewhere).
  Status Step(int32_t token, bool is_global, float* hidden_out, int32_t* next_token);

  // Bytes this rank sent and received in Step calls.
  uint64_t bytes_sent() const { return sent_; }
  uint64_t bytes_received() const { return received_; }

 private:
  comm::Communicator& comm_;
  const model::ModelConfig& config_;
  const Weights& weights_;
  std::vector<int64_t> bounds_;
  attention::ExecOptions exec_;
  int64_t pos0_ = 0;                // position of this rank's first cached row
  cache::TieredKvCache* cache_;     // rows [pos0_, pos0_ + rows) of every layer (grows on the last rank)
  std::vector<char> global_row_;    // per cached row: is it a global token
  int64_t next_pos_ = 0;
  uint64_t sent_ = 0, received_ = 0;
};

// Is a generated token global? It ends a sentence (. ! ? or the last byte of 。！？) or a
// paragraph (a newline right after a newline). `prev` holds the tokens before it (bytes).
bool GeneratedTokenIsGlobal(int32_t token, const std::vector<int32_t>& prev);

}  // namespace longctx::worker
