// The coordinator service: one Boost.Asio io_context that accepts clients and worker groups on
// one TCP port, authenticates every connection first (shared token, constant-time compare),
// queues jobs, dispatches each to an idle worker group (a question to the group that holds its
// document), relays progress and generated tokens back as they arrive, and keeps the job table
// under --state-dir so a restart loses nothing finished.
//
// Threads: everything runs on the thread that runs the io_context; no locks. Sessions are kept
// alive by shared_from_this in their pending handlers and have one write in flight at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "longctx/coordinator/frame.h"
#include "longctx/core/status.h"

namespace longctx::coordinator {

struct ServerOptions {
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  uint16_t port = 7070;            // 0: the OS picks one (see Server::port())
  std::string token;               // the shared secret (required)
  std::string state_dir;           // job table (required)
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  uint64_t max_document_bytes = uint64_t(256) << 20;
  uint64_t max_pending_bytes = uint64_t(1) << 30;  // uploads + queued documents, all clients
  int max_jobs_per_client = 16;    // uploads in progress + queued/running jobs of one connection
  int max_connections = 512;
  std::chrono::milliseconds hello_timeout{5000};   // from accept to a valid Hello
  std::chrono::milliseconds frame_timeout{5000};   // from a frame's first byte to its last
  std::chrono::milliseconds idle_timeout{120000};  // a client with nothing in flight
  std::chrono::milliseconds worker_timeout{6000};  // a worker group silent this long is lost
  std::chrono::milliseconds heartbeat_interval{1000};  // to every authenticated peer
};

class Server {
 public:
  // Loads the job table (jobs a previous run left queued or running are marked failed), binds and
  // starts accepting. The io_context is run by the caller.
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
