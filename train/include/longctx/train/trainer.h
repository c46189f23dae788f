// The training loop of `longctx train` (DESIGN.md §6), top to bottom: data, forward, loss,
// backward, reduce, clip, step, log, save. Sequence-parallel over the ranks of a data-parallel
// group (each sequence sharded as the prefill shards it), data-parallel across groups (--dp);
// the seed's curriculum (stages of sequence length and steps, each with 10% warmup + cosine,
// the task mix moving from retrieval to multi-step tasks, optional hard-example mining).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "longctx/comm/communicator.h"
#include "longctx/core/status.h"
#include "longctx/model/config.h"
#include "longctx/train/optimizer.h"
#include "longctx/worker/train_step.h"

namespace longctx::train {

struct TrainOptions {
  std::string model = "builtin:tiny";  // initial weights: builtin:tiny|small or a HF directory
  uint64_t model_seed = 0;             // seed of a builtin model's random weights
  model::HybridOverrides overrides;    // --window etc.
  std::optional<double> rope_theta;    // overrides config.json's rope_theta
  std::string curriculum = "2K:400";   // LENGTH:STEPS,...
  std::vector<std::string> tasks = {"passkey", "niah", "multikey", "vt", "lm"};
  std::vector<std::string> data;       // text/.npy files: lm samples come from them when given
  std::vector<std::string> filler;     // filler prose files (default: the Debian corpus)
  int64_t batch = 1;                   // sequences per optimizer step per data-parallel group
  double lr = 1e-3, min_lr = 1e-4;
  AdamWConfig adam;
  worker::LossWeights loss;
  bool mining = false;
  uint64_t seed = 0;                   // data order
  std::string out;                     // checkpoints, train.jsonl, train.png
  int64_t save_every = 0;              // steps; 0: only final/
  std::string resume;                  // a step-N checkpoint of the same run
  int threads = 0;
  int dp = 1;                          // data-parallel groups (ranks % dp == 0)
  bool progress = true;                // a bar on a terminal (rank 0)
  int64_t max_steps = -1;              // stop after this many steps in total (-1: the curriculum)
  // Simulated dilution (docs/training.md): a task sequence of n < dilute_to tokens has its
  // needles' keys handicapped by ln(dilute_to / n) nats in the global queries' softmax, as if
  // the filler were dilute_to tokens long. 0: off.
  int64_t dilute_to = 0;
  // Positional skip (PoSE; docs/training.md): in a task sequence of n < skip_to tokens, the RoPE
  // positions from a point drawn between the last needle and the question on are moved by a
  // distance drawn uniformly in [0, skip_to - n], so the question reads needles up to skip_to
  // positions away. 0: off.
  int64_t skip_to = 0;
};

// Runs the loop on every rank of `world` (collective). Returns the first error; a loss that is
// not finite stops the run with an error naming the step, keeping the last saved checkpoint.
Status Train(comm::Communicator& world, const TrainOptions& options);

}  // namespace longctx::train
