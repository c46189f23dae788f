// One training step's forward and backward over a rank's shard of a sequence (DESIGN.md §6):
// the forward keeps only each layer's input (rows x hidden per layer, O(n/P * d * layers)); the
// backward recomputes a layer's activations from it and runs the hand-written backward of every
// op (RMSNorm, projections, RoPE, hybrid attention for both fusions with GQA, SwiGLU, the
// embedding, the final norm and the cross-entropy fused with the LM head in row chunks), with
// the sequence-parallel exchanges of DistributedAttentionBackward. Weight gradients accumulate
// in this rank's gradient array; the caller all-reduces it (one call over one array).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "longctx/attention/hybrid_attention.h"
#include "longctx/comm/communicator.h"
#include "longctx/core/status.h"
#include "longctx/model/config.h"
#include "longctx/worker/distributed_attention.h"
#include "longctx/worker/forward.h"
#include "longctx/worker/param_block.h"

namespace longctx::worker {

// Weights of the loss terms (DESIGN.md §6); a term with weight 0 is neither computed nor
// reported. Parsed from "ce,length:A,entropy:B,cache-l1:C" (a bare name means weight 1).
struct LossWeights {
  double ce = 1.0;
  double length = 0.0;    // MSE of the length head's log(1 + tokens left in the answer)
  double entropy = 0.0;   // mean entropy (nats) of the global queries' attention rows
  double cache_l1 = 0.0;  // mean |K| + mean |V| of the cached (post-RoPE) vectors
};
Result<LossWeights> ParseLossSpec(std::string_view text);

// The loss of one sequence; the same on every rank.
struct LossTerms {
  double total = 0.0;  // sum of weight * term
  double ce = 0.0, length = 0.0, entropy = 0.0, cache_l1 = 0.0;
  int64_t targets = 0;  // predicted tokens (the CE/length mean's denominator)
};

// The whole sequence, the same on every rank.
struct TrainSequence {
  std::span<const int32_t> ids;          // n token ids, each < vocab_size
  std::span<const uint8_t> loss_mask;    // n entries (1: the token is a target) or empty: all
  std::span<const int64_t> globals;      // sorted global positions
  KeyHandicap handicap;                  // simulated dilution of the global queries (none: off)
  // Positional skip (training only; PoSE, Zhu et al. 2023): tokens at index >= skip_at are
  // rotated by RoPE as if at index + skip, so that relative positions across skip_at reach
  // lengths the sequence does not have. The masks (window, causality) keep the indexes.
  // skip == 0: off.
  int64_t skip_at = 0;
  int64_t skip = 0;
};

struct TrainStepStats {
  double forward_seconds = 0.0, backward_seconds = 0.0;
  double attention_seconds = 0.0;  // attention forward (incl. recompute) and backward, with comm
  double gemm_seconds = 0.0;       // projections, MLP and LM head, forward and backward
  uint64_t bytes_sent = 0, bytes_received = 0;  // attention exchanges, all layers
  double comm_seconds = 0.0;  // of attention_seconds: waiting in those exchanges (all phases)
};

// Forward + backward of `seq` sharded by `bounds` (ranks + 1 entries). Accumulates (+=) this
// rank's share of dLoss/dparameter into `grads` (layout of the parameters; the caller zeroes it
// and all-reduces it over the ranks). length_head: [hidden] weight then [1] bias, required
// when loss_weights.length > 0. Collective. A loss that is not finite is returned in `loss`
// as it is: the caller decides (`longctx train` stops and names the step).
Status ForwardBackward(comm::Communicator& comm, const model::ModelConfig& config,
                       const Weights& weights, const float* length_head,
                       const std::vector<int64_t>& bounds, const TrainSequence& seq,
                       const LossWeights& loss_weights, const attention::ExecOptions& exec,
                       const GradView& grads, LossTerms* loss, TrainStepStats* stats = nullptr);

// The shard bounds a sequence of `n` tokens gets on comm.size() ranks (the prefill's plan).
Result<std::vector<int64_t>> TrainShardBounds(const model::ModelConfig& config, int64_t n,
                                              std::span<const int64_t> globals, int ranks);

}  // namespace longctx::worker
