// `longctx coordinator`: the control-plane service (coordinator/server.h). Listens on loopback
// unless told otherwise, refuses to start without a client token and a separate worker token
// (each at least 16 bytes), keeps its job table under --state-dir, and stops cleanly on
// SIGINT/SIGTERM (finished results and unfinished jobs stay on disk).
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>  // before Boost 1.74 Asio, which uses std::exchange without it

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "longctx/coordinator/frame.h"
#include "longctx/coordinator/metrics_http.h"
#include "longctx/coordinator/server.h"
#include "longctx/core/byte_size.h"

namespace longctx::cli {
namespace {

struct CoordinatorFlags {
  std::string listen = "127.0.0.1:7070";
  std::string token_file, client_tokens_file, worker_token_file, state_dir;
  std::string max_document = "256M", max_frame = "4M", max_pending = "1G";
  std::string retain = "7d";
  std::string metrics_listen;  // empty: no metrics endpoint
  coordinator::TlsConfig tls;
  bool insecure_plaintext = false;
  int retain_jobs = 1000, max_attempts = 3;
  int max_connections = 512, max_connections_per_address = 64;
  int max_jobs_per_client = 16;
  double frame_timeout_s = 5, idle_timeout_s = 120, worker_timeout_s = 6, hello_timeout_s = 5;
};

Result<std::chrono::milliseconds> Millis(double seconds, const char* flag) {
  if (!(seconds > 0) || seconds > 86400) {
    return InvalidArgument("{} must be in (0, 86400] seconds, got {}", flag, seconds);
  }
  return std::chrono::milliseconds(int64_t(seconds * 1e3));
}

// "90" or "90s", "30m", "12h", "7d" -> milliseconds (0 allowed: expire at once).
Result<std::chrono::milliseconds> ParseAge(const std::string& text, const char* flag) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (...) {
    used = 0;
  }
  double unit = 1;
  const std::string rest = used == 0 ? text : text.substr(used);
  if (rest == "m") unit = 60;
  else if (rest == "h") unit = 3600;
  else if (rest == "d") unit = 86400;
  else if (!rest.empty() && rest != "s") used = 0;
  if (used == 0 || !(v >= 0) || v * unit > 10 * 365 * 86400.0) {
    return InvalidArgument("{} must be an age like 90s, 30m, 12h or 7d (at most 10 years), got '{}'",
                           flag, text);
  }
  return std::chrono::milliseconds(int64_t(v * unit * 1e3));
}

Status RunCoordinator(const CoordinatorFlags& f) {
  coordinator::ServerOptions o;
  RETURN_IF_ERROR(coordinator::ParseHostPort(f.listen, /*allow_zero=*/true, &o.host, &o.port)
                      .WithContext("--listen"));
  if (f.state_dir.empty()) return InvalidArgument("--state-dir DIR is required");
  o.state_dir = f.state_dir;
  // Client identities: named ones from --client-tokens-file, and/or the one token of --token-file
  // (or LONGCTX_TOKEN), identity "default". Worker groups: the worker token only.
  if (!f.client_tokens_file.empty()) {
    ASSIGN_OR_RETURN(o.client_tokens, coordinator::LoadClientTokens(f.client_tokens_file));
  }
  const char* env_token = std::getenv("LONGCTX_TOKEN");
  if (o.client_tokens.empty() || !f.token_file.empty() || (env_token && *env_token)) {
    ASSIGN_OR_RETURN(o.token, coordinator::LoadToken(f.token_file));
  }
  ASSIGN_OR_RETURN(o.worker_token,
                   coordinator::LoadSecret(f.worker_token_file, "LONGCTX_WORKER_TOKEN",
                                           "--worker-token-file", "worker token"));
  o.tls = f.tls;
  o.insecure_plaintext = f.insecure_plaintext;
  ASSIGN_OR_RETURN(o.retain, ParseAge(f.retain, "--retain"));
  if (f.retain_jobs < 0) return InvalidArgument("--retain-jobs must be >= 0");
  o.retain_jobs = f.retain_jobs;
  o.max_attempts = f.max_attempts;  // checked by Server::Start ([1, 100])
  if (f.max_connections < 1 || f.max_connections_per_address < 1) {
    return InvalidArgument("--max-connections and --max-connections-per-address must be >= 1");
  }
  o.max_connections = f.max_connections;
  o.max_connections_per_address = f.max_connections_per_address;
  o.max_unauthenticated_per_address = std::min(o.max_unauthenticated_per_address,
                                               f.max_connections_per_address);
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

  // The metrics endpoint first, on its own thread; the registry outlives both servers.
  metrics::Registry registry;
  std::unique_ptr<coordinator::MetricsHttpServer> metrics_http;
  if (!f.metrics_listen.empty()) {
    coordinator::MetricsHttpOptions mo;
    RETURN_IF_ERROR(coordinator::ParseMetricsListen(f.metrics_listen, &mo.host, &mo.port));
    ASSIGN_OR_RETURN(metrics_http, coordinator::MetricsHttpServer::Start(registry, mo));
    o.metrics = &registry;
  }

  boost::asio::io_context io;
  ASSIGN_OR_RETURN(std::unique_ptr<coordinator::Server> server,
                   coordinator::Server::Start(io, std::move(o)));
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (!ec) server->Stop();
  });
  // Scripts wait for this line (the port is the real one when --listen asked for port 0).
  fmt::print("longctx coordinator: listening on {}:{} ({}; state in {})\n", host, server->port(),
             f.tls.enabled() ? "TLS" : "plaintext", state);
  if (metrics_http) {
    fmt::print("longctx coordinator: metrics on http://{}:{}/metrics\n", metrics_http->host(),
               metrics_http->port());
  }
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
                 "file holding the client token, identity 'default' (else the LONGCTX_TOKEN "
                 "environment variable)");
  app.add_option("--client-tokens-file", f->client_tokens_file,
                 "file of 'NAME TOKEN' lines: one client identity each (a client sees only its "
                 "identity's jobs and documents)");
  app.add_option("--worker-token-file", f->worker_token_file,
                 "file holding the worker groups' token, different from every client token "
                 "(else the LONGCTX_WORKER_TOKEN environment variable)");
  app.add_option("--tls-cert", f->tls.cert_file, "TLS: the coordinator's certificate (PEM)");
  app.add_option("--tls-key", f->tls.key_file, "TLS: its private key (PEM)");
  app.add_option("--tls-ca", f->tls.ca_file,
                 "TLS: the CA that signs worker groups' certificates (mutual TLS for workers)");
  app.add_flag("--insecure-plaintext", f->insecure_plaintext,
               "allow plaintext on a non-loopback address (tokens and documents in clear text)");
  app.add_option("--retain", f->retain, "finished job records older than this are deleted "
                 "(90s, 30m, 12h, 7d)")->capture_default_str();
  app.add_option("--retain-jobs", f->retain_jobs,
                 "finished job records kept per client identity (oldest deleted first)")
      ->capture_default_str();
  app.add_option("--max-attempts", f->max_attempts,
                 "dispatches of one job: a job whose worker group is lost runs again on another "
                 "until this many")->capture_default_str();
  app.add_option("--max-connections", f->max_connections, "open connections, all peers")
      ->capture_default_str();
  app.add_option("--max-connections-per-address", f->max_connections_per_address,
                 "open connections from one IP address")->capture_default_str();
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
  app.add_option("--metrics-listen", f->metrics_listen,
                 "serve Prometheus metrics at http://HOST:PORT/metrics (PORT alone: 127.0.0.1; "
                 "0: any free port); unauthenticated: keep it on loopback or a trusted network");
  return [f] { return RunCoordinator(*f); };
}

}  // namespace longctx::cli
