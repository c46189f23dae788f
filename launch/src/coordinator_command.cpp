// `longctx coordinator`: the control-plane service (coordinator/server.h). Listens on loopback
// unless told otherwise, refuses to start without a token, keeps its job table under
// --state-dir, and stops cleanly on SIGINT/SIGTERM (finished results stay on disk).
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>  // before Boost 1.74 Asio, which uses std::exchange without it

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "longctx/coordinator/frame.h"
#include "longctx/coordinator/server.h"
#include "longctx/core/byte_size.h"

namespace longctx::cli {
namespace {

struct CoordinatorFlags {
  std::string listen = "127.0.0.1:7070";
  std::string token_file, state_dir;
  std::string max_document = "256M", max_frame = "4M", max_pending = "1G";
  int max_jobs_per_client = 16;
  double frame_timeout_s = 5, idle_timeout_s = 120, worker_timeout_s = 6, hello_timeout_s = 5;
};

Result<std::chrono::milliseconds> Millis(double seconds, const char* flag) {
  if (!(seconds > 0) || seconds > 86400) {
    return InvalidArgument("{} must be in (0, 86400] seconds, got {}", flag, seconds);
  }
  return std::chrono::milliseconds(int64_t(seconds * 1e3));
}

Status RunCoordinator(const CoordinatorFlags& f) {
  coordinator::ServerOptions o;
  RETURN_IF_ERROR(coordinator::ParseHostPort(f.listen, /*allow_zero=*/true, &o.host, &o.port)
                      .WithContext("--listen"));
  if (f.state_dir.empty()) return InvalidArgument("--state-dir DIR is required");
  o.state_dir = f.state_dir;
  ASSIGN_OR_RETURN(o.token, coordinator::LoadToken(f.token_file));
  ASSIGN_OR_RETURN(o.max_document_bytes, ParseByteSize(f.max_document, "--max-document"));
  ASSIGN_OR_RETURN(const uint64_t frame, ParseByteSize(f.max_frame, "--max-frame"));
  o.max_frame_bytes = size_t(frame);
  ASSIGN_OR_RETURN(o.max_pending_bytes, ParseByteSize(f.max_pending, "--max-pending"));
  if (f.max_jobs_per_client < 1) return InvalidArgument("--max-jobs-per-client must be >= 1");
  o.max_jobs_per_client = f.max_jobs_per_client;
  ASSIGN_OR_RETURN(o.frame_timeout, Millis(f.frame_timeout_s, "--frame-timeout"));
  ASSIGN_OR_RETURN(o.idle_timeout, Millis(f.idle_timeout_s, "--idle-timeout"));
  ASSIGN_OR_RETURN(o.worker_timeout, Millis(f.worker_timeout_s, "--worker-timeout"));
  ASSIGN_OR_RETURN(o.hello_timeout, Millis(f.hello_timeout_s, "--hello-timeout"));
  const std::string host = o.host, state = o.state_dir;

  boost::asio::io_context io;
  ASSIGN_OR_RETURN(std::unique_ptr<coordinator::Server> server,
                   coordinator::Server::Start(io, std::move(o)));
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (!ec) server->Stop();
  });
  // Scripts wait for this line (the port is the real one when --listen asked for port 0).
  fmt::print("longctx coordinator: listening on {}:{} (state in {})\n", host, server->port(), state);
  std::fflush(stdout);
  io.run();
  fmt::print("longctx coordinator: stopped\n");
  return Status::Ok();
}

}  // namespace

Runner AddCoordinatorCommand(CLI::App& app) {
  auto f = std::make_shared<CoordinatorFlags>();
  app.add_option("--listen", f->listen, "HOST:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--token-file", f->token_file,
                 "file holding the shared token (else the LONGCTX_TOKEN environment variable)");
  app.add_option("--state-dir", f->state_dir, "directory of the job table and finished results");
  app.add_option("--max-document", f->max_document, "largest document accepted")
      ->capture_default_str();
  app.add_option("--max-frame", f->max_frame, "largest frame accepted")->capture_default_str();
  app.add_option("--max-pending", f->max_pending,
                 "bytes of documents held in uploads and queues, all clients")
      ->capture_default_str();
  app.add_option("--max-jobs-per-client", f->max_jobs_per_client,
                 "uploads and unfinished jobs per connection")->capture_default_str();
  app.add_option("--frame-timeout", f->frame_timeout_s,
                 "seconds from a frame's first byte to its last")->capture_default_str();
  app.add_option("--idle-timeout", f->idle_timeout_s,
                 "seconds a client with nothing in flight may stay silent")->capture_default_str();
  app.add_option("--worker-timeout", f->worker_timeout_s,
                 "seconds of silence after which a worker group is lost")->capture_default_str();
  app.add_option("--hello-timeout", f->hello_timeout_s,
                 "seconds from connecting to authenticating")->capture_default_str();
  return [f] { return RunCoordinator(*f); };
}

}  // namespace longctx::cli
