// Training checkpoints (DESIGN.md §6): a Hugging Face model directory that `longctx run
// --model` loads as it is — config.json with the "longctx" block, model.safetensors (F32, plus
// the length head when trained) — and the optimizer's state beside it: optimizer.safetensors
// (AdamW moments "m.<tensor>", "v.<tensor>") and state.json (step, schedule, sampler state).
// A checkpoint directory appears whole or not at all: it is written under a temporary name,
// every file fsynced, and renamed into place.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "longctx/core/status.h"
#include "longctx/train/optimizer.h"
#include "longctx/train/schedule.h"
#include "longctx/worker/param_block.h"

namespace longctx::train {

// Everything besides weights and moments that a resumed run needs to continue bitwise.
struct TrainState {
  int64_t step = 0;                    // optimizer steps done
  int64_t adam_steps = 0;
  std::string curriculum;              // FormatCurriculum of the run
  uint64_t seed = 0;
  std::array<double, kMixTasks> ema_loss{};  // hard-example mining
  double tokens_seen = 0;
};

Status SaveCheckpoint(const std::string& dir, const worker::ParamBlock& params, const AdamW& opt,
                      const TrainState& state);

// Loads the moments and state of a checkpoint into `opt`/`state`, checking that its tensors
// match `params` by name and shape (the parameters themselves are loaded as a model).
Status LoadOptimizerState(const std::string& dir, const worker::ParamBlock& params, AdamW* opt,
                          TrainState* state);

}  // namespace longctx::train
