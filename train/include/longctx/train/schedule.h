// The seed's curriculum (§3.1) as small pure functions of the step: stages of (sequence length,
// steps, task mix), each with its own learning-rate schedule — 10% linear warmup, then cosine
// decay to min_lr — and a task mix that moves from simple retrieval to multi-step tasks.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::train {

struct Stage {
  int64_t seq_len = 0;  // tokens per training sequence (the longest, for a random-length stage)
  int64_t steps = 0;    // optimizer steps
  int64_t min_len = 0;  // a random-length stage draws each step's length from [min_len,
                        // seq_len]; == seq_len for a fixed-length stage
};

// "2K:400,16K:100,64K:40": length (K = 1024, M = 1048576) : steps, each > 0. A length written
// "512-4K" makes a random-length stage (the baseline the seed's curriculum is compared with).
Result<std::vector<Stage>> ParseCurriculum(std::string_view text);
std::string FormatCurriculum(const std::vector<Stage>& stages);

struct StagePosition {
  int stage = 0;              // index into the stages
  int64_t step_in_stage = 0;  // 0-based
  int64_t stage_steps = 0;
  bool done = false;          // step is past the last stage
};
StagePosition Locate(const std::vector<Stage>& stages, int64_t step);

// The sequence length of `step` in `stage`: seq_len, or for a random-length stage a uniform
// draw from [min_len, seq_len] that depends only on (seed, step).
int64_t StepSequenceLength(const Stage& stage, uint64_t seed, int64_t step);

// The learning rate at step_in_stage of a stage of `steps` steps: linear warmup over the first
// ceil(10%) steps from max_lr/warmup to max_lr, then cosine from max_lr to min_lr at the end.
double StageLearningRate(int64_t step_in_stage, int64_t steps, double max_lr, double min_lr);

// Tasks in the mix, in this order: passkey, niah, multikey, vt, lm.
inline constexpr int kMixTasks = 5;
using TaskMix = std::array<double, kMixTasks>;  // weights, sum 1

// The base mix of stage `stage` of `stages`: the first stage is mostly single-needle retrieval
// (passkey, niah) with some plain text; later stages shift weight to multi-key needles and
// variable tracking. `enabled` masks tasks out (weights renormalised).
TaskMix StageTaskMix(int stage, int stages, const std::array<bool, kMixTasks>& enabled);

// Hard-example mining: re-weights a mix by the tasks' recent losses (exponential moving
// averages; a task with no loss yet keeps its weight): w_i * (ema_i / mean ema)^1, clamped to
// [0.5, 2] x the base weight, renormalised.
TaskMix MinedTaskMix(const TaskMix& base, const std::array<double, kMixTasks>& ema_loss);

}  // namespace longctx::train
