#include "longctx/test/child_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>

extern char** environ;

namespace longctx::test {
namespace {

using Clock = std::chrono::steady_clock;

bool Unset(const std::vector<std::string>& names, const char* entry) {
  for (const std::string& name : names) {
    if (std::strncmp(entry, name.c_str(), name.size()) == 0 && entry[name.size()] == '=') {
      return true;
    }
  }
  return false;
}

}  // namespace

ChildProcess::ChildProcess(const SpawnOptions& options) {
  if (options.argv.empty()) {
    ADD_FAILURE() << "ChildProcess: an empty argv";
    return;
  }
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!Unset(options.unset_env, *e)) env.push_back(*e);
  }
  env.push_back(nullptr);
  std::vector<char*> argv;
  for (const std::string& a : options.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!options.log.empty()) {
    posix_spawn_file_actions_addopen(&actions, 1, options.log.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  }
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << options.argv[0] << ": " << std::strerror(rc);
    return;
  }
  pid_ = pid;
}

ChildProcess::~ChildProcess() { (void)Terminate(std::chrono::seconds(5)); }

void ChildProcess::Signal(int sig) const {
  if (pid_ > 0) ::kill(pid_, sig);
}

int ChildProcess::WaitExit(std::chrono::milliseconds limit) {
  if (pid_ <= 0) return -1;
  const auto until = Clock::now() + limit;
  for (;;) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    if (Clock::now() >= until) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool ChildProcess::WaitStopped(std::chrono::milliseconds limit) const {
  if (pid_ <= 0) return false;
  const auto until = Clock::now() + limit;
  while (Clock::now() < until) {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
    const std::string stat((std::istreambuf_iterator<char>(in)), {});
    const size_t paren = stat.rfind(')');  // the state follows the command name: "pid (comm) T"
    if (paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'T') {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

int ChildProcess::Terminate(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return -1;
  Signal(SIGCONT);
  Signal(SIGTERM);
  int status = WaitExit(grace);
  if (status < 0) {
    Signal(SIGKILL);
    status = WaitExit(std::chrono::seconds(5));
  }
  return status;
}

int RunWithDeadline(const SpawnOptions& options, std::chrono::milliseconds limit) {
  ChildProcess child(options);
  if (!child.running()) return -1;
  const int status = child.WaitExit(limit);
  if (status < 0) {
    ADD_FAILURE() << options.argv[0] << " did not exit within " << limit.count() << " ms";
    child.Signal(SIGKILL);
    (void)child.WaitExit(std::chrono::seconds(5));
  }
  return status;
}

}  // namespace longctx::test
