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
  std::shared_ptr<comm::ucx::Context> ctx;  // the client's (UCX's default devices)
  std::unique_ptr<PoolServer> server;       // on its own context, confined to bind_host's device
};

Result<LocalPool> StartLocal(const StoreJoinOptions& options, const StoreToken& job_token) {
  if (options.replicas < 1 || options.replicas > 2) {
    return InvalidArgument("KV replicas must be 1 or 2, got {}", options.replicas);
  }
  LocalPool local;
  ASSIGN_OR_RETURN(local.ctx, comm::ucx::Context::Create());
  if (options.pool_bytes > 0) {
    PoolServerOptions so;
    so.pool_bytes = options.pool_bytes;
    so.listen = options.bind_host + ":0";
    so.token = job_token;  // only this job's ranks know it
    // Its own UCX context, so that its UCX listening sockets open only on the device of
    // bind_host (all devices for 0.0.0.0), while the client's context may reach stores anywhere;
    // on loopback (the ranks share a host) without the tcp transport, whose port would let any
    // local process read the pool without the job token (docs/security.md), unless UCX_TLS says.
    const bool loopback =
        options.bind_host == "localhost" || options.bind_host.rfind("127.", 0) == 0;
    ASSIGN_OR_RETURN(std::shared_ptr<comm::ucx::Context> server_ctx,
                     comm::ucx::Context::Create(comm::ucx::NetDeviceOf(options.bind_host),
                                                loopback ? "^tcp" : ""));
    ASSIGN_OR_RETURN(local.server, PoolServer::Start(server_ctx, so));
  }
  return local;
}

}  // namespace

Result<std::shared_ptr<RemoteTier>> JoinStore(comm::Communicator& comm,
                                              const StoreJoinOptions& options) {
  // Every step is collective and every rank takes part even after a local failure (with an
  // empty address), so no rank is left waiting in a gather; then all agree on the outcome.
  // The job token: drawn by rank 0, shared over comm (the job's own channel), never written.
  std::string drawn;
  if (comm.rank() == 0) {
    Result<StoreToken> t = NewStoreToken();
    if (t.ok()) drawn.assign(reinterpret_cast<const char*>(t->bytes.data()), t->bytes.size());
  }
  ASSIGN_OR_RETURN(std::vector<std::string> tokens, AllGatherStrings(comm, drawn));
  StoreToken job_token;
  Status have_token;
  if (tokens[0].size() != job_token.bytes.size()) {
    have_token = Internal("rank 0 could not draw the job's KV store token");
  } else {
    std::memcpy(job_token.bytes.data(), tokens[0].data(), job_token.bytes.size());
  }
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm, have_token));
  Result<LocalPool> local = StartLocal(options, job_token);
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
      co.pools.push_back(PoolTarget{addresses[r], job_token});
    }
  }
  for (const std::string& store : options.stores) {
    co.pools.push_back(PoolTarget{store, options.store_token});
  }
  Result<std::shared_ptr<StoreClient>> client = StoreClient::Connect(local->ctx, co);
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm, client.status()));
  if (local->server) (*client)->AdoptServer(std::move(local->server));
  return std::shared_ptr<RemoteTier>(std::move(*client));
}

}  // namespace longctx::cache
