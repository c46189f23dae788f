// `longctx bench attention`: throughput of the hybrid-attention kernel over a grid of shapes,
// counted in allowed (query, key) pairs x 4*d FLOPs, and printed as a ratio to OpenBLAS
// sgemm measured in the same run with the same thread count (machines here are shared and
// absolute numbers drift; a same-run ratio does not).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::bench {

struct AttentionBenchOptions {
  std::vector<int64_t> n = {16384, 65536, 262144};
  std::vector<int64_t> head_dim = {64, 128};
  std::vector<int64_t> window = {64, 256, 1024};
  std::vector<int> threads = {1, 2};
  std::vector<std::string> globals = {"none", "log"};  // "log": 16*ceil(log2 n) globals
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int reps = 2;                  // timed runs after one warm-up; the best is reported
  std::string dtype = "f32";     // f32 | f16 | bf16 inputs
  std::string isa = "auto";
  std::string json;              // write results here too
  // --whole-process: time `longctx attention` as a user runs it (a child process reading
  // .npy files and writing the output .npy) against the kernel alone on the same inputs.
  bool whole_process = false;
  std::string binary = "/proc/self/exe";  // the longctx to run
  std::string workdir;                    // where the .npy files go (default: a temp dir)
};

Status RunAttentionBench(const AttentionBenchOptions& options);
Status RunWholeProcessAttentionBench(const AttentionBenchOptions& options);

}  // namespace longctx::bench
