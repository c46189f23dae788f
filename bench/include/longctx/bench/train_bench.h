// `longctx bench train`: forward + backward tokens/s of one training sequence (DESIGN.md §6) of
// real prose, against the same model and weights in python3-torch float32
// (bench/peers/torch_train.py: dense masked and Longformer sliding-chunks attention) measured in
// the same run, and where longctx's time goes: GEMMs, attention (compute + exchange) and the
// exchange's wait. Under mpirun the sequence is sharded (sequence parallel) and each rank's
// split, traffic and peak RSS are reported; the torch peer then does not run (its 1-rank
// comparison is the 1-rank row).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "longctx/comm/communicator.h"
#include "longctx/core/status.h"

namespace longctx::bench {

struct TrainBenchOptions {
  std::string model = "builtin:tiny";                         // builtin:tiny | builtin:small | DIR
  std::vector<int64_t> tokens = {2048, 8192, 32768, 131072};  // sequence lengths
  int threads = 0;                          // per rank; 0: cores / ranks on the node
  int repeats = 3;                          // timed steps after one warm-up
  std::string peer = "auto";                // auto (torch when 1 rank) | off
  std::string python = "/usr/bin/python3";  // with torch
  std::string peer_script;                  // "": the source tree's torch_train.py
  uint64_t seed = 1;                        // of the prose documents
  std::string json;                         // also write the results here (rank 0)
};

// Collective over `comm`. Prints a header (CPU, threads, BLAS and its kernel, same-run sgemm),
// a line per length and step, and the table.
Status RunTrainBench(const TrainBenchOptions& options, comm::Communicator& comm);

}  // namespace longctx::bench
