// Backend-independent parts of the Communicator contract: the default timeout and WaitAll.
#include "longctx/comm/communicator.h"

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "longctx/core/log.h"

namespace longctx::comm {

std::chrono::milliseconds DefaultTimeout() {
  constexpr std::chrono::milliseconds kDefault{300'000};
  const char* env = std::getenv("LONGCTX_COMM_TIMEOUT_S");
  if (env == nullptr || *env == '\0') return kDefault;
  char* end = nullptr;
  errno = 0;
  const double seconds = std::strtod(env, &end);
  // Up to ~30 years: anything beyond is a typo, and the product must fit in the tick count.
  if (errno != 0 || end == env || *end != '\0' || !std::isfinite(seconds) || seconds <= 0 ||
      seconds > 1e9) {
    LONGCTX_LOG_WARN("LONGCTX_COMM_TIMEOUT_S='{}' is not a positive number of seconds; using {} s",
                     env, kDefault.count() / 1000);
    return kDefault;
  }
  return std::chrono::milliseconds(static_cast<int64_t>(std::ceil(seconds * 1000.0)));
}

Status WaitAll(std::span<RequestPtr> requests, Deadline deadline) {
  Status first;
  for (RequestPtr& request : requests) {
    if (request == nullptr) continue;
    Status status = request->Wait(deadline);
    if (!status.ok() && first.ok()) first = std::move(status);
  }
  return first;
}

Status AgreeOnStatus(Communicator& comm, const Status& local) {
  int64_t lowest = local.ok() ? comm.size() : comm.rank();
  const Status st = comm.AllReduce(&lowest, 1, ReduceType::kI64, ReduceOp::kMin,
                                   DeadlineIn(DefaultTimeout()));
  if (!st.ok()) return st;
  if (lowest == comm.size()) return Status::Ok();
  if (lowest == comm.rank()) {
    // Named once: a status agreed on before (a nested collective step) already carries it.
    const std::string who = fmt::format("rank {}", comm.rank());
    const bool named = local.message().rfind(who + ": ", 0) == 0;
    return comm.size() > 1 && !named ? local.WithContext(who) : local;
  }
  return Status(StatusCode::kFailedPrecondition, "");
}

}  // namespace longctx::comm
