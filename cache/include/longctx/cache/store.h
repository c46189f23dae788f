// The distributed KV store over UCX (DESIGN.md §3): pool servers lend registered host memory,
// and a client (a RemoteTier) places encoded blocks in them with one-sided puts and gets.
//
//   PoolServer  — one per process that lends memory (a rank with --kv pool bytes, or a
//                 `longctx store` process): a pool registered once, a first-fit allocator,
//                 active-message handlers for allocate/free/stats, a bootstrap TCP listener, and
//                 a progress thread (UCX emulates RMA over tcp and shared memory in software, so
//                 the target must keep progressing or a put never completes).
//   StoreClient — a RemoteTier over several pools: placement by free capacity, `replicas` 1 or
//                 2 on different pools (= different processes, never the client's own), a Put
//                 acknowledged only when every replica is written and flushed, a Get that
//                 verifies the block and falls back to the other replica, dead pools detected
//                 (UCX peer errors over tcp; the bootstrap socket's hangup on any transport).
//   JoinStore   — the collective that wires a job's ranks (and `longctx store` processes) up.
//
// Wire protocol and bootstrap: docs/kvstore.md; threat model: docs/security.md. A pool hands out
// its UCX address and remote key only to a client that proved the pool's token; a session is its
// bootstrap connection (requests carry a key the pool issued on it), it sees and frees only its own
// allocations, within its quota. Blocks a client stored die with it: a pool frees a session's
// allocations when its bootstrap connection closes or the client misbehaves on it.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "longctx/cache/remote_tier.h"
#include "longctx/comm/communicator.h"
#include "longctx/comm/ucx/socket.h"
#include "longctx/comm/ucx/ucx.h"
#include "longctx/core/status.h"

namespace longctx::cache {

// The shared secret of a pool (256 random bits). Stored as 64 hex digits and a newline in a
// token file of mode 0600 (`longctx store --token-file`, `--kv-store-token-file`).
struct StoreToken {
  std::array<uint8_t, 32> bytes{};
};
// 256 bits from OpenSSL's RAND_bytes.
Result<StoreToken> NewStoreToken();
// Reads a token file: 64 hex digits (surrounding whitespace ignored). Refused, naming the file:
// missing, not a regular file, readable or writable by group or others, or malformed.
Result<StoreToken> ReadStoreToken(const std::string& path);
// Reads `path`, or when it does not exist creates it (mode 0600, exclusively: a temporary file
// linked into place, so two stores racing agree on one token) with a new token.
// `*created` says which.
Result<StoreToken> LoadOrCreateStoreToken(const std::string& path, bool* created);
// Constant-time equality (OpenSSL's CRYPTO_memcmp): no early exit on the first differing byte.
bool SameToken(const StoreToken& a, const StoreToken& b);

struct PoolServerOptions {
  uint64_t pool_bytes = 0;             // > 0: the registered pool lent to clients
  std::string listen = "127.0.0.1:0";  // bootstrap HOST:PORT (port 0: any free port)
  // The token a client must prove in its hello. Without one (insecure mode) every hello is
  // accepted, and Start refuses a listen address that is not loopback (127.0.0.0/8).
  std::optional<StoreToken> token;
  uint64_t quota_per_session = 0;  // bytes one session may hold at once; 0 = the whole pool
  size_t max_sessions = 256;       // live sessions; a hello beyond it is refused
  size_t max_sessions_per_host = 64;  // live sessions + pending hellos from one peer IP address
  // A connection must deliver its whole hello within this time, or it is dropped. Hellos are
  // read without blocking, so a slow or silent client delays nobody else.
  std::chrono::milliseconds hello_timeout{2000};
};

struct PoolServerStats {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;    // allocated to clients (64-byte aligned sizes)
  uint64_t allocations = 0;
  uint64_t clients = 0;       // connected bootstrap sessions
  uint64_t pending_hellos = 0;     // accepted connections whose hello has not arrived yet
  uint64_t refused_hellos = 0;     // since start: wrong token, bad address, limits, malformed
  uint64_t dropped_requests = 0;   // since start: requests with no live session's key
  uint64_t closed_misbehaving = 0; // since start: sessions closed for bytes after the hello
};

class PoolServer {
 public:
  // Registers the pool, binds the listener and starts the progress thread. On return the
  // server answers hellos at address().
  static Result<std::unique_ptr<PoolServer>> Start(std::shared_ptr<comm::ucx::Context> ctx,
                                                   const PoolServerOptions& options);
  virtual ~PoolServer() = default;  // stops the thread; clients then see the pool fail
  virtual const comm::ucx::HostPort& address() const = 0;
  virtual uint64_t pool_id() const = 0;  // random, unique per server (placement's "process")
  virtual PoolServerStats Stats() const = 0;
};

// One pool a client may use: its bootstrap HOST:PORT and the token it proves there (none: an
// insecure pool; a pool with a token refuses the hello).
struct PoolTarget {
  std::string address;
  std::optional<StoreToken> token;
};

struct StoreClientOptions {
  std::vector<PoolTarget> pools;   // every pool this client may use
  int replicas = 1;                // 1 or 2, on different pools
  uint64_t exclude_pool_id = 0;    // the caller's own pool (skipped if listed)
  std::chrono::milliseconds timeout = comm::DefaultTimeout();  // per call
  // Authenticate every block this client stores with a MAC kept in the client's own memory
  // (GMAC: AES-128-GCM over the block, a random key per client, a nonce per put) and check every
  // read against it: a block overwritten in a pool — even with a valid checksum, i.e. forged by
  // another holder of the pool's token — is kDataLoss naming the block (docs/security.md).
  // Costs one GMAC per put and per get (~15 GB/s per core; bench/results/kvstore.md).
  bool verify_mac = true;
};

// What a client knows of one pool (for reports and tests).
struct PoolView {
  std::string address;  // HOST:PORT
  uint64_t pool_id = 0;
  bool alive = false;
  uint64_t capacity_bytes = 0;
  uint64_t free_bytes = 0;  // as of the pool's last reply
};

struct BlockRef {
  BlockKey key;
  std::span<const std::byte> encoded;
};

class StoreClient : public RemoteTier {
 public:
  // Connects to every pool (hello, UCX endpoint, rkey). A listed pool that cannot be reached is
  // an error naming it; so is `replicas` above the number of distinct pools.
  static Result<std::shared_ptr<StoreClient>> Connect(std::shared_ptr<comm::ucx::Context> ctx,
                                                      const StoreClientOptions& options);

  // Batched forms (what a layer's demotion or prefetch wants): every allocation request, then
  // every put (or get) of every replica in flight together, one flush per pool. PutBatch is all
  // or nothing: on error no block of the batch is newly stored (old copies stay). GetBatch
  // verifies every block and falls back to other replicas as Get does.
  virtual Status PutBatch(std::span<const BlockRef> blocks) = 0;
  virtual Result<std::vector<std::vector<std::byte>>> GetBatch(
      std::span<const BlockKey> keys) = 0;
  // GetBatch into the caller's buffers (reused across calls, no allocation or page faults per
  // read): out[i].size() must be StoredBytes(keys[i]).
  virtual Status GetBatchInto(std::span<const BlockKey> keys,
                              std::span<const std::span<std::byte>> out) = 0;
  // Encoded bytes of a stored block (kUnavailable naming it when not stored).
  virtual Result<uint64_t> StoredBytes(const BlockKey& key) const = 0;

  virtual std::vector<PoolView> Pools() const = 0;
  // The pools holding `key`'s replicas, primary first (HOST:PORT); empty when not stored.
  virtual std::vector<std::string> ReplicaPools(const BlockKey& key) const = 0;
  // Re-reads every pool's stats over active messages (refreshing Pools()' free bytes).
  virtual Status RefreshPools() = 0;
  // Test hook: flips one byte of replica `replica` of `key` in the remote pool (a get, a flip
  // and a put over RMA), so a corrupt remote copy can be tested without a pool-side hook.
  virtual Status CorruptForTest(const BlockKey& key, int replica, size_t byte) = 0;
  // Test hook: writes `bytes` (the block's size) over replica `replica` of `key` over RMA — what
  // another token holder could do with the pool's rkey (a forged block).
  virtual Status OverwriteForTest(const BlockKey& key, int replica,
                                  std::span<const std::byte> bytes) = 0;
  // Keeps `server` alive as long as this client (JoinStore: the rank's own pool).
  virtual void AdoptServer(std::unique_ptr<PoolServer> server) = 0;
};

struct StoreJoinOptions {
  uint64_t pool_bytes = 0;          // this rank's pool for other ranks' blocks (0: none)
  std::vector<std::string> stores;  // "host:port" of `longctx store` processes
  std::optional<StoreToken> store_token;  // proven to every store in `stores`
  int replicas = 1;
  // Where this rank's pool listens (any free port); "0.0.0.0" listens everywhere and is
  // advertised to the other ranks by this host's name.
  std::string bind_host = "127.0.0.1";
};

// Collective over comm (every rank calls it): rank 0 draws a job token (shared over comm, never
// written anywhere) that every rank's pool requires, starts this rank's pool server when
// pool_bytes > 0, exchanges the pools' addresses with AllGatherV, connects to every pool but its
// own (with the job token) and to the stores (with store_token). Every rank
// returns an error when any rank fails (AgreeOnStatus). The returned tier owns the rank's pool:
// destroy it only after the other ranks are done with it (e.g. after a Barrier).
Result<std::shared_ptr<RemoteTier>> JoinStore(comm::Communicator& comm,
                                              const StoreJoinOptions& options);

}  // namespace longctx::cache
