// WorkerLink: rank 0 of a worker group talking to the coordinator. A thread of its own runs an
// Asio io_context that connects, says Hello (token, ranks, the documents the group holds),
// heartbeats every second, assembles each Assignment with its document chunks into a WorkerJob,
// and reconnects with exponential backoff when the coordinator goes away (a restart). The
// group's main thread takes jobs with NextJob() and reports with Send(); it never touches the
// socket, so MPI stays on the main thread (MPI_THREAD_FUNNELED).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "longctx/coordinator/frame.h"
#include "longctx/coordinator/tls.h"
#include "longctx/core/status.h"

namespace longctx::coordinator {

struct WorkerLinkOptions {
  std::string host;
  uint16_t port = 0;
  std::string token;
  std::string name;   // shown by `longctx status` (host:pid)
  std::string model;
  int32_t ranks = 1;
  TlsConfig tls;      // ca: the coordinator's CA; cert + key: the group's own certificate
  std::chrono::milliseconds backoff_initial{100}, backoff_max{2000};
  std::chrono::milliseconds silence_timeout{6000};  // no frame from the coordinator this long
};

struct WorkerJob {
  control::Assignment assignment;
  std::string document;     // empty for a question on a held document
  uint64_t connection = 0;  // the connection it came on (events of older ones are dropped)
};

class WorkerLink {
 public:
  explicit WorkerLink(WorkerLinkOptions options);
  ~WorkerLink();  // stops the thread and closes the connection
  WorkerLink(const WorkerLink&) = delete;
  WorkerLink& operator=(const WorkerLink&) = delete;

  void Start();
  // The next complete job, waiting at most `wait`.
  std::optional<WorkerJob> NextJob(std::chrono::milliseconds wait);
  // Queues an event for the coordinator if the connection `job.connection` is still the current
  // one; otherwise drops it (the coordinator has already failed that job).
  void Send(const WorkerJob& job, control::JobEvent event);
  // The documents the group holds, reported in every later Hello.
  void SetDocuments(std::vector<std::string> docs);
  // Set when the coordinator refused the group (wrong token, other version): retrying is futile.
  Status fatal() const;

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
  std::thread thread_;
};

}  // namespace longctx::coordinator
