// `longctx store --pool SIZE --listen HOST:PORT --token-file F [--address-file F]`: a memory-only
// KV store process (DESIGN.md §3) for nodes that lend host memory to a job. Clients must prove the
// token in F (created, mode 0600, when absent); `--insecure-no-auth` instead serves anyone, and
// only on a loopback address (docs/security.md). It registers the pool, serves
// allocate/free/stats and one-sided access over UCX until SIGTERM or SIGINT, and exits 0.
// Readiness: once it answers on its address it prints "longctx store: listening on HOST:PORT ..."
// and, with --address-file, writes "HOST:PORT\n" there (atomically: write, then rename), so a
// script or test can wait for the file.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>

#include "commands.h"
#include "longctx/cache/store.h"
#include "longctx/coordinator/metrics_http.h"
#include "longctx/core/byte_size.h"
#include "longctx/core/file.h"
#include "longctx/core/log.h"

namespace longctx::cli {

namespace {

// The write end of the stop pipe (see RunStore): written by the SIGTERM/SIGINT handler.
int g_stop_write_fd = -1;
void OnStopSignal(int sig) {
  const int saved = errno;
  const unsigned char c = static_cast<unsigned char>(sig);
  if (g_stop_write_fd >= 0) (void)!::write(g_stop_write_fd, &c, 1);
  errno = saved;
}

struct StoreOptions {
  std::string pool;
  std::string listen = "127.0.0.1:0";
  std::string address_file;
  std::string token_file;
  bool insecure_no_auth = false;
  std::string quota_per_session;  // bytes; empty = the whole pool
  size_t max_sessions = 256;
  size_t max_sessions_per_host = 64;
  std::string metrics_listen;  // empty: no metrics endpoint
};

// The store's series (docs/metrics.md), copied from PoolServer::Stats() at each scrape. A store
// sees no get or put (clients read and write the pool one-sided over UCX, and verify checksums
// themselves): blocks are its allocations.
void AddStoreMetrics(metrics::Registry& r, const cache::PoolServer& server) {
  metrics::Gauge& capacity = r.MustGauge("longctx_store_pool_bytes", "Bytes the pool lends");
  metrics::Gauge& used = r.MustGauge("longctx_store_pool_used_bytes",
                                     "Bytes of the pool allocated to clients (64-byte aligned)");
  metrics::Gauge& blocks = r.MustGauge("longctx_store_blocks",
                                       "Allocations held by clients (one per stored block)");
  metrics::Gauge& sessions = r.MustGauge("longctx_store_sessions",
                                         "Authenticated client sessions connected");
  metrics::Gauge& pending = r.MustGauge("longctx_store_pending_hellos",
                                        "Connections whose hello has not arrived yet");
  metrics::Counter& refused = r.MustCounter(
      "longctx_store_refused_hellos",
      "Hellos refused: wrong token, bad address, session limits, malformed");
  metrics::Counter& dropped = r.MustCounter("longctx_store_dropped_requests",
                                            "Requests carrying no live session's key");
  metrics::Counter& misbehaving = r.MustCounter(
      "longctx_store_closed_misbehaving", "Sessions closed for sending bytes after the hello");
  r.AddCollector([&server, &capacity, &used, &blocks, &sessions, &pending, &refused, &dropped,
                  &misbehaving] {
    const cache::PoolServerStats s = server.Stats();
    capacity.Set(double(s.capacity_bytes));
    used.Set(double(s.used_bytes));
    blocks.Set(double(s.allocations));
    sessions.Set(double(s.clients));
    pending.Set(double(s.pending_hellos));
    refused.Set(double(s.refused_hellos));
    dropped.Set(double(s.dropped_requests));
    misbehaving.Set(double(s.closed_misbehaving));
  });
}

Status WriteAddressFile(const std::string& path, const std::string& address) {
  return WriteFileAtomically(path, address + "\n").WithContext("--address-file");
}

Status RunStore(const StoreOptions& o) {
  ASSIGN_OR_RETURN(const uint64_t pool_bytes, ParseByteSize(o.pool, "--pool"));
  if (pool_bytes == 0) return InvalidArgument("--pool: the pool needs at least one byte");
  ASSIGN_OR_RETURN(comm::ucx::HostPort where, comm::ucx::ParseHostPort(o.listen, "--listen"));
  uint64_t quota = 0;
  if (!o.quota_per_session.empty()) {
    ASSIGN_OR_RETURN(quota, ParseByteSize(o.quota_per_session, "--quota-per-session"));
    if (quota == 0) return InvalidArgument("--quota-per-session: a quota needs at least one byte");
  }
  if (o.max_sessions == 0 || o.max_sessions_per_host == 0) {
    return InvalidArgument("--max-sessions and --max-sessions-per-host must be >= 1");
  }
  std::optional<cache::StoreToken> token;
  if (!o.token_file.empty()) {
    bool created = false;
    Result<cache::StoreToken> t = cache::LoadOrCreateStoreToken(o.token_file, &created);
    if (!t.ok()) return t.status().WithContext("--token-file");
    token = *t;
    if (created) LONGCTX_LOG_INFO("store: created token file {} (mode 0600)", o.token_file);
  } else if (!o.insecure_no_auth) {
    return InvalidArgument("the store needs --token-file FILE (clients pass the same file as "
                           "--kv-store-token-file), or --insecure-no-auth on a loopback address");
  } else if (where.host != "localhost" && where.host.rfind("127.", 0) != 0) {
    return InvalidArgument("--insecure-no-auth: only on a loopback --listen (127.0.0.0/8), not {}",
                           where.host);
  }
  // SIGTERM/SIGINT end the store cleanly, whichever thread the kernel delivers them to: threads
  // that started before this point (OpenBLAS starts its pool when the library loads) do not
  // have them blocked, so a sigwait on a blocked mask would race with the default action
  // (death by the signal, seen in CI). A handler on every thread writes the signal number to a
  // pipe that the main thread reads below.
  int stop_pipe[2];
  if (::pipe2(stop_pipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "store: pipe");
  UniqueFd stop_read(stop_pipe[0]);
  g_stop_write_fd = stop_pipe[1];  // lives until exit: the handler may run at any time
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);

  // UCX opens its own TCP listening socket on every network device it may use, whatever
  // --listen says, and over TCP anyone who reaches it can read the pool without the token
  // (docs/security.md): confine it to the device of the --listen address, and a loopback store
  // (whose clients share its host) to the transports other than tcp — unless UCX_TLS says.
  const std::string device = comm::ucx::NetDeviceOf(where.host);
  const bool loopback = where.host == "localhost" || where.host.rfind("127.", 0) == 0;
  ASSIGN_OR_RETURN(std::shared_ptr<comm::ucx::Context> ctx,
                   comm::ucx::Context::Create(device, loopback ? "^tcp" : ""));
  cache::PoolServerOptions so;
  so.pool_bytes = pool_bytes;
  so.listen = where.ToString();
  so.token = token;
  so.quota_per_session = quota;
  so.max_sessions = o.max_sessions;
  so.max_sessions_per_host = o.max_sessions_per_host;
  Result<std::unique_ptr<cache::PoolServer>> server = cache::PoolServer::Start(ctx, so);
  if (!server.ok()) return server.status().WithContext("--listen " + o.listen);
  if (device.empty()) {
    LONGCTX_LOG_WARN("store: --listen {} names no single local device: UCX listens on all of them",
                     where.host);
  } else {
    LONGCTX_LOG_INFO("store: UCX confined to network device {}{}", device,
                     loopback && std::getenv("UCX_TLS") == nullptr ? ", no tcp transport" : "");
  }
  // Metrics after the pool exists; the endpoint (its own thread) is stopped before the server.
  metrics::Registry registry;
  std::unique_ptr<coordinator::MetricsHttpServer> metrics_http;
  if (!o.metrics_listen.empty()) {
    coordinator::MetricsHttpOptions mo;
    RETURN_IF_ERROR(coordinator::ParseMetricsListen(o.metrics_listen, &mo.host, &mo.port));
    AddStoreMetrics(registry, **server);
    ASSIGN_OR_RETURN(metrics_http, coordinator::MetricsHttpServer::Start(registry, mo));
  }
  const std::string address = (*server)->address().ToString();
  if (!o.address_file.empty()) RETURN_IF_ERROR(WriteAddressFile(o.address_file, address));
  std::printf("longctx store: listening on %s (pool %s, %s, pid %d)\n", address.c_str(),
              FormatByteSize(pool_bytes).c_str(),
              token ? ("token " + o.token_file).c_str() : "NO AUTHENTICATION",
              static_cast<int>(getpid()));
  if (metrics_http) {
    std::printf("longctx store: metrics on http://%s:%u/metrics\n", metrics_http->host().c_str(),
                unsigned(metrics_http->port()));
  }
  std::fflush(stdout);

  int signal_number = 0;
  for (;;) {
    unsigned char sig = 0;
    const ssize_t got = ::read(stop_read.get(), &sig, 1);
    if (got == 1) {
      signal_number = sig;
      break;
    }
    if (got < 0 && errno == EINTR) continue;
    return ErrnoStatus(errno, "store: waiting for a stop signal");
  }
  const cache::PoolServerStats stats = (*server)->Stats();
  LONGCTX_LOG_INFO("store {}: signal {}; {} clients, {} of {} bytes in use", address,
                   signal_number, stats.clients, stats.used_bytes, stats.capacity_bytes);
  metrics_http.reset();
  server->reset();
  if (!o.address_file.empty()) {
    std::error_code ec;
    std::filesystem::remove(o.address_file, ec);
  }
  return Status::Ok();
}

}  // namespace

Runner AddStoreCommand(CLI::App& app) {
  auto o = std::make_shared<StoreOptions>();
  app.add_option("--pool", o->pool, "bytes of host memory to lend: 4096, 512M, 4G")->required();
  app.add_option("--listen", o->listen, "bootstrap HOST:PORT (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--address-file", o->address_file,
                 "write HOST:PORT here once ready (removed at exit)");
  auto* token = app.add_option("--token-file", o->token_file,
                               "the token clients must prove (64 hex digits, mode 0600; created "
                               "when absent)");
  app.add_flag("--insecure-no-auth", o->insecure_no_auth,
               "serve any local process without a token (loopback --listen only)")
      ->excludes(token);
  app.add_option("--quota-per-session", o->quota_per_session,
                 "bytes one client session may hold at once (default: the whole pool)");
  app.add_option("--max-sessions", o->max_sessions, "live client sessions at most")
      ->capture_default_str();
  app.add_option("--max-sessions-per-host", o->max_sessions_per_host,
                 "sessions and pending hellos from one IP address at most")
      ->capture_default_str();
  app.add_option("--metrics-listen", o->metrics_listen,
                 "serve Prometheus metrics at http://HOST:PORT/metrics (PORT alone: 127.0.0.1; "
                 "0: any free port); unauthenticated: keep it on loopback or a trusted network");
  return [o]() { return RunStore(*o); };
}

}  // namespace longctx::cli
