// One training sample through the model: its global tokens chosen exactly as `longctx run`
// chooses them (DESIGN.md §1: classes from the bytes the token ids stand for, the config's
// budget, and the marked positions — a question's tokens — always global), its shard bounds,
// and its forward + backward over the ranks of a communicator. Used by `longctx grad` (one
// sequence) and by the training loop (each sequence of a batch).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "longctx/attention/global_selection.h"
#include "longctx/comm/communicator.h"
#include "longctx/core/status.h"
#include "longctx/worker/param_block.h"
#include "longctx/worker/train_step.h"

namespace longctx::train {

struct Sample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> loss_mask;  // empty: every token after the first is a target
  std::vector<int64_t> marked;     // positions that are always global (a question's tokens)
  // Simulated dilution (training only): the needles' token ranges [begin, end), sorted, whose
  // keys the global queries see handicapped by `handicap_nats` (worker::KeyHandicap).
  std::vector<std::pair<int64_t, int64_t>> handicap_spans;
  float handicap_nats = 0.0f;
  // Positional skip (training only): RoPE positions of tokens >= skip_at moved by skip.
  int64_t skip_at = 0;
  int64_t skip = 0;
};

// The sample's globals under the config's selection rules.
Result<std::vector<int64_t>> SampleGlobals(const model::ModelConfig& config, const Sample& s);

// Forward + backward of `s` sharded over `comm`: accumulates (+=) this rank's part of the
// gradient into `grads` (params.size() floats; the caller all-reduces). Collective.
Status AccumulateSampleGradients(comm::Communicator& comm, const worker::ParamBlock& params,
                                 const Sample& s, const worker::LossWeights& loss_weights,
                                 const attention::ExecOptions& exec, float* grads,
                                 worker::LossTerms* loss, std::vector<int64_t>* globals_out,
                                 worker::TrainStepStats* stats);

}  // namespace longctx::train
