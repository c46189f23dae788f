#include "trace_output.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "longctx/core/file.h"
#include "longctx/core/trace.h"

namespace longctx::cli {

Result<TraceSession> TraceSession::Start(comm::Communicator& comm, std::string path) {
  TraceSession s;
  if (path.empty()) return s;
  RETURN_IF_ERROR(comm.Barrier(comm::DeadlineIn(comm::DefaultTimeout())));
  s.barrier_ns_ = trace::NowNanos();
  s.comm_ = &comm;
  s.path_ = std::move(path);
  trace::SetThreadName("main");
  trace::Enable();
  return s;
}

Status TraceSession::Finish() {
  if (comm_ == nullptr) return Status::Ok();
  trace::Disable();
  comm::Communicator& c = *comm_;
  comm_ = nullptr;
  const int P = c.size(), me = c.rank();
  const auto deadline = comm::DeadlineIn(comm::DefaultTimeout());
  // 1. Every rank's host and barrier time, to every rank: the origin of a rank's timestamps is
  //    the earliest barrier exit among the ranks of its host.
  struct Header {
    char host[64];
    int64_t barrier_ns;
  } mine{};
  gethostname(mine.host, sizeof mine.host - 1);
  mine.barrier_ns = barrier_ns_;
  std::vector<Header> all(static_cast<size_t>(P));
  std::vector<size_t> counts(static_cast<size_t>(P), sizeof(Header));
  RETURN_IF_ERROR(c.AllGatherV(comm::HostBuffer(&mine, sizeof mine),
                               comm::HostBuffer(all.data(), all.size() * sizeof(Header)), counts,
                               deadline));
  int64_t origin = mine.barrier_ns;
  int hosts = 0;
  for (int r = 0; r < P; ++r) {
    const Header& h = all[size_t(r)];
    if (std::strncmp(h.host, mine.host, sizeof h.host) == 0)
      origin = std::min(origin, h.barrier_ns);
    bool first_of_host = true;
    for (int q = 0; q < r; ++q) {
      if (std::strncmp(all[size_t(q)].host, h.host, sizeof h.host) == 0) first_of_host = false;
    }
    hosts += first_of_host ? 1 : 0;
  }
  // 2. This rank's events as a JSON fragment; the sizes, then the bytes, to rank 0 (AllGatherV
  //    delivers to every rank; the others drop it: a trace is megabytes, not the document).
  const std::string fragment = trace::SerializeEvents(
      me, fmt::format("rank {} ({})", me, std::string(mine.host, strnlen(mine.host, 64))), origin);
  const uint64_t size = fragment.size();
  std::vector<uint64_t> sizes(static_cast<size_t>(P));
  std::fill(counts.begin(), counts.end(), sizeof(uint64_t));
  RETURN_IF_ERROR(c.AllGatherV(comm::HostBuffer(&size, sizeof size),
                               comm::HostBuffer(sizes.data(), sizes.size() * sizeof(uint64_t)),
                               counts, deadline));
  uint64_t total = 0;
  for (int r = 0; r < P; ++r) {
    counts[size_t(r)] = size_t(sizes[size_t(r)]);
    total += sizes[size_t(r)];
  }
  std::string gathered(size_t(total), '\0');
  RETURN_IF_ERROR(c.AllGatherV(comm::HostBuffer(fragment.data(), fragment.size()),
                               comm::HostBuffer(gathered.data(), gathered.size()), counts,
                               deadline));
  Status st;
  if (me == 0) {
    std::vector<std::string> fragments;
    size_t at = 0;
    for (int r = 0; r < P; ++r) {
      fragments.push_back(gathered.substr(at, size_t(sizes[size_t(r)])));
      at += size_t(sizes[size_t(r)]);
    }
    const std::string other =
        fmt::format(R"({{"ranks":{},"hosts":{},"clock":"steady_clock","time_unit":"us",)"
                    R"("origin":"the earliest start-barrier exit of the ranks on each host"}})",
                    P, hosts);
    st = WriteFileAtomically(path_, trace::MergeTraceFragments(fragments, other))
             .WithContext("--trace");
  }
  return comm::AgreeOnStatus(c, st);
}

}  // namespace longctx::cli
