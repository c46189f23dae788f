// The coordinator service: one Boost.Asio io_context that accepts clients and worker groups on
// one TCP port, authenticates every connection first (a client token, which names the client's
// identity, or the separate worker token; constant-time compares), queues jobs, dispatches each to
// an idle worker group (a question to the group that holds its document), relays progress and
// generated tokens back as they arrive, requeues a job whose worker group is lost, and keeps the
// job table (and the documents of unfinished jobs) under --state-dir so a restart loses nothing
// queued, running or finished. A client sees and reaches only its own identity's jobs and
// documents. docs/security-coordinator.md is the threat model.
//
// Threads: everything runs on the thread that runs the io_context; no locks. Sessions are kept
// alive by shared_from_this in their pending handlers and have one write in flight at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "longctx/coordinator/frame.h"
#include "longctx/coordinator/tls.h"
#include "longctx/core/metrics.h"
#include "longctx/core/status.h"

namespace longctx::coordinator {

struct ServerOptions {
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  uint16_t port = 7070;            // 0: the OS picks one (see Server::port())
  std::string token;               // one client token, identity "default" (the one-token setup)
  std::vector<ClientCredential> client_tokens;  // named client identities (--client-tokens-file)
  std::string worker_token;        // worker groups' token (required; no client token may equal it)
  std::string state_dir;           // job table (required)
  // TLS (tls.h): cert + key + the CA of worker groups' certificates. Without it the coordinator
  // listens only on a loopback address, unless insecure_plaintext.
  TlsConfig tls;
  bool insecure_plaintext = false;
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  uint64_t max_document_bytes = uint64_t(256) << 20;
  uint64_t max_pending_bytes = uint64_t(1) << 30;  // uploads + queued documents, all clients
  int max_jobs_per_client = 16;    // uploads in progress + queued/running jobs of one connection
  int max_connections = 512;
  int max_connections_per_address = 64;
  int max_unauthenticated_per_address = 32;  // connections from one address not yet past Hello
  // Bytes a connection may send before its Hello is accepted (the Hello frame included).
  size_t max_hello_bytes = size_t(16) << 10;
  // Bytes queued for a client that does not read them; beyond this it is cut off (0: two frame
  // limits + 1 MiB). A worker group's queue holds its one assignment's document instead.
  size_t max_client_queued_bytes = 0;
  // Failed authentications: the first auth_free_failures from one address cost nothing; each
  // later one locks the address out for auth_backoff_initial, doubling up to auth_backoff_max.
  // The count decays after 10 minutes without a failure.
  int auth_free_failures = 3;
  std::chrono::milliseconds auth_backoff_initial{1000}, auth_backoff_max{60000};
  // Retention of finished (done or failed) job records: older than `retain` (from the time they
  // finished), or beyond the newest `retain_jobs` of one client identity, they are deleted.
  std::chrono::milliseconds retain{std::chrono::hours(24 * 7)};
  int retain_jobs = 1000;
  int max_attempts = 3;            // dispatches of one job (a lost worker group requeues it)
  // After a start, questions on documents no connected group holds wait this long for worker
  // groups to reconnect before they fail.
  std::chrono::milliseconds reconnect_grace{10000};
  std::chrono::milliseconds hello_timeout{5000};   // from accept to a valid Hello
  std::chrono::milliseconds frame_timeout{5000};   // from a frame's first byte to its last
  std::chrono::milliseconds idle_timeout{120000};  // a client with nothing in flight
  std::chrono::milliseconds worker_timeout{6000};  // a worker group silent this long is lost
  std::chrono::milliseconds heartbeat_interval{1000};  // to every authenticated peer
  // Where the service's metrics go (docs/metrics.md: longctx_jobs_total, longctx_jobs_queued,
  // longctx_jobs_running, longctx_worker_groups, longctx_job_phase_seconds); must outlive the
  // server. Null: a private registry nobody reads.
  metrics::Registry* metrics = nullptr;
};

class Server {
 public:
  // Checks the options (token lengths, distinct tokens), loads the job table (jobs a previous run
  // left queued or running are queued again, with their documents), binds and starts accepting.
  // The io_context is run by the caller.
  static Result<std::unique_ptr<Server>> Start(boost::asio::io_context& io, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  uint16_t port() const;
  // Stops accepting and closes every connection; the io_context then runs out of work.
  void Stop();

  class Impl;

 private:
  explicit Server(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

}  // namespace longctx::coordinator
