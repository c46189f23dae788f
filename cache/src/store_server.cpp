// PoolServer (store.h): a registered host pool, a first-fit allocator, the control active
// messages, the bootstrap listener, and the progress thread that serves them all. Hellos are read
// without blocking (a slow client delays nobody); the token is checked before anything else of
// the hello is looked at (docs/security.md).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "longctx/cache/store.h"
#include "longctx/core/log.h"
#include "store_wire.h"

namespace longctx::cache {

namespace {

using comm::ucx::AmMessage;
using comm::ucx::Endpoint;
using comm::ucx::HostPort;
using comm::ucx::MemoryRegion;
using comm::ucx::TcpListener;
using comm::ucx::Worker;

constexpr uint64_t kAlignment = 64;  // bytes; every allocation starts on a cache line

// First-fit over a map of free ranges (offset -> bytes), merged on free. Sizes are rounded up to
// kAlignment. Invariant: free ranges are disjoint, non-adjacent, and sum to free_bytes().
class FirstFit {
 public:
  explicit FirstFit(uint64_t capacity) : capacity_(capacity), free_bytes_(capacity) {
    if (capacity > 0) free_[0] = capacity;
  }
  static uint64_t Round(uint64_t bytes) {
    return (bytes + kAlignment - 1) / kAlignment * kAlignment;
  }
  std::optional<uint64_t> Alloc(uint64_t bytes) {
    if (bytes == 0 || bytes > capacity_) return std::nullopt;  // (also keeps Round from wrapping)
    const uint64_t need = Round(bytes);
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < need) continue;
      const uint64_t offset = it->first, size = it->second;
      free_.erase(it);
      if (size > need) free_[offset + need] = size - need;
      free_bytes_ -= need;
      return offset;
    }
    return std::nullopt;
  }
  void Free(uint64_t offset, uint64_t rounded) {
    free_bytes_ += rounded;
    auto next = free_.lower_bound(offset);
    if (next != free_.end() && offset + rounded == next->first) {  // merge with the next range
      rounded += next->second;
      next = free_.erase(next);
    }
    if (next != free_.begin()) {  // merge into the previous range
      auto prev = std::prev(next);
      if (prev->first + prev->second == offset) {
        prev->second += rounded;
        return;
      }
    }
    free_[offset] = rounded;
  }
  uint64_t free_bytes() const { return free_bytes_; }
  uint64_t capacity() const { return capacity_; }

 private:
  uint64_t capacity_;
  uint64_t free_bytes_;
  std::map<uint64_t, uint64_t> free_;
};

class PoolServerImpl final : public PoolServer {
 public:
  PoolServerImpl(std::shared_ptr<comm::ucx::Context> ctx, const PoolServerOptions& options)
      : ctx_(std::move(ctx)), options_(options), alloc_(options.pool_bytes) {}
  ~PoolServerImpl() override;

  Status Init();
  const HostPort& address() const override { return listener_.address(); }
  uint64_t pool_id() const override { return pool_id_; }
  PoolServerStats Stats() const override {
    std::lock_guard<std::mutex> lock(stats_mu_);
    return stats_;
  }

 private:
  using SessionKey = std::array<uint8_t, wire::kSessionKeyBytes>;
  struct Session {
    UniqueFd fd;                   // the bootstrap connection: the session lives as long as it
    std::unique_ptr<Endpoint> ep;  // pool -> client, for replies
    SessionKey key{};              // proves a request is this session's (issued in the hello)
    std::string peer;              // the connection's peer IP address
    uint64_t quota = 0;            // bytes this session may hold
    uint64_t used = 0;             // bytes (rounded) it holds
  };
  // An accepted connection whose hello has not fully arrived. Read without blocking.
  struct PendingHello {
    UniqueFd fd;
    std::string peer;
    comm::Deadline deadline;
    uint8_t nonce[wire::kNonceBytes] = {};  // sent in the challenge; the hello's proof covers it
    std::vector<std::byte> buf;  // received so far: the 4-byte length, then the hello
  };
  struct Outgoing {  // a reply waiting to be sent, or in flight (request != nullptr)
    uint64_t session_id = 0;
    wire::Reply header{};
    std::string message;
    ucs_status_ptr_t request = nullptr;
  };

  void Loop();
  void OnRequest(const AmMessage& message);
  void AcceptAll();
  // Reads what arrived on every pending connection; handles complete hellos, drops expired ones.
  void ReadHellos();
  // true when `p` is finished with (answered, refused or dropped).
  bool ReadHello(PendingHello& p);
  void HandleHello(PendingHello& p, std::span<const std::byte> payload);
  void Refuse(PendingHello& p, const std::string& why);
  size_t SessionsFrom(const std::string& peer) const;
  void CheckSessions();
  void CloseSession(uint64_t session_id, std::string_view why);
  unsigned PumpReplies();
  void UpdateStats();
  uint64_t FreeFor(const Session& s) const {
    const uint64_t left = s.quota > s.used ? s.quota - s.used : 0;
    return std::min(left, alloc_.free_bytes());
  }

  std::shared_ptr<comm::ucx::Context> ctx_;
  PoolServerOptions options_;
  std::unique_ptr<Worker> worker_;
  std::unique_ptr<MemoryRegion> pool_;
  std::vector<std::byte> rkey_;
  TcpListener listener_;
  uint64_t pool_id_ = 0;
  std::string host_ = comm::ucx::HostIdentity();
  UniqueFd wake_;  // eventfd: the destructor wakes the thread
  std::atomic<bool> stop_{false};

  // Owned by the progress thread.
  FirstFit alloc_;
  struct Allocation {
    uint64_t bytes;  // rounded
    uint64_t session_id;
  };
  std::map<uint64_t, Allocation> allocations_;  // offset -> owner
  std::map<uint64_t, Session> sessions_;        // session id (random) -> session
  std::list<PendingHello> pending_;             // oldest first
  std::deque<Outgoing> outgoing_;
  uint64_t refused_ = 0, dropped_ = 0, misbehaving_ = 0;

  mutable std::mutex stats_mu_;
  PoolServerStats stats_;
  std::thread thread_;  // last: started after everything above exists, joined first
};

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0;
}

Status PoolServerImpl::Init() {
  if (options_.pool_bytes == 0) return InvalidArgument("a pool server needs a pool of > 0 bytes");
  ASSIGN_OR_RETURN(HostPort where,
                   comm::ucx::ParseHostPort(options_.listen, "pool listen address"));
  if (!options_.token && !IsLoopback(where.host)) {
    return InvalidArgument("a pool without a token must listen on a loopback address "
                           "(127.0.0.0/8), not {}", where.host);
  }
  if (options_.quota_per_session == 0 || options_.quota_per_session > options_.pool_bytes) {
    options_.quota_per_session = options_.pool_bytes;
  }
  if (options_.max_sessions == 0 || options_.max_sessions_per_host == 0) {
    return InvalidArgument("a pool server needs room for at least one session");
  }
  ASSIGN_OR_RETURN(worker_, Worker::Create(ctx_));
  ASSIGN_OR_RETURN(pool_, MemoryRegion::Allocate(ctx_, options_.pool_bytes));
  ASSIGN_OR_RETURN(rkey_, pool_->PackRkey());
  ASSIGN_OR_RETURN(listener_, TcpListener::Listen(where));
  std::random_device rd;
  pool_id_ = (uint64_t{rd()} << 32 | rd()) ^ (uint64_t(getpid()) << 16);
  if (pool_id_ == 0) pool_id_ = 1;
  wake_ = UniqueFd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (wake_.get() < 0) return ErrnoStatus(errno, "eventfd");
  RETURN_IF_ERROR(worker_->SetAmHandler(wire::kAmRequest,
                                        [this](const AmMessage& m) { OnRequest(m); }));
  UpdateStats();
  thread_ = std::thread([this] { Loop(); });
  LONGCTX_LOG_INFO("store: pool of {} bytes at {} (id {:016x}, {}, quota {} bytes per session)",
                   options_.pool_bytes, listener_.address().ToString(), pool_id_,
                   options_.token ? "token required" : "NO AUTHENTICATION",
                   options_.quota_per_session);
  return Status::Ok();
}

PoolServerImpl::~PoolServerImpl() {
  stop_.store(true);
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof(one));
    thread_.join();
  }
}

void PoolServerImpl::UpdateStats() {
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.capacity_bytes = alloc_.capacity();
  stats_.used_bytes = alloc_.capacity() - alloc_.free_bytes();
  stats_.allocations = allocations_.size();
  stats_.clients = sessions_.size();
  stats_.pending_hellos = pending_.size();
  stats_.refused_hellos = refused_;
  stats_.dropped_requests = dropped_;
  stats_.closed_misbehaving = misbehaving_;
}

void PoolServerImpl::OnRequest(const AmMessage& message) {
  const std::optional<wire::Request> parsed = wire::ReadAmHeader<wire::Request>(message.header);
  if (!parsed) {
    if (++dropped_ <= 10) {
      LONGCTX_LOG_WARN("store: dropped a malformed request ({} header bytes)",
                       message.header.size());
    }
    return;
  }
  const wire::Request& req = *parsed;
  // The session is whoever holds its key (issued over its bootstrap connection only); a request
  // naming another session, or none, gets no answer at all.
  auto session = sessions_.find(req.session_id);
  if (session == sessions_.end() ||
      CRYPTO_memcmp(session->second.key.data(), req.session_key, wire::kSessionKeyBytes) != 0) {
    if (++dropped_ <= 10) {
      LONGCTX_LOG_WARN("store: dropped a request without a live session's key (op {})", req.op);
    }
    return;
  }
  Session& s = session->second;
  Outgoing out;
  out.session_id = req.session_id;
  out.header.magic = wire::kAmMagic;
  out.header.version = wire::kVersion;
  out.header.op = req.op;
  out.header.request_id = req.request_id;
  Status st;
  switch (static_cast<wire::Op>(req.op)) {
    case wire::Op::kAlloc: {
      if (req.arg0 == 0) {
        st = InvalidArgument("an allocation of 0 bytes");
        break;
      }
      const uint64_t need = req.arg0 > alloc_.capacity() ? 0 : FirstFit::Round(req.arg0);
      if (need > 0 && s.used + need > s.quota) {
        st = ResourceExhausted("pool {}: this session's quota is {} bytes; {} in use, {} more "
                               "asked", listener_.address().ToString(), s.quota, s.used, need);
        break;
      }
      std::optional<uint64_t> offset = alloc_.Alloc(req.arg0);
      if (!offset) {
        st = ResourceExhausted("pool {} has no free range of {} bytes ({} of {} bytes free)",
                               listener_.address().ToString(), req.arg0, alloc_.free_bytes(),
                               alloc_.capacity());
      } else {
        out.header.offset = *offset;
        allocations_[*offset] = Allocation{need, req.session_id};
        s.used += need;
      }
      break;
    }
    case wire::Op::kFree: {
      auto it = allocations_.find(req.arg0);
      if (it == allocations_.end() || it->second.session_id != req.session_id ||
          req.arg1 > alloc_.capacity() || it->second.bytes != FirstFit::Round(req.arg1)) {
        st = InvalidArgument("no allocation of {} bytes at offset {} for this session", req.arg1,
                             req.arg0);
      } else {
        alloc_.Free(it->first, it->second.bytes);
        s.used -= it->second.bytes;
        allocations_.erase(it);
      }
      break;
    }
    case wire::Op::kStats:
      break;
    default:
      st = InvalidArgument("unknown store operation {}", req.op);
  }
  out.header.status = static_cast<int32_t>(st.code());
  out.header.free_bytes = FreeFor(s);
  out.header.capacity_bytes = alloc_.capacity();
  out.message = st.message();
  outgoing_.push_back(std::move(out));
  UpdateStats();
}

// Sends queued replies (never from inside an AM handler) and reaps completed sends. Returns the
// number of replies that changed state.
unsigned PoolServerImpl::PumpReplies() {
  unsigned events = 0;
  for (auto it = outgoing_.begin(); it != outgoing_.end();) {
    auto session = sessions_.find(it->session_id);
    if (session == sessions_.end() || !session->second.ep->alive()) {
      if (it->request != nullptr) {
        ucp_request_cancel(worker_->get(), it->request);
        ucp_request_free(it->request);
      }
      it = outgoing_.erase(it);
      ++events;
      continue;
    }
    if (it->request == nullptr) {
      ucp_request_param_t param;
      std::memset(&param, 0, sizeof(param));
      param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      param.flags = UCP_AM_SEND_FLAG_EAGER;
      ucs_status_ptr_t r =
          ucp_am_send_nbx(session->second.ep->get(), wire::kAmReply, &it->header,
                          sizeof(it->header), it->message.data(), it->message.size(), &param);
      ++events;
      if (r == nullptr || UCS_PTR_IS_ERR(r)) {
        if (UCS_PTR_IS_ERR(r)) {
          LONGCTX_LOG_WARN("store: reply to session {:016x}: {}", it->session_id,
                           ucs_status_string(UCS_PTR_STATUS(r)));
        }
        it = outgoing_.erase(it);
        continue;
      }
      it->request = r;
      ++it;
      continue;
    }
    if (ucp_request_check_status(it->request) == UCS_INPROGRESS) {
      ++it;
      continue;
    }
    ucp_request_free(it->request);
    it = outgoing_.erase(it);
    ++events;
  }
  return events;
}

std::string PeerAddress(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  char text[INET_ADDRSTRLEN] = "?";
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 &&
      addr.sin_family == AF_INET) {
    inet_ntop(AF_INET, &addr.sin_addr, text, sizeof(text));
  }
  return text;
}

size_t PoolServerImpl::SessionsFrom(const std::string& peer) const {
  size_t n = 0;
  for (const auto& [id, s] : sessions_) n += s.peer == peer;
  return n;
}

void PoolServerImpl::AcceptAll() {
  // At most a few per round, so a connection flood cannot starve the progress of the sessions.
  for (int i = 0; i < 16; ++i) {
    Result<UniqueFd> conn = listener_.Accept(comm::DeadlineIn(std::chrono::milliseconds(0)));
    if (!conn.ok()) return;  // nothing pending (or a transient accept error)
    PendingHello p;
    p.peer = PeerAddress(conn->get());
    p.fd = std::move(*conn);
    p.deadline = comm::DeadlineIn(options_.hello_timeout);
    // The challenge, before anything is read: a fresh nonce the hello's proof must cover.
    wire::Challenge c{};
    c.magic = wire::kChallengeMagic;
    c.version = wire::kVersion;
    if (RAND_bytes(p.nonce, sizeof(p.nonce)) != 1) continue;  // (closes it)
    std::memcpy(c.nonce, p.nonce, sizeof(p.nonce));
    if (!comm::ucx::SendFrame(p.fd.get(), wire::AsBytes(c),
                              comm::DeadlineIn(std::chrono::milliseconds(50))).ok()) {
      continue;
    }
    size_t pending_from_peer = 0;
    for (const PendingHello& q : pending_) pending_from_peer += q.peer == p.peer;
    if (pending_from_peer >= options_.max_sessions_per_host) {
      ++refused_;  // a flood of silent connections from one address: closed unread
      continue;
    }
    // Bounded: past the limit the oldest pending connection goes (a live client's hello takes
    // microseconds; only the silent ones are old).
    if (pending_.size() >= options_.max_sessions) {
      LONGCTX_LOG_WARN("store: {} pending hellos; dropped the oldest (from {})", pending_.size(),
                       pending_.front().peer);
      pending_.pop_front();
    }
    pending_.push_back(std::move(p));
  }
}

void PoolServerImpl::Refuse(PendingHello& p, const std::string& why) {
  ++refused_;
  LONGCTX_LOG_WARN("store: refused a client from {}: {}", p.peer, why);
  wire::Refusal r{};
  r.magic = wire::kRefusalMagic;
  r.version = wire::kVersion;
  r.text_len = static_cast<uint32_t>(why.size());
  std::vector<std::byte> frame;
  wire::Append(&frame, wire::AsBytes(r));
  wire::Append(&frame, std::as_bytes(std::span(why)));
  // A fresh connection's send buffer takes a few hundred bytes at once; never wait long.
  (void)comm::ucx::SendFrame(p.fd.get(), frame, comm::DeadlineIn(std::chrono::milliseconds(50)));
  // Closing with unread input would reset the connection and could discard the refusal before
  // the client reads it: drain what is there (bounded) first.
  std::byte junk[4096];
  for (int i = 0; i < 4 && recv(p.fd.get(), junk, sizeof(junk), MSG_DONTWAIT) > 0; ++i) {
  }
  p.fd = UniqueFd();
  UpdateStats();
}

bool PoolServerImpl::ReadHello(PendingHello& p) {
  if (comm::Clock::now() >= p.deadline) {
    ++refused_;
    LONGCTX_LOG_WARN("store: dropped a client from {}: no complete hello within {} ms", p.peer,
                     options_.hello_timeout.count());
    return true;
  }
  while (true) {
    size_t want = 4;  // the length prefix first, then exactly the hello (never beyond it)
    if (p.buf.size() >= 4) {
      uint32_t len = 0;
      std::memcpy(&len, p.buf.data(), 4);
      if (len < sizeof(wire::ClientHello) || len > wire::kMaxHelloBytes) {
        Refuse(p, fmt::format("malformed hello ({} bytes)", len));
        return true;
      }
      want = 4 + size_t{len};
    }
    if (p.buf.size() == want && want > 4) {
      HandleHello(p, std::span<const std::byte>(p.buf).subspan(4));
      return true;
    }
    const size_t have = p.buf.size();
    p.buf.resize(want);
    const ssize_t n = recv(p.fd.get(), p.buf.data() + have, want - have, MSG_DONTWAIT);
    if (n > 0) {
      p.buf.resize(have + static_cast<size_t>(n));
      continue;
    }
    p.buf.resize(have);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return false;
    return true;  // closed before its hello was complete, or failed
  }
}

void PoolServerImpl::ReadHellos() {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (ReadHello(*it)) {
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

void PoolServerImpl::HandleHello(PendingHello& p, std::span<const std::byte> payload) {
  // The token first: nothing of the client's is interpreted, and nothing of the pool's is
  // revealed, before it is proven (an HMAC of this connection's nonce, compared in constant time).
  auto prove = [&](const wire::ClientHello& hello) -> std::string {
    if (!options_.token) return "";
    const std::array<uint8_t, wire::kProofBytes> expected =
        wire::HelloProof(*options_.token, p.nonce);
    if (CRYPTO_memcmp(expected.data(), hello.proof, expected.size()) != 0) {
      return "wrong or missing store token";
    }
    return "";
  };
  wire::ClientHello h{};
  std::span<const std::byte> client_address;
  if (std::string bad =
          wire::ReadClientHello(payload, worker_->address(), prove, &h, &client_address);
      !bad.empty()) {
    return Refuse(p, bad);
  }
  if (sessions_.size() >= options_.max_sessions) {
    return Refuse(p, fmt::format("the pool has its maximum of {} sessions",
                                 options_.max_sessions));
  }
  if (SessionsFrom(p.peer) >= options_.max_sessions_per_host) {
    return Refuse(p, fmt::format("too many sessions from {} (at most {})", p.peer,
                                 options_.max_sessions_per_host));
  }
  uint64_t session_id = 0;
  SessionKey key{};
  do {
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&session_id), sizeof(session_id)) != 1 ||
        RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) {
      return Refuse(p, "the pool could not draw a session key");
    }
  } while (session_id == 0 || sessions_.count(session_id) > 0);
  Result<std::unique_ptr<Endpoint>> ep =
      Endpoint::Connect(*worker_, client_address, fmt::format("session {:016x}", session_id),
                        wire::SameHost(h.host, host_) && (h.flags & wire::kFlagSharedMemory));
  if (!ep.ok()) return Refuse(p, "cannot reach your UCX address: " + ep.status().message());
  wire::PoolHello reply{};
  reply.magic = wire::kHelloMagic;
  reply.version = wire::kVersion;
  reply.flags = comm::ucx::SharedMemoryAllowed() ? wire::kFlagSharedMemory : 0;
  reply.pool_id = pool_id_;
  reply.session_id = session_id;
  std::memcpy(reply.session_key, key.data(), key.size());
  reply.pool_base = reinterpret_cast<uint64_t>(pool_->base());
  reply.pool_bytes = pool_->bytes();
  reply.quota_bytes = options_.quota_per_session;
  reply.addr_len = static_cast<uint32_t>(worker_->address().size());
  reply.rkey_len = static_cast<uint32_t>(rkey_.size());
  wire::SetHost(reply.host, host_);
  std::vector<std::byte> frame;
  wire::Append(&frame, wire::AsBytes(reply));
  wire::Append(&frame, worker_->address());
  wire::Append(&frame, rkey_);
  const Status sent = comm::ucx::SendFrame(p.fd.get(), frame,
                                           comm::DeadlineIn(std::chrono::milliseconds(200)));
  if (!sent.ok()) {
    LONGCTX_LOG_WARN("store: hello reply to {}: {}", p.peer, sent.message());
    (*ep)->MarkFailed(UCS_ERR_CANCELED);
    return;
  }
  Session s;
  s.fd = std::move(p.fd);
  s.ep = std::move(*ep);
  s.key = key;
  s.peer = p.peer;
  s.quota = options_.quota_per_session;
  sessions_.emplace(session_id, std::move(s));
  UpdateStats();
  LONGCTX_LOG_INFO("store: session {:016x} from {} opened", session_id, p.peer);
}

void PoolServerImpl::CloseSession(uint64_t session_id, std::string_view why) {
  uint64_t freed = 0;
  for (auto it = allocations_.begin(); it != allocations_.end();) {
    if (it->second.session_id != session_id) {
      ++it;
      continue;
    }
    alloc_.Free(it->first, it->second.bytes);
    freed += it->second.bytes;
    it = allocations_.erase(it);
  }
  auto it = sessions_.find(session_id);
  if (it != sessions_.end()) {
    // Force-close: a graceful close would wait for a client that may not be progressing.
    it->second.ep->MarkFailed(UCS_ERR_CANCELED);
    sessions_.erase(it);
  }
  UpdateStats();
  LONGCTX_LOG_INFO("store: session {:016x} closed ({}); freed its {} bytes", session_id, why,
                   freed);
}

// A client sends nothing after its hello: the socket only tells that it is alive. Bytes on it
// are a protocol violation (the session is closed), and so is a hangup or an error.
void PoolServerImpl::CheckSessions() {
  std::vector<std::pair<uint64_t, const char*>> closed;
  for (const auto& [id, session] : sessions_) {
    pollfd pfd{session.fd.get(), POLLIN, 0};
    if (poll(&pfd, 1, 0) <= 0) continue;
    std::byte junk[64];
    const ssize_t n = recv(session.fd.get(), junk, sizeof(junk), MSG_DONTWAIT);
    if (n > 0) {
      ++misbehaving_;
      closed.emplace_back(id, "it sent bytes after its hello");
    } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
               (pfd.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) {
      closed.emplace_back(id, "its connection closed");
    }
  }
  for (const auto& [id, why] : closed) CloseSession(id, why);
}

void PoolServerImpl::Loop() {
  using namespace std::chrono_literals;
  auto last_socket_check = comm::Clock::now();
  unsigned idle = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    unsigned events = worker_->Progress();
    events += PumpReplies();
    const auto now = comm::Clock::now();
    if (events > 0) {
      idle = 0;
      // Under load, still look at the sockets every few ms (new clients, closed sessions).
      if (now - last_socket_check > 5ms) {
        last_socket_check = now;
        AcceptAll();
        ReadHellos();
        CheckSessions();
        UpdateStats();
      }
      continue;
    }
    // Spin a little (the next fragment is usually close behind), then sleep on the wakeup fd: a
    // longer spin steals the core that a shared-memory initiator needs (measured: 2-3x slower
    // puts on a loaded 2-core host), and a one-sided put over shared memory needs no target.
    if (++idle < 128) continue;
    // Idle: sleep until UCX, a socket or the destructor has something (at most 20 ms, so a
    // transport whose events do not reach the wakeup fd is still progressed).
    if (!worker_->Arm()) continue;
    std::vector<pollfd> fds;
    fds.push_back({worker_->event_fd(), POLLIN, 0});
    fds.push_back({listener_.fd(), POLLIN, 0});
    fds.push_back({wake_.get(), POLLIN, 0});
    for (const auto& [id, session] : sessions_) fds.push_back({session.fd.get(), POLLIN, 0});
    for (const PendingHello& p : pending_) fds.push_back({p.fd.get(), POLLIN, 0});
    (void)poll(fds.data(), fds.size(), 20);
    last_socket_check = comm::Clock::now();
    if ((fds[1].revents & POLLIN) != 0) AcceptAll();
    ReadHellos();
    CheckSessions();
    UpdateStats();
    idle = 0;
  }
  // Shutting down: drop replies in flight, then the sessions (their endpoints close here, on
  // the thread that owns the worker).
  for (Outgoing& out : outgoing_) {
    if (out.request != nullptr) {
      ucp_request_cancel(worker_->get(), out.request);
      ucp_request_free(out.request);
    }
  }
  outgoing_.clear();
  pending_.clear();
  // Force-close: a graceful close would wait for clients that may not be progressing.
  for (auto& [id, session] : sessions_) session.ep->MarkFailed(UCS_ERR_CANCELED);
  sessions_.clear();
}

}  // namespace

Result<std::unique_ptr<PoolServer>> PoolServer::Start(std::shared_ptr<comm::ucx::Context> ctx,
                                                      const PoolServerOptions& options) {
  auto server = std::make_unique<PoolServerImpl>(std::move(ctx), options);
  RETURN_IF_ERROR(server->Init());
  return std::unique_ptr<PoolServer>(std::move(server));
}

}  // namespace longctx::cache
