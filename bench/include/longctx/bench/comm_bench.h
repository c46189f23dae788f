// `mpirun -np P longctx bench comm`: what distributed attention moves between ranks and how
// fast, against (a) the plan's minimum bytes, (b) bare MPI moving the same bytes in the same
// run (MPI_Isend/Irecv + MPI_Allgatherv on pre-allocated buffers), and (c) the naive
// alternative where every rank all-gathers the full K/V.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "longctx/comm/communicator.h"
#include "longctx/core/status.h"

namespace longctx::bench {

struct CommBenchOptions {
  std::vector<int64_t> n = {65536, 1048576};
  std::vector<int64_t> head_dim = {64};
  std::vector<int64_t> window = {64};
  std::vector<std::string> globals = {"log"};  // none | log (16*ceil(log2 n))
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int reps = 5;
  bool naive = true;
  std::string json;
};

Status RunCommBench(const CommBenchOptions& options, comm::Communicator& world);

// Shared with the attention bench: `count` positions, the first 4 (sinks) then evenly spaced.
std::vector<int64_t> EvenGlobals(int64_t n, int64_t count);
int64_t LogGlobalCount(int64_t n);  // 16 * ceil(log2 n), at most n

}  // namespace longctx::bench
