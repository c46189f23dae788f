// StoreClient (store.h): a RemoteTier over UCX pools — placement by free capacity, replicas on
// different pools, puts acknowledged after a flush, verified gets with replica fallback, and
// dead pools detected and reported.
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "longctx/cache/store.h"
#include "longctx/core/log.h"
#include "store_wire.h"

namespace longctx::cache {

namespace {

using comm::Deadline;
using comm::ucx::AmMessage;
using comm::ucx::Endpoint;
using comm::ucx::HostPort;
using comm::ucx::RemoteKey;
using comm::ucx::RmaOp;
using comm::ucx::Worker;

struct KeyHash {
  size_t operator()(const BlockKey& k) const {
    uint64_t h = k.sequence * 0x9E3779B97F4A7C15ull;
    h ^= (uint64_t{k.layer} + 0x632BE59BD9B4E019ull + (h << 6) + (h >> 2));
    h ^= (k.block + 0x85EBCA77C2B2AE63ull + (h << 6) + (h >> 2));
    return static_cast<size_t>(h);
  }
};

struct PoolConn {
  HostPort address;
  std::string name;  // "store 127.0.0.1:7000", for messages
  UniqueFd socket;   // the bootstrap session: closing it makes the pool free our blocks
  uint64_t pool_id = 0, session_id = 0, base = 0, capacity = 0, quota = 0;
  uint64_t free_bytes = 0;  // what this session may still allocate (pool free, quota left)
  uint8_t session_key[wire::kSessionKeyBytes] = {};  // issued by the pool in its hello
  std::unique_ptr<Endpoint> ep;
  std::unique_ptr<RemoteKey> rkey;  // after ep: destroyed first
  bool dead = false;
  std::string death;  // why, once dead
};

struct Replica {
  size_t pool = 0;      // index into pools_
  uint64_t offset = 0;  // from the pool's base
};
// A block's authentication tag: GMAC (AES-128-GCM with the block as additional data and no
// plaintext) under the client's random key, with a nonce unique per put. The tag stays in the
// client's memory: nothing in any pool can be used to forge it.
struct BlockTag {
  uint64_t nonce = 0;
  std::array<uint8_t, 16> tag{};
};

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
struct CipherFree {
  void operator()(EVP_CIPHER* c) const { EVP_CIPHER_free(c); }
};

struct Entry {
  uint64_t bytes = 0;
  std::vector<Replica> replicas;  // primary first
  BlockTag tag;                   // of the encoded block as put (with verify_mac)
};

struct ReplyMessage {
  wire::Reply header{};
  std::string message;
};

class StoreClientImpl final : public StoreClient {
 public:
  StoreClientImpl(std::shared_ptr<comm::ucx::Context> ctx, const StoreClientOptions& options)
      : ctx_(std::move(ctx)), options_(options) {}

  Status Init();

  Status Put(const BlockKey& key, std::span<const std::byte> encoded) override;
  Result<std::vector<std::byte>> Get(const BlockKey& key) override;
  Status Erase(const BlockKey& key) override;
  RemoteTierStats Stats() const override;
  Status PutBatch(std::span<const BlockRef> blocks) override;
  Result<std::vector<std::vector<std::byte>>> GetBatch(std::span<const BlockKey> keys) override;
  Status GetBatchInto(std::span<const BlockKey> keys,
                      std::span<const std::span<std::byte>> out) override;
  Result<uint64_t> StoredBytes(const BlockKey& key) const override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end()) {
      return Unavailable("remote tier: block {} is not stored (no holder)", key.ToString());
    }
    return it->second.bytes;
  }

  std::vector<PoolView> Pools() const override;
  std::vector<std::string> ReplicaPools(const BlockKey& key) const override;
  Status RefreshPools() override;
  Status CorruptForTest(const BlockKey& key, int replica, size_t byte) override;
  Status OverwriteForTest(const BlockKey& key, int replica,
                          std::span<const std::byte> bytes) override;
  void AdoptServer(std::unique_ptr<PoolServer> server) override {
    std::lock_guard<std::mutex> lock(mu_);
    own_server_ = std::move(server);
  }

 private:
  Status ConnectPool(const PoolTarget& target, Deadline deadline);
  bool Alive(PoolConn& pool);
  void MarkDead(PoolConn& pool, const std::string& why);
  std::function<bool()> AliveFn(std::vector<size_t> pools);
  Result<ReplyMessage> Rpc(PoolConn& pool, wire::Op op, uint64_t arg0, uint64_t arg1,
                           Deadline deadline);
  // Rpc in two halves, so that many requests can be in flight.
  Result<uint64_t> SendRequest(PoolConn& pool, wire::Op op, uint64_t arg0, uint64_t arg1,
                               Deadline deadline);
  Result<ReplyMessage> AwaitReply(PoolConn& pool, uint64_t request_id, Deadline deadline);
  Result<std::vector<std::byte>> GetLocked(const BlockKey& key, Deadline deadline);
  void FreeReplicas(const std::vector<Replica>& replicas, uint64_t bytes, Deadline deadline);
  // Posts every pool's ops (puts, each pool's followed by its flush; or gets), all in flight
  // together, and waits for them; `involved` receives the pools that had ops.
  Status TransferAll(const std::vector<std::vector<RmaOp>>& ops, bool put, Deadline deadline,
                     std::vector<size_t>* involved);
  Deadline NewDeadline() const { return comm::DeadlineIn(options_.timeout); }
  // GMAC of `bytes` under this client's key and `nonce` (thread-safe: a context per call).
  Status Mac(std::span<const std::byte> bytes, uint64_t nonce, std::array<uint8_t, 16>* tag) const;
  // A new tag for a block about to be put (a fresh nonce); an empty tag without verify_mac.
  Result<BlockTag> TagOf(std::span<const std::byte> bytes) {
    BlockTag t;
    if (!options_.verify_mac) return t;
    t.nonce = next_nonce_.fetch_add(1);
    RETURN_IF_ERROR(Mac(bytes, t.nonce, &t.tag));
    return t;
  }
  // OK, or why `block` read from a pool is not what this client stored under `entry`.
  Status CheckTag(std::span<const std::byte> block, const Entry& entry,
                  const BlockKey& key) const {
    if (!options_.verify_mac) return Status::Ok();
    std::array<uint8_t, 16> tag{};
    RETURN_IF_ERROR(Mac(block, entry.tag.nonce, &tag));
    if (CRYPTO_memcmp(tag.data(), entry.tag.tag.data(), tag.size()) == 0) return Status::Ok();
    return DataLoss("KV block {}: not the block this client stored (MAC mismatch: overwritten in "
                    "the pool)", key.ToString());
  }
  // Copies to place of each of `blocks` new blocks when `alive` pools are up: the replicas asked
  // for, or fewer once pools have died (a degraded put: warned once, counted) — a job that lost
  // one of its two stores keeps going on the other rather than failing its next demotion.
  size_t ReplicasToPlace(size_t alive, size_t blocks) {
    const size_t want = static_cast<size_t>(options_.replicas);
    if (alive >= want) return want;
    degraded_puts_ += blocks;
    if (!warned_degraded_) {
      warned_degraded_ = true;
      LONGCTX_LOG_WARN("remote tier: {} of {} pools alive: new blocks are stored with {} of {} "
                       "replicas from now on", alive, pools_.size(), alive, want);
    }
    return alive;
  }

  std::unique_ptr<PoolServer> own_server_;  // first: destroyed last
  std::array<uint8_t, 16> mac_key_{};       // random per client (verify_mac)
  std::unique_ptr<EVP_CIPHER, CipherFree> gcm_;
  std::atomic<uint64_t> next_nonce_{1};
  std::shared_ptr<comm::ucx::Context> ctx_;
  StoreClientOptions options_;
  std::string host_ = comm::ucx::HostIdentity();
  std::unique_ptr<Worker> worker_;
  std::vector<std::unique_ptr<PoolConn>> pools_;  // destroyed before worker_

  mutable std::mutex mu_;  // serialises every call (the worker is single-threaded)
  uint64_t next_request_ = 1;
  std::map<uint64_t, ReplyMessage> replies_;  // filled by the reply handler during progress
  std::set<uint64_t> abandoned_;              // requests given up on: their replies are dropped
  std::unordered_map<BlockKey, Entry, KeyHash> entries_;
  uint64_t bytes_put_ = 0, bytes_got_ = 0, fallbacks_ = 0, degraded_puts_ = 0;
  bool warned_degraded_ = false;
};

Status StoreClientImpl::Init() {
  if (options_.replicas < 1 || options_.replicas > 2) {
    return InvalidArgument("replicas must be 1 or 2, got {}", options_.replicas);
  }
  if (options_.verify_mac) {
    gcm_.reset(EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr));
    if (!gcm_ || RAND_bytes(mac_key_.data(), static_cast<int>(mac_key_.size())) != 1) {
      return Internal("store client: OpenSSL has no AES-128-GCM or no randomness for the block "
                      "MAC");
    }
  }
  ASSIGN_OR_RETURN(worker_, Worker::Create(ctx_));
  RETURN_IF_ERROR(worker_->SetAmHandler(wire::kAmReply, [this](const AmMessage& m) {
    const std::optional<wire::Reply> reply = wire::ReadAmHeader<wire::Reply>(m.header);
    if (!reply) {
      LONGCTX_LOG_WARN("store client: dropped a malformed reply");
      return;
    }
    if (abandoned_.erase(reply->request_id) > 0) return;
    ReplyMessage& slot = replies_[reply->request_id];
    slot.header = *reply;
    slot.message.assign(reinterpret_cast<const char*>(m.data.data()), m.data.size());
  }));
  const Deadline deadline = NewDeadline();
  for (const PoolTarget& target : options_.pools) RETURN_IF_ERROR(ConnectPool(target, deadline));
  if (pools_.empty()) {
    return InvalidArgument(
        "the remote KV store has no pool to use (no other rank lends one and no store given)");
  }
  if (pools_.size() < static_cast<size_t>(options_.replicas)) {
    return InvalidArgument("replicas={} needs {} pools in other processes; only {} available",
                           options_.replicas, options_.replicas, pools_.size());
  }
  return Status::Ok();
}

Status StoreClientImpl::ConnectPool(const PoolTarget& target, Deadline deadline) {
  ASSIGN_OR_RETURN(HostPort address, comm::ucx::ParseHostPort(target.address, "store address"));
  const std::string name = "store " + address.ToString();
  auto fail = [&name](const Status& st) { return st.WithContext("connecting to " + name); };
  Result<UniqueFd> socket = comm::ucx::TcpConnect(address, deadline);
  if (!socket.ok()) return socket.status();  // already names the address
  // The pool's challenge first; the hello proves the token on its nonce (the token itself is
  // never sent).
  Result<std::vector<std::byte>> challenge_frame =
      comm::ucx::RecvFrame(socket->get(), 1024, deadline);
  if (!challenge_frame.ok()) {
    if (challenge_frame.status().code() == StatusCode::kUnavailable) {
      return fail(Unavailable("the store closed the connection without a challenge (its "
                              "connection limits, or another protocol version)"));
    }
    return fail(challenge_frame.status());
  }
  Result<wire::Challenge> challenge = wire::Read<wire::Challenge>(*challenge_frame, "challenge");
  if (!challenge.ok() || challenge->magic != wire::kChallengeMagic) {
    return fail(DataLoss("not a longctx store, or another protocol version (no challenge)"));
  }
  if (challenge->version != wire::kVersion) {
    return fail(FailedPrecondition("protocol version {} (this build speaks {})",
                                   challenge->version, wire::kVersion));
  }
  wire::ClientHello hello{};
  hello.magic = wire::kHelloMagic;
  hello.version = wire::kVersion;
  hello.flags = comm::ucx::SharedMemoryAllowed() ? wire::kFlagSharedMemory : 0;
  hello.addr_len = static_cast<uint32_t>(worker_->address().size());
  if (target.token) {
    const std::array<uint8_t, wire::kProofBytes> proof =
        wire::HelloProof(*target.token, challenge->nonce);
    std::memcpy(hello.proof, proof.data(), proof.size());
  }
  wire::SetHost(hello.host, host_);
  std::vector<std::byte> frame;
  wire::Append(&frame, wire::AsBytes(hello));
  wire::Append(&frame, worker_->address());
  if (Status st = comm::ucx::SendFrame(socket->get(), frame, deadline); !st.ok()) return fail(st);
  Result<std::vector<std::byte>> answer = comm::ucx::RecvFrame(socket->get(), 1 << 16, deadline);
  if (!answer.ok()) {
    if (answer.status().code() == StatusCode::kUnavailable) {
      return fail(Unavailable("the store closed the connection without answering the hello"));
    }
    return fail(answer.status());
  }
  Result<wire::PoolAnswer> parsed = wire::ReadPoolAnswer(*answer);
  if (!parsed.ok()) return fail(parsed.status());
  const wire::PoolHello* h = &parsed->hello;
  if (h->pool_id == options_.exclude_pool_id) {
    LONGCTX_LOG_INFO("store client: {} is this process's own pool; not used", name);
    return Status::Ok();
  }
  for (const auto& p : pools_) {
    if (p->pool_id == h->pool_id) {
      LONGCTX_LOG_INFO("store client: {} is {} again; not used twice", name, p->name);
      return Status::Ok();
    }
  }
  auto pool = std::make_unique<PoolConn>();
  pool->address = address;
  pool->name = name;
  pool->socket = std::move(*socket);
  pool->pool_id = h->pool_id;
  pool->session_id = h->session_id;
  std::memcpy(pool->session_key, h->session_key, wire::kSessionKeyBytes);
  pool->base = h->pool_base;
  pool->capacity = h->pool_bytes;
  pool->quota = pool->free_bytes = std::min(h->quota_bytes, h->pool_bytes);
  Result<std::unique_ptr<Endpoint>> ep =
      Endpoint::Connect(*worker_, parsed->address, name,
                        wire::SameHost(h->host, host_) && (h->flags & wire::kFlagSharedMemory));
  if (!ep.ok()) return fail(ep.status());
  pool->ep = std::move(*ep);
  Result<std::unique_ptr<RemoteKey>> rkey =
      pool->ep->UnpackRkey(parsed->rkey, h->pool_base, h->pool_bytes);
  if (!rkey.ok()) return fail(rkey.status());
  pool->rkey = std::move(*rkey);
  // One stats round trip proves both directions of the control path before any block moves.
  Result<ReplyMessage> stats = Rpc(*pool, wire::Op::kStats, 0, 0, deadline);
  if (!stats.ok()) return fail(stats.status());
  LONGCTX_LOG_INFO("store client: connected to {} ({} bytes, {} free, peer errors {})", name,
                   pool->capacity, pool->free_bytes,
                   pool->ep->peer_error_handling() ? "on" : "by socket");
  pools_.push_back(std::move(pool));
  return Status::Ok();
}

void StoreClientImpl::MarkDead(PoolConn& pool, const std::string& why) {
  if (pool.dead) return;
  pool.dead = true;
  pool.death = why;
  pool.ep->MarkFailed(UCS_ERR_CONNECTION_RESET);
  // Closing the session makes a live-but-stuck pool free what we stored there.
  pool.socket = UniqueFd();
  LONGCTX_LOG_WARN("store client: {} is gone: {}", pool.name, why);
}

bool StoreClientImpl::Alive(PoolConn& pool) {
  if (pool.dead) return false;
  if (!pool.ep->alive()) {
    MarkDead(pool, pool.ep->FailureStatus().message());
  } else if (comm::ucx::PeerClosed(pool.socket.get())) {
    MarkDead(pool, "the store process closed its connection (exited or was killed)");
  }
  return !pool.dead;
}

std::function<bool()> StoreClientImpl::AliveFn(std::vector<size_t> pools) {
  return [this, pools]() {
    bool all = true;
    for (size_t i : pools) all = Alive(*pools_[i]) && all;
    return all;
  };
}

Result<uint64_t> StoreClientImpl::SendRequest(PoolConn& pool, wire::Op op, uint64_t arg0,
                                              uint64_t arg1, Deadline deadline) {
  if (!Alive(pool)) return Unavailable("{} is gone: {}", pool.name, pool.death);
  wire::Request req{};
  req.magic = wire::kAmMagic;
  req.version = wire::kVersion;
  req.op = static_cast<uint16_t>(op);
  req.request_id = next_request_++;
  req.session_id = pool.session_id;
  std::memcpy(req.session_key, pool.session_key, wire::kSessionKeyBytes);
  req.arg0 = arg0;
  req.arg1 = arg1;
  Status sent = pool.ep->SendAm(wire::kAmRequest, wire::AsBytes(req), {}, false, deadline,
                                [this, &pool]() { return Alive(pool); });
  if (!sent.ok()) {
    MarkDead(pool, sent.message());
    return sent;
  }
  return req.request_id;
}

Result<ReplyMessage> StoreClientImpl::AwaitReply(PoolConn& pool, uint64_t request_id,
                                                 Deadline deadline) {
  unsigned idle = 0;
  while (true) {
    auto it = replies_.find(request_id);
    if (it != replies_.end()) {
      ReplyMessage reply = std::move(it->second);
      replies_.erase(it);
      pool.free_bytes = reply.header.free_bytes;
      pool.capacity = reply.header.capacity_bytes;
      if (reply.header.status != 0) {
        return Status(static_cast<StatusCode>(reply.header.status),
                      fmt::format("{}: {}", pool.name, reply.message));
      }
      return reply;
    }
    if (worker_->Progress() != 0) {
      idle = 0;
      continue;
    }
    if (!Alive(pool)) return Unavailable("{} is gone: {}", pool.name, pool.death);
    if (comm::Clock::now() >= deadline) {
      abandoned_.insert(request_id);
      const std::string why = "no reply to a control message before the deadline";
      MarkDead(pool, why);
      return DeadlineExceeded("{}: {}", pool.name, why);
    }
    if (++idle > 256) worker_->WaitForEvents(1);
  }
}

Result<ReplyMessage> StoreClientImpl::Rpc(PoolConn& pool, wire::Op op, uint64_t arg0,
                                          uint64_t arg1, Deadline deadline) {
  ASSIGN_OR_RETURN(const uint64_t id, SendRequest(pool, op, arg0, arg1, deadline));
  return AwaitReply(pool, id, deadline);
}

void StoreClientImpl::FreeReplicas(const std::vector<Replica>& replicas, uint64_t bytes,
                                   Deadline deadline) {
  for (const Replica& r : replicas) {
    PoolConn& pool = *pools_[r.pool];
    if (pool.dead) continue;  // its memory went with it
    Result<ReplyMessage> freed = Rpc(pool, wire::Op::kFree, r.offset, bytes, deadline);
    if (!freed.ok()) LONGCTX_LOG_WARN("store client: free: {}", freed.status().message());
  }
}

Status StoreClientImpl::TransferAll(const std::vector<std::vector<RmaOp>>& ops, bool put,
                                    Deadline deadline, std::vector<size_t>* involved) {
  std::vector<ucs_status_ptr_t> requests;
  Status posted;
  for (size_t i = 0; i < pools_.size() && posted.ok(); ++i) {
    if (ops[i].empty()) continue;
    involved->push_back(i);
    PoolConn& pool = *pools_[i];
    posted = put ? pool.ep->PostPuts(*pool.rkey, ops[i], &requests)
                 : pool.ep->PostGets(*pool.rkey, ops[i], &requests);
  }
  const Status done = worker_->WaitAll(requests, deadline, put ? "batched put" : "batched get",
                                       AliveFn(*involved));
  return done.ok() ? posted : done;
}

Status StoreClientImpl::Put(const BlockKey& key, std::span<const std::byte> encoded) {
  if (encoded.empty()) return InvalidArgument("remote tier: {}: an empty block", key.ToString());
  ASSIGN_OR_RETURN(const BlockTag tag, TagOf(encoded));  // outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  const Deadline deadline = NewDeadline();
  std::vector<size_t> order;
  for (size_t i = 0; i < pools_.size(); ++i) {
    if (Alive(*pools_[i])) order.push_back(i);
  }
  if (order.empty()) {
    return Unavailable("remote tier: cannot store {}: none of the {} pools is alive",
                       key.ToString(), pools_.size());
  }
  const size_t want = ReplicasToPlace(order.size(), 1);
  // Placement by free capacity: the emptiest pools first (stable on ties: pool order).
  std::stable_sort(order.begin(), order.end(), [this](size_t a, size_t b) {
    return pools_[a]->free_bytes > pools_[b]->free_bytes;
  });
  std::vector<Replica> placed;
  Status last;
  bool exhausted = false;
  for (size_t i : order) {
    if (placed.size() == want) break;
    Result<ReplyMessage> r = Rpc(*pools_[i], wire::Op::kAlloc, encoded.size(), 0, deadline);
    if (r.ok()) {
      placed.push_back(Replica{i, r->header.offset});
    } else {
      exhausted = exhausted || r.status().code() == StatusCode::kResourceExhausted;
      last = r.status();
    }
  }
  if (placed.size() < want) {
    FreeReplicas(placed, encoded.size(), deadline);
    return Status(exhausted ? StatusCode::kResourceExhausted : last.code(),
                  fmt::format("remote tier: no room for {} ({} bytes, {} replica(s)): {}",
                              key.ToString(), encoded.size(), want, last.message()));
  }
  // Every replica written together, then flushed: acknowledged only when all are in place.
  std::vector<ucs_status_ptr_t> requests;
  std::vector<size_t> involved;
  Status posted;
  for (const Replica& r : placed) {
    PoolConn& pool = *pools_[r.pool];
    involved.push_back(r.pool);
    const RmaOp op{const_cast<std::byte*>(encoded.data()), encoded.size(), r.offset};
    posted = pool.ep->PostPuts(*pool.rkey, {&op, 1}, &requests);
    if (!posted.ok()) break;
  }
  Status written = worker_->WaitAll(requests, deadline, "put of " + key.ToString(),
                                    AliveFn(involved));
  if (written.ok()) written = posted;
  if (!written.ok()) {
    for (size_t i : involved) {
      if (written.code() == StatusCode::kDeadlineExceeded) MarkDead(*pools_[i], written.message());
      (void)Alive(*pools_[i]);
    }
    FreeReplicas(placed, encoded.size(), deadline);
    return written.WithContext("remote tier: " + key.ToString());
  }
  auto it = entries_.find(key);
  if (it != entries_.end()) FreeReplicas(it->second.replicas, it->second.bytes, deadline);
  entries_[key] = Entry{encoded.size(), std::move(placed), tag};
  bytes_put_ += encoded.size() * want;
  return Status::Ok();
}

Result<std::vector<std::byte>> StoreClientImpl::Get(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  return GetLocked(key, NewDeadline());
}

Result<std::vector<std::byte>> StoreClientImpl::GetLocked(const BlockKey& key,
                                                          Deadline deadline) {
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    return Unavailable("remote tier: block {} is not stored (no holder)", key.ToString());
  }
  const Entry& entry = it->second;
  std::vector<std::string> failures;
  bool corrupt = false;
  for (size_t i = 0; i < entry.replicas.size(); ++i) {
    const Replica& r = entry.replicas[i];
    PoolConn& pool = *pools_[r.pool];
    const std::string where = fmt::format("replica {} on {}", i + 1, pool.name);
    if (!Alive(pool)) {
      failures.push_back(fmt::format("{}: lost ({})", where, pool.death));
      continue;
    }
    std::vector<std::byte> block(entry.bytes);
    const RmaOp op{block.data(), block.size(), r.offset};
    Status st = pool.ep->GetAll(*pool.rkey, {&op, 1}, deadline, [this, &pool] {
      return Alive(pool);
    });
    if (!st.ok()) {
      if (st.code() == StatusCode::kDeadlineExceeded) MarkDead(pool, st.message());
      failures.push_back(fmt::format("{}: {}", where, st.message()));
      continue;
    }
    st = VerifyBlock(block, key);
    if (st.ok()) st = CheckTag(block, entry, key);
    if (!st.ok()) {
      corrupt = true;
      failures.push_back(fmt::format("{}: {}", where, st.message()));
      continue;
    }
    if (i > 0) ++fallbacks_;
    bytes_got_ += block.size();
    // A lost pool is reported once (MarkDead); a corrupt or unreadable copy every time.
    const bool lost_only = !corrupt && std::all_of(failures.begin(), failures.end(),
        [](const std::string& f) { return f.find(": lost (") != std::string::npos; });
    if (!failures.empty() && !lost_only) {
      LONGCTX_LOG_WARN("remote tier: {} served by replica {} after: {}", key.ToString(), i + 1,
                       fmt::join(failures, "; "));
    }
    return block;
  }
  return Status(corrupt ? StatusCode::kDataLoss : StatusCode::kUnavailable,
                fmt::format("remote tier: no good copy of {}: {}", key.ToString(),
                            fmt::join(failures, "; ")));
}

Status StoreClientImpl::PutBatch(std::span<const BlockRef> blocks) {
  if (blocks.empty()) return Status::Ok();
  std::unordered_map<BlockKey, int, KeyHash> seen;
  for (const BlockRef& b : blocks) {
    if (b.encoded.empty()) {
      return InvalidArgument("remote tier: {}: an empty block", b.key.ToString());
    }
    if (++seen[b.key] > 1) {
      return InvalidArgument("remote tier: {} appears twice in one batch", b.key.ToString());
    }
  }
  std::vector<BlockTag> tags;  // outside the lock
  for (const BlockRef& b : blocks) {
    ASSIGN_OR_RETURN(BlockTag t, TagOf(b.encoded));
    tags.push_back(t);
  }
  std::lock_guard<std::mutex> lock(mu_);
  const Deadline deadline = NewDeadline();
  std::vector<size_t> alive;
  for (size_t i = 0; i < pools_.size(); ++i) {
    if (Alive(*pools_[i])) alive.push_back(i);
  }
  if (alive.empty()) {
    return Unavailable("remote tier: cannot store a batch of {} blocks: none of the {} pools is "
                       "alive", blocks.size(), pools_.size());
  }
  const size_t want = ReplicasToPlace(alive.size(), blocks.size());
  // Placement by projected free capacity (each block placed lowers its pools' estimate), then
  // every allocation request in flight before any reply is awaited.
  std::vector<uint64_t> projected(pools_.size());
  for (size_t i : alive) projected[i] = pools_[i]->free_bytes;
  struct Pending {
    size_t block, pool;
    uint64_t id;
  };
  std::vector<Pending> pending;
  Status first;
  for (size_t b = 0; b < blocks.size() && first.ok(); ++b) {
    std::vector<size_t> order = alive;
    std::stable_sort(order.begin(), order.end(),
                     [&projected](size_t x, size_t y) { return projected[x] > projected[y]; });
    for (size_t r = 0; r < want && first.ok(); ++r) {
      const size_t pool = order[r];
      const uint64_t need = (blocks[b].encoded.size() + 63) / 64 * 64;
      projected[pool] = projected[pool] > need ? projected[pool] - need : 0;
      Result<uint64_t> id =
          SendRequest(*pools_[pool], wire::Op::kAlloc, blocks[b].encoded.size(), 0, deadline);
      if (id.ok()) {
        pending.push_back(Pending{b, pool, *id});
      } else {
        first = id.status();
      }
    }
  }
  std::vector<std::vector<Replica>> placed(blocks.size());
  for (const Pending& p : pending) {  // every reply is drained, even after an error
    Result<ReplyMessage> reply = AwaitReply(*pools_[p.pool], p.id, deadline);
    if (reply.ok()) {
      placed[p.block].push_back(Replica{p.pool, reply->header.offset});
    } else if (first.ok()) {
      first = reply.status();
    }
  }
  auto undo = [&]() {
    for (size_t b = 0; b < blocks.size(); ++b) {
      FreeReplicas(placed[b], blocks[b].encoded.size(), deadline);
    }
  };
  if (!first.ok()) {
    undo();
    return first.WithContext(fmt::format("remote tier: storing a batch of {} blocks from {}",
                                         blocks.size(), blocks[0].key.ToString()));
  }
  // Every put of every replica, one flush per pool, all in flight together.
  std::vector<std::vector<RmaOp>> ops(pools_.size());
  for (size_t b = 0; b < blocks.size(); ++b) {
    for (const Replica& r : placed[b]) {
      ops[r.pool].push_back(RmaOp{const_cast<std::byte*>(blocks[b].encoded.data()),
                                  blocks[b].encoded.size(), r.offset});
    }
  }
  std::vector<size_t> involved;
  Status written = TransferAll(ops, /*put=*/true, deadline, &involved);
  if (!written.ok()) {
    for (size_t i : involved) {
      if (written.code() == StatusCode::kDeadlineExceeded) MarkDead(*pools_[i], written.message());
      (void)Alive(*pools_[i]);
    }
    undo();
    return written.WithContext(fmt::format("remote tier: a batch of {} blocks from {}",
                                           blocks.size(), blocks[0].key.ToString()));
  }
  for (size_t b = 0; b < blocks.size(); ++b) {
    auto it = entries_.find(blocks[b].key);
    if (it != entries_.end()) FreeReplicas(it->second.replicas, it->second.bytes, deadline);
    entries_[blocks[b].key] = Entry{blocks[b].encoded.size(), std::move(placed[b]), tags[b]};
    bytes_put_ += blocks[b].encoded.size() * want;
  }
  return Status::Ok();
}

Result<std::vector<std::vector<std::byte>>> StoreClientImpl::GetBatch(
    std::span<const BlockKey> keys) {
  std::vector<std::vector<std::byte>> out(keys.size());
  std::vector<std::span<std::byte>> spans(keys.size());
  for (size_t k = 0; k < keys.size(); ++k) {
    ASSIGN_OR_RETURN(const uint64_t bytes, StoredBytes(keys[k]));
    out[k].resize(bytes);
    spans[k] = out[k];
  }
  RETURN_IF_ERROR(GetBatchInto(keys, spans));
  return out;
}

Status StoreClientImpl::GetBatchInto(std::span<const BlockKey> keys,
                                     std::span<const std::span<std::byte>> out) {
  if (out.size() != keys.size()) {
    return InvalidArgument("GetBatchInto: {} keys but {} buffers", keys.size(), out.size());
  }
  std::lock_guard<std::mutex> lock(mu_);
  const Deadline deadline = NewDeadline();
  std::vector<std::vector<RmaOp>> ops(pools_.size());
  std::vector<bool> fast(keys.size(), false);  // read from its primary in the batch
  std::vector<const Entry*> found(keys.size(), nullptr);
  for (size_t k = 0; k < keys.size(); ++k) {
    auto it = entries_.find(keys[k]);
    if (it == entries_.end()) {
      return Unavailable("remote tier: block {} is not stored (no holder)", keys[k].ToString());
    }
    if (out[k].size() != it->second.bytes) {
      return InvalidArgument("GetBatchInto: {} is {} bytes, its buffer {}", keys[k].ToString(),
                             it->second.bytes, out[k].size());
    }
    found[k] = &it->second;
    const Replica& primary = it->second.replicas[0];
    if (!Alive(*pools_[primary.pool])) continue;  // the slow path reports or falls back
    ops[primary.pool].push_back(RmaOp{out[k].data(), out[k].size(), primary.offset});
    fast[k] = true;
  }
  std::vector<size_t> involved;
  Status read = TransferAll(ops, /*put=*/false, deadline, &involved);
  if (!read.ok()) {
    if (read.code() == StatusCode::kDeadlineExceeded) {
      for (size_t i : involved) MarkDead(*pools_[i], read.message());
    }
    std::fill(fast.begin(), fast.end(), false);  // which ones landed is unknown: re-read all
  }
  for (size_t k = 0; k < keys.size(); ++k) {
    if (fast[k] && VerifyBlock(out[k], keys[k]).ok() &&
        CheckTag(out[k], *found[k], keys[k]).ok()) {
      bytes_got_ += out[k].size();
      continue;
    }
    ASSIGN_OR_RETURN(std::vector<std::byte> block, GetLocked(keys[k], deadline));  // all replicas
    std::copy(block.begin(), block.end(), out[k].begin());
  }
  return Status::Ok();
}

Status StoreClientImpl::Erase(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return NotFound("remote tier: block {} is not stored", key.ToString());
  FreeReplicas(it->second.replicas, it->second.bytes, NewDeadline());
  entries_.erase(it);
  return Status::Ok();
}

RemoteTierStats StoreClientImpl::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  RemoteTierStats s;
  for (const auto& p : pools_) {
    if (!p->dead) s.capacity_bytes += p->capacity;
  }
  for (const auto& [key, entry] : entries_) {
    s.used_bytes += entry.bytes * entry.replicas.size();
  }
  s.blocks = entries_.size();
  s.bytes_put = bytes_put_;
  s.bytes_got = bytes_got_;
  s.replica_fallbacks = fallbacks_;
  s.degraded_puts = degraded_puts_;
  return s;
}

std::vector<PoolView> StoreClientImpl::Pools() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<PoolView> views;
  for (const auto& p : pools_) {
    views.push_back(PoolView{p->address.ToString(), p->pool_id, !p->dead, p->capacity,
                             p->free_bytes});
  }
  return views;
}

std::vector<std::string> StoreClientImpl::ReplicaPools(const BlockKey& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  auto it = entries_.find(key);
  if (it == entries_.end()) return out;
  for (const Replica& r : it->second.replicas) out.push_back(pools_[r.pool]->address.ToString());
  return out;
}

Status StoreClientImpl::RefreshPools() {
  std::lock_guard<std::mutex> lock(mu_);
  const Deadline deadline = NewDeadline();
  Status first;
  for (auto& p : pools_) {
    if (p->dead) continue;
    Result<ReplyMessage> r = Rpc(*p, wire::Op::kStats, 0, 0, deadline);
    if (!r.ok() && first.ok()) first = r.status();
  }
  return first;
}

Status StoreClientImpl::CorruptForTest(const BlockKey& key, int replica, size_t byte) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return NotFound("{} is not stored", key.ToString());
  if (replica < 0 || static_cast<size_t>(replica) >= it->second.replicas.size() ||
      byte >= it->second.bytes) {
    return OutOfRange("{}: no replica {} byte {}", key.ToString(), replica, byte);
  }
  const Replica& r = it->second.replicas[static_cast<size_t>(replica)];
  PoolConn& pool = *pools_[r.pool];
  std::byte value{};
  const RmaOp op{&value, 1, r.offset + byte};
  const Deadline deadline = NewDeadline();
  RETURN_IF_ERROR(pool.ep->GetAll(*pool.rkey, {&op, 1}, deadline));
  value ^= std::byte{0x5a};
  return pool.ep->PutAll(*pool.rkey, {&op, 1}, deadline);
}

Status StoreClientImpl::Mac(std::span<const std::byte> bytes, uint64_t nonce,
                            std::array<uint8_t, 16>* tag) const {
  const Status failed = Internal("store client: the block MAC (OpenSSL AES-128-GCM) failed");
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  uint8_t iv[12] = {};  // 96-bit GCM nonce: the 64-bit counter, zero-padded
  std::memcpy(iv, &nonce, sizeof(nonce));
  if (!ctx || EVP_EncryptInit_ex2(ctx.get(), gcm_.get(), mac_key_.data(), iv, nullptr) != 1) {
    return failed;
  }
  // The block is additional authenticated data (no output); in chunks, as EVP lengths are int.
  int n = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  constexpr size_t kChunk = size_t{1} << 30;
  for (size_t at = 0; at < bytes.size(); at += kChunk) {
    const int len = static_cast<int>(std::min(bytes.size() - at, kChunk));
    if (EVP_EncryptUpdate(ctx.get(), nullptr, &n, data + at, len) != 1) return failed;
  }
  unsigned char none[16];  // GCM with no plaintext writes nothing here
  if (EVP_EncryptFinal_ex(ctx.get(), none, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(tag->size()),
                          tag->data()) != 1) {
    return failed;
  }
  return Status::Ok();
}

Status StoreClientImpl::OverwriteForTest(const BlockKey& key, int replica,
                                         std::span<const std::byte> bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return NotFound("{} is not stored", key.ToString());
  if (replica < 0 || static_cast<size_t>(replica) >= it->second.replicas.size() ||
      bytes.size() != it->second.bytes) {
    return OutOfRange("{}: no replica {} of {} bytes", key.ToString(), replica, bytes.size());
  }
  const Replica& r = it->second.replicas[static_cast<size_t>(replica)];
  PoolConn& pool = *pools_[r.pool];
  const RmaOp op{const_cast<std::byte*>(bytes.data()), bytes.size(), r.offset};
  return pool.ep->PutAll(*pool.rkey, {&op, 1}, NewDeadline());
}

}  // namespace

Result<std::shared_ptr<StoreClient>> StoreClient::Connect(std::shared_ptr<comm::ucx::Context> ctx,
                                                          const StoreClientOptions& options) {
  auto client = std::make_shared<StoreClientImpl>(std::move(ctx), options);
  RETURN_IF_ERROR(client->Init());
  return std::shared_ptr<StoreClient>(std::move(client));
}

}  // namespace longctx::cache
