// PoolServer (store.h): a registered host pool, a first-fit allocator, the control active
// messages, the bootstrap listener, and the progress thread that serves them all.
#include <sys/eventfd.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <deque>
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
  PoolServerImpl(std::shared_ptr<comm::ucx::Context> ctx, uint64_t pool_bytes)
      : ctx_(std::move(ctx)), alloc_(pool_bytes) {}
  ~PoolServerImpl() override;

  Status Init(const PoolServerOptions& options);
  const HostPort& address() const override { return listener_.address(); }
  uint64_t pool_id() const override { return pool_id_; }
  PoolServerStats Stats() const override {
    std::lock_guard<std::mutex> lock(stats_mu_);
    return stats_;
  }

 private:
  struct Session {
    UniqueFd fd;
    std::unique_ptr<Endpoint> ep;  // pool -> client, for replies
  };
  struct Outgoing {  // a reply waiting to be sent, or in flight (request != nullptr)
    uint64_t client_id = 0;
    wire::Reply header{};
    std::string message;
    ucs_status_ptr_t request = nullptr;
  };

  void Loop();
  void OnRequest(const AmMessage& message);
  void Accept();
  void CheckSessions();
  void CloseSession(uint64_t client_id);
  unsigned PumpReplies();
  void UpdateStats();

  std::shared_ptr<comm::ucx::Context> ctx_;
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
    uint64_t client_id;
  };
  std::map<uint64_t, Allocation> allocations_;  // offset -> owner
  std::map<uint64_t, Session> sessions_;        // client id -> session
  uint64_t next_client_ = 1;
  std::deque<Outgoing> outgoing_;

  mutable std::mutex stats_mu_;
  PoolServerStats stats_;
  std::thread thread_;  // last: started after everything above exists, joined first
};

Status PoolServerImpl::Init(const PoolServerOptions& options) {
  if (options.pool_bytes == 0) return InvalidArgument("a pool server needs a pool of > 0 bytes");
  ASSIGN_OR_RETURN(HostPort where, comm::ucx::ParseHostPort(options.listen, "pool listen address"));
  ASSIGN_OR_RETURN(worker_, Worker::Create(ctx_));
  ASSIGN_OR_RETURN(pool_, MemoryRegion::Allocate(ctx_, options.pool_bytes));
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
  LONGCTX_LOG_INFO("store: pool of {} bytes at {} (id {:016x})", options.pool_bytes,
                   listener_.address().ToString(), pool_id_);
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
}

void PoolServerImpl::OnRequest(const AmMessage& message) {
  Result<wire::Request> parsed = wire::Read<wire::Request>(message.header, "store request");
  if (!parsed.ok() || parsed->magic != wire::kAmMagic || parsed->version != wire::kVersion) {
    LONGCTX_LOG_WARN("store: dropped a malformed request ({} header bytes)", message.header.size());
    return;
  }
  const wire::Request& req = *parsed;
  Outgoing out;
  out.client_id = req.client_id;
  out.header.magic = wire::kAmMagic;
  out.header.version = wire::kVersion;
  out.header.op = req.op;
  out.header.request_id = req.request_id;
  Status st;
  if (sessions_.count(req.client_id) == 0) {
    st = FailedPrecondition("unknown client session {}", req.client_id);
  } else {
    switch (static_cast<wire::Op>(req.op)) {
      case wire::Op::kAlloc: {
        std::optional<uint64_t> offset;
        if (req.arg0 > 0) offset = alloc_.Alloc(req.arg0);
        if (req.arg0 == 0) {
          st = InvalidArgument("an allocation of 0 bytes");
        } else if (!offset) {
          st = ResourceExhausted("pool {} has no free range of {} bytes ({} of {} bytes free)",
                                 listener_.address().ToString(), req.arg0, alloc_.free_bytes(),
                                 alloc_.capacity());
        } else {
          out.header.offset = *offset;
          allocations_[*offset] = Allocation{FirstFit::Round(req.arg0), req.client_id};
        }
        break;
      }
      case wire::Op::kFree: {
        auto it = allocations_.find(req.arg0);
        if (it == allocations_.end() || it->second.client_id != req.client_id ||
            req.arg1 > alloc_.capacity() ||
            it->second.bytes != FirstFit::Round(req.arg1)) {
          st = InvalidArgument("no allocation of {} bytes at offset {} for this client", req.arg1,
                               req.arg0);
        } else {
          alloc_.Free(it->first, it->second.bytes);
          allocations_.erase(it);
        }
        break;
      }
      case wire::Op::kStats:
        break;
      default:
        st = InvalidArgument("unknown store operation {}", req.op);
    }
  }
  out.header.status = static_cast<int32_t>(st.code());
  out.header.free_bytes = alloc_.free_bytes();
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
    auto session = sessions_.find(it->client_id);
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
          LONGCTX_LOG_WARN("store: reply to client {}: {}", it->client_id,
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

void PoolServerImpl::Accept() {
  Result<UniqueFd> conn = listener_.Accept(comm::DeadlineIn(std::chrono::milliseconds(0)));
  if (!conn.ok()) return;  // nothing pending (or a transient accept error)
  const int fd = conn->get();
  // A hello is two small frames; a client that does not send one within 2 s is dropped.
  const comm::Deadline deadline = comm::DeadlineIn(std::chrono::milliseconds(2000));
  Result<std::vector<std::byte>> hello = comm::ucx::RecvFrame(fd, 4096, deadline);
  if (!hello.ok()) {
    LONGCTX_LOG_WARN("store: a client hello failed: {}", hello.status().message());
    return;
  }
  Result<wire::ClientHello> h = wire::Read<wire::ClientHello>(*hello, "client hello");
  if (!h.ok() || h->magic != wire::kHelloMagic || h->version != wire::kVersion ||
      hello->size() != sizeof(wire::ClientHello) + h->addr_len) {
    LONGCTX_LOG_WARN("store: refused a client with a malformed hello or another version");
    return;
  }
  const std::span<const std::byte> client_address =
      std::span<const std::byte>(*hello).subspan(sizeof(wire::ClientHello));
  const uint64_t client_id = next_client_++;
  Result<std::unique_ptr<Endpoint>> ep =
      Endpoint::Connect(*worker_, client_address, fmt::format("client {}", client_id),
                        wire::SameHost(h->host, host_) && (h->flags & wire::kFlagSharedMemory));
  if (!ep.ok()) {
    LONGCTX_LOG_WARN("store: cannot reach client {}: {}", client_id, ep.status().message());
    return;
  }
  wire::PoolHello reply{};
  reply.magic = wire::kHelloMagic;
  reply.version = wire::kVersion;
  reply.flags = comm::ucx::SharedMemoryAllowed() ? wire::kFlagSharedMemory : 0;
  reply.pool_id = pool_id_;
  reply.client_id = client_id;
  reply.pool_base = reinterpret_cast<uint64_t>(pool_->base());
  reply.pool_bytes = pool_->bytes();
  reply.addr_len = static_cast<uint32_t>(worker_->address().size());
  reply.rkey_len = static_cast<uint32_t>(rkey_.size());
  wire::SetHost(reply.host, host_);
  std::vector<std::byte> frame;
  wire::Append(&frame, wire::AsBytes(reply));
  wire::Append(&frame, worker_->address());
  wire::Append(&frame, rkey_);
  const Status sent = comm::ucx::SendFrame(fd, frame, deadline);
  if (!sent.ok()) {
    LONGCTX_LOG_WARN("store: hello reply to client {}: {}", client_id, sent.message());
    return;
  }
  sessions_[client_id] = Session{std::move(*conn), std::move(*ep)};
  UpdateStats();
  LONGCTX_LOG_INFO("store: client {} connected", client_id);
}

void PoolServerImpl::CloseSession(uint64_t client_id) {
  uint64_t freed = 0;
  for (auto it = allocations_.begin(); it != allocations_.end();) {
    if (it->second.client_id != client_id) {
      ++it;
      continue;
    }
    alloc_.Free(it->first, it->second.bytes);
    freed += it->second.bytes;
    it = allocations_.erase(it);
  }
  sessions_.erase(client_id);
  UpdateStats();
  LONGCTX_LOG_INFO("store: client {} left; freed its {} bytes", client_id, freed);
}

void PoolServerImpl::CheckSessions() {
  std::vector<uint64_t> closed;
  for (const auto& [id, session] : sessions_) {
    if (comm::ucx::PeerClosed(session.fd.get())) closed.push_back(id);
  }
  for (uint64_t id : closed) CloseSession(id);
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
        Accept();
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
    (void)poll(fds.data(), fds.size(), 20);
    last_socket_check = comm::Clock::now();
    if ((fds[1].revents & POLLIN) != 0) Accept();
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
  // Force-close: a graceful close would wait for clients that may not be progressing.
  for (auto& [id, session] : sessions_) session.ep->MarkFailed(UCS_ERR_CANCELED);
  sessions_.clear();
}

}  // namespace

Result<std::unique_ptr<PoolServer>> PoolServer::Start(std::shared_ptr<comm::ucx::Context> ctx,
                                                      const PoolServerOptions& options) {
  auto server = std::make_unique<PoolServerImpl>(std::move(ctx), options.pool_bytes);
  RETURN_IF_ERROR(server->Init(options));
  return std::unique_ptr<PoolServer>(std::move(server));
}

}  // namespace longctx::cache
