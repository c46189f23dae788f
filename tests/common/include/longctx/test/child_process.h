// A child process for a test (tests/common): started with posix_spawn, its stdout and stderr in a
// log file, every wait bounded by a deadline, and never leaked: the destructor stops it (SIGTERM,
// then SIGKILL after a grace period) and reaps it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace longctx::test {

struct SpawnOptions {
  std::vector<std::string> argv;     // argv[0] is the program's path (no PATH search)
  std::filesystem::path log;         // stdout and stderr, truncated; empty: the test's own
  std::vector<std::string> unset_env;  // names removed from the child's copy of the environment
};

class ChildProcess {
 public:
  // A failure to start is a gtest failure (ADD_FAILURE); then pid() is -1 and running() false.
  explicit ChildProcess(const SpawnOptions& options);
  ~ChildProcess();  // Terminate(5 s)
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // True until a wait has reaped the child (it may already be a zombie).
  bool running() const { return pid_ > 0; }
  void Signal(int sig) const;
  // Waits up to `limit` for the child to exit: its wait status (decode with WIFEXITED etc.), or
  // -1 if it is still running at the deadline (or was never started / already reaped).
  int WaitExit(std::chrono::milliseconds limit);
  // True once the kernel shows the child stopped ("T" in /proc/PID/stat), polled up to `limit`.
  bool WaitStopped(std::chrono::milliseconds limit) const;
  // SIGCONT + SIGTERM, up to `grace` to exit, then SIGKILL and a reap. Its wait status, or -1.
  int Terminate(std::chrono::milliseconds grace);

 private:
  pid_t pid_ = -1;
};

// Runs a command to completion with a deadline: its wait status; at the deadline the child is
// killed, the failure reported (ADD_FAILURE) and -1 returned.
int RunWithDeadline(const SpawnOptions& options, std::chrono::milliseconds limit);

}  // namespace longctx::test
