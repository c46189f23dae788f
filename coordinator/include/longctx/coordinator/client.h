// ControlConnection: a blocking connection to the coordinator with a deadline on every call
// (Boost.Asio underneath, driven by run_one_until), used by `longctx submit` / `status`, the
// tests and the benchmark. SubmitJob runs one job end to end: upload in chunks (or a Query on a
// held document), then the job's events until its result.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "longctx/coordinator/frame.h"
#include "longctx/coordinator/tls.h"
#include "longctx/core/status.h"

namespace longctx::coordinator {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

class ControlConnection {
 public:
  // TCP connect only (no Hello): tests use it to send what a real client never would.
  // local_address: bind the socket to this local IP first (empty: the OS chooses).
  // tls: when enabled, a TLS handshake follows the connect (the coordinator's certificate must
  // chain to tls.ca_file and name `host`).
  static Result<std::unique_ptr<ControlConnection>> Open(const std::string& host, uint16_t port,
                                                         Deadline deadline,
                                                         const std::string& local_address = "",
                                                         const TlsConfig& tls = {});
  // Open + Hello (role client) + its reply. kUnavailable when nothing listens; the server's
  // error message (e.g. "authentication failed: wrong token") when it refuses.
  static Result<std::unique_ptr<ControlConnection>> ConnectClient(
      const std::string& host, uint16_t port, const std::string& token, Deadline deadline,
      const std::string& local_address = "", const TlsConfig& tls = {});
  // The client identity the coordinator mapped the token to (set by ConnectClient).
  const std::string& client() const { return client_; }
  ~ControlConnection();
  ControlConnection(const ControlConnection&) = delete;
  ControlConnection& operator=(const ControlConnection&) = delete;

  Status Send(const control::Envelope& env, Deadline deadline);
  Status SendRaw(std::string_view bytes, Deadline deadline);
  // The next envelope that is not a Heartbeat. kUnavailable when the server closed the
  // connection; kDeadlineExceeded at the deadline.
  Result<control::Envelope> Receive(Deadline deadline);
  uint64_t NextRequestId() { return ++last_request_id_; }

 private:
  class Impl;
  explicit ControlConnection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  uint64_t last_request_id_ = 0;
  std::string client_;
};

struct JobRequest {
  std::string doc_id;
  const std::string* document = nullptr;  // null: a Query on a document a worker group holds
  std::string question;
  int64_t generate = 0;
};

// Runs one job and returns its final event (RESULT; a FAILED event or an Error becomes an error
// Status carrying the coordinator's message). on_event sees every event (QUEUED, STARTED,
// PROGRESS, TOKEN, ...) as it arrives; the whole job must end by `deadline`.
Result<control::JobEvent> SubmitJob(ControlConnection& conn, const JobRequest& request,
                                    const std::function<void(const control::JobEvent&)>& on_event,
                                    Deadline deadline);

// One StatusRequest (job_id 0: the overview only).
Result<control::StatusReply> QueryStatus(ControlConnection& conn, uint64_t job_id,
                                         Deadline deadline);
// The same with the listing's page (before_job_id, limit) set.
Result<control::StatusReply> QueryStatus(ControlConnection& conn,
                                         const control::StatusRequest& request, Deadline deadline);

}  // namespace longctx::coordinator
