// `--trace FILE` of `longctx run` and `longctx worker`: one Chrome / Perfetto timeline of every
// rank. Start (collective) aligns the ranks on a barrier and switches the tracer (core/trace.h)
// on; Finish (collective) switches it off, gathers every rank's events over the communicator and
// rank 0 writes one merged file: pid = rank, one tid per thread, "rank R (host)" as the process
// name. Timestamps are microseconds since the earliest barrier exit of the ranks on the same
// host (one steady_clock per host, so ranks of a host line up exactly); ranks on other hosts are
// aligned only as well as their barrier exits agree (docs/observability.md).
#pragma once

#include <cstdint>
#include <string>

#include "longctx/comm/communicator.h"
#include "longctx/core/status.h"

namespace longctx::cli {

class TraceSession {
 public:
  // Collective. An empty path leaves the tracer off, and Finish then does nothing.
  static Result<TraceSession> Start(comm::Communicator& comm, std::string path);
  // Collective: every rank agrees on the outcome (a failed write on rank 0 fails every rank).
  Status Finish();
  bool active() const { return comm_ != nullptr; }

 private:
  TraceSession() = default;
  comm::Communicator* comm_ = nullptr;  // null: inactive
  std::string path_;
  int64_t barrier_ns_ = 0;  // steady_clock when this rank left the start barrier
};

}  // namespace longctx::cli
