// Test hooks of the CLI (declared in commands.h).
#include <csignal>
#include <cstdlib>

#include "commands.h"

namespace longctx::cli {

void MaybeKillForTest(comm::Communicator& c) {
  const char* fault = std::getenv("LONGCTX_TEST_KILL_RANK");
  if (fault == nullptr || *fault == '\0') return;
  (void)c.Barrier(comm::DeadlineIn(comm::DefaultTimeout()));
  if (std::atoi(fault) == c.rank()) std::raise(SIGKILL);
}

}  // namespace longctx::cli
