// `longctx bench batch`: B documents in one `longctx run` job (--input repeated, each
// --doc-groups G given) against the same documents one job at a time, as `longctx run`
// subprocesses (under mpirun for ranks > 1) in the same invocation. Prints tokens/s of both and
// their ratio, twice: per job (the subprocess's wall time: mpirun start-up, MPI, model load,
// prefill, the question, outputs) and per engine (report.json's prefill + answer seconds only).
// Also checks that the batch's answers equal the one-document runs' (G = 1: the same shard plan,
// so bitwise).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::bench {

struct BatchBenchOptions {
  std::string model = "builtin:tiny";
  int documents = 4;                     // B
  int64_t tokens = 16384;                // bytes = tokens per document (the byte tokenizer)
  int ranks = 2;                         // P of every job
  std::vector<int> doc_groups = {1, 2};  // G of the batch jobs (each must divide P)
  int threads = 1;                       // per rank
  std::string query = "Who pays for the goods of lot 35?";
  int64_t generate = 8;  // greedy tokens after the question, per document
  int reps = 1;          // rounds (singles, then each batch); the best round per mode
  std::string extra;     // more `longctx run` flags for every job (e.g. --kv-device-budget 1M)
  std::string json;      // also write the results here
  std::string binary = "/proc/self/exe";
  std::string mpirun_args =
      "--oversubscribe --allow-run-as-root --mca btl self,vader,tcp --mca btl_tcp_if_include lo "
      "--mca oob_tcp_if_include lo --mca pml ob1";
};
Status RunBatchBench(const BatchBenchOptions& o);

}  // namespace longctx::bench
