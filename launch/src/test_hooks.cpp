// Test hooks of the CLI (declared in commands.h).
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "commands.h"
#include "longctx/core/file.h"
#include "longctx/core/log.h"

namespace longctx::cli {

void MaybeKillForTest(comm::Communicator& c) {
  const char* fault = std::getenv("LONGCTX_TEST_KILL_RANK");
  if (fault == nullptr || *fault == '\0') return;
  (void)c.Barrier(comm::DeadlineIn(comm::DefaultTimeout()));
  if (std::atoi(fault) == c.rank()) std::raise(SIGKILL);
}

}  // namespace longctx::cli

namespace longctx::cli {

void MaybePauseForTest(comm::Communicator& c) {
  const char* path = std::getenv("LONGCTX_TEST_PAUSE_FILE");
  if (path == nullptr || *path == '\0') return;
  if (c.rank() == 0) {
    if (Status st = WriteFileAtomically(path, "paused\n"); !st.ok()) {
      LONGCTX_LOG_WARN("test pause file: {}", st.ToString());
    }
    // The test removes the file to let the job go on; 120 s at most.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::filesystem::exists(path) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  (void)c.Barrier(comm::DeadlineIn(std::chrono::seconds(180)));
}

}  // namespace longctx::cli
