// `longctx store --pool SIZE --listen HOST:PORT [--address-file F]`: a memory-only KV store
// process (DESIGN.md §3) for nodes that lend host memory to a job. It registers the pool, serves
// allocate/free/stats and one-sided access over UCX until SIGTERM or SIGINT, and exits 0.
// Readiness: once it answers on its address it prints "longctx store: listening on HOST:PORT ..."
// and, with --address-file, writes "HOST:PORT\n" there (atomically: write, then rename), so a
// script or test can wait for the file.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "commands.h"
#include "longctx/cache/store.h"
#include "longctx/core/byte_size.h"
#include "longctx/core/log.h"

namespace longctx::cli {

namespace {

struct StoreOptions {
  std::string pool;
  std::string listen = "127.0.0.1:0";
  std::string address_file;
};

Status WriteAddressFile(const std::string& path, const std::string& address) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << address << "\n";
    out.close();
    if (!out) return FailedPrecondition("--address-file: cannot write '{}'", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return FailedPrecondition("--address-file: cannot write '{}': {}", path, ec.message());
  return Status::Ok();
}

Status RunStore(const StoreOptions& o) {
  ASSIGN_OR_RETURN(const uint64_t pool_bytes, ParseByteSize(o.pool, "--pool"));
  if (pool_bytes == 0) return InvalidArgument("--pool: the pool needs at least one byte");
  ASSIGN_OR_RETURN(comm::ucx::HostPort where, comm::ucx::ParseHostPort(o.listen, "--listen"));
  // SIGTERM/SIGINT are taken by sigwait below: block them before any thread starts (UCX's and
  // the progress thread inherit the mask), so no thread dies of them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  ASSIGN_OR_RETURN(std::shared_ptr<comm::ucx::Context> ctx, comm::ucx::Context::Create());
  cache::PoolServerOptions so;
  so.pool_bytes = pool_bytes;
  so.listen = where.ToString();
  Result<std::unique_ptr<cache::PoolServer>> server = cache::PoolServer::Start(ctx, so);
  if (!server.ok()) return server.status().WithContext("--listen " + o.listen);
  const std::string address = (*server)->address().ToString();
  if (!o.address_file.empty()) RETURN_IF_ERROR(WriteAddressFile(o.address_file, address));
  std::printf("longctx store: listening on %s (pool %s, pid %d)\n", address.c_str(),
              FormatByteSize(pool_bytes).c_str(), static_cast<int>(getpid()));
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  const cache::PoolServerStats stats = (*server)->Stats();
  LONGCTX_LOG_INFO("store {}: signal {}; {} clients, {} of {} bytes in use", address,
                   signal_number, stats.clients, stats.used_bytes, stats.capacity_bytes);
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
  return [o]() { return RunStore(*o); };
}

}  // namespace longctx::cli
