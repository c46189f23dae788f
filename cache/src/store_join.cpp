// JoinStore (store.h): every rank of a job starts its pool (if it lends one), the pools'
// bootstrap addresses are all-gathered over the Communicator, and each rank's client connects to
// every pool but its own, plus the `longctx store` processes named on the command line.
#include <unistd.h>

#include <cstring>

#include "longctx/cache/store.h"
#include "longctx/core/log.h"

namespace longctx::cache {

namespace {

// Every rank's string, in rank order (two AllGatherVs: lengths, then bytes).
Result<std::vector<std::string>> AllGatherStrings(comm::Communicator& comm,
                                                  const std::string& mine) {
  const size_t n = static_cast<size_t>(comm.size());
  const comm::Deadline deadline = comm::DeadlineIn(comm::DefaultTimeout());
  uint64_t my_length = mine.size();
  std::vector<uint64_t> lengths(n);
  std::vector<size_t> eight(n, sizeof(uint64_t));
  RETURN_IF_ERROR(comm.AllGatherV(comm::HostBuffer(&my_length, sizeof(my_length)),
                                  comm::HostBuffer(lengths.data(), n * sizeof(uint64_t)), eight,
                                  deadline));
  std::vector<size_t> counts(lengths.begin(), lengths.end());
  size_t total = 0;
  for (size_t c : counts) total += c;
  std::string all(total, '\0');
  RETURN_IF_ERROR(comm.AllGatherV(comm::HostBuffer(mine.data(), mine.size()),
                                  comm::HostBuffer(all.data(), all.size()), counts, deadline));
  std::vector<std::string> out;
  size_t at = 0;
  for (size_t c : counts) {
    out.push_back(all.substr(at, c));
    at += c;
  }
  return out;
}

struct LocalPool {
  std::shared_ptr<comm::ucx::Context> ctx;
  std::unique_ptr<PoolServer> server;
};

Result<LocalPool> StartLocal(const StoreJoinOptions& options) {
  if (options.replicas < 1 || options.replicas > 2) {
    return InvalidArgument("KV replicas must be 1 or 2, got {}", options.replicas);
  }
  LocalPool local;
  ASSIGN_OR_RETURN(local.ctx, comm::ucx::Context::Create());
  if (options.pool_bytes > 0) {
    PoolServerOptions so;
    so.pool_bytes = options.pool_bytes;
    so.listen = options.bind_host + ":0";
    ASSIGN_OR_RETURN(local.server, PoolServer::Start(local.ctx, so));
  }
  return local;
}

}  // namespace

Result<std::shared_ptr<RemoteTier>> JoinStore(comm::Communicator& comm,
                                              const StoreJoinOptions& options) {
  // Every step is collective and every rank takes part even after a local failure (with an
  // empty address), so no rank is left waiting in a gather; then all agree on the outcome.
  Result<LocalPool> local = StartLocal(options);
  std::string mine;
  if (local.ok() && local->server) {
    comm::ucx::HostPort advertised = local->server->address();
    if (advertised.host == "0.0.0.0") {  // listening everywhere: peers reach it by host name
      char host[256] = {};
      gethostname(host, sizeof(host) - 1);
      advertised.host = host;
    }
    mine = advertised.ToString();
  }
  ASSIGN_OR_RETURN(std::vector<std::string> addresses, AllGatherStrings(comm, mine));
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm, local.status()));
  if (!mine.empty()) {
    LONGCTX_LOG_INFO("rank {}: KV pool of {} bytes at {}", comm.rank(), options.pool_bytes, mine);
  }
  StoreClientOptions co;
  co.replicas = options.replicas;
  co.exclude_pool_id = local->server ? local->server->pool_id() : 0;
  for (size_t r = 0; r < addresses.size(); ++r) {
    if (static_cast<int>(r) != comm.rank() && !addresses[r].empty()) {
      co.pools.push_back(addresses[r]);
    }
  }
  co.pools.insert(co.pools.end(), options.stores.begin(), options.stores.end());
  Result<std::shared_ptr<StoreClient>> client = StoreClient::Connect(local->ctx, co);
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm, client.status()));
  if (local->server) (*client)->AdoptServer(std::move(local->server));
  return std::shared_ptr<RemoteTier>(std::move(*client));
}

}  // namespace longctx::cache
