// The UCX wrappers of ucx.h: ownership, deadline-bounded waits and the one UCX->Status mapping.
#include "longctx/comm/ucx/ucx.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "longctx/core/log.h"

namespace longctx::comm::ucx {

namespace {

// Requests are polled with ucp_request_check_status, so no completion callback is needed; a
// request abandoned at a deadline is cancelled and freed (UCX releases it when it completes).
ucp_request_param_t NoCallbackParam() {
  ucp_request_param_t param;
  std::memset(&param, 0, sizeof(param));
  param.op_attr_mask = 0;
  return param;
}

bool IsRequestPending(ucs_status_ptr_t request) {
  return request != nullptr && !UCS_PTR_IS_ERR(request);
}

}  // namespace

Status UcsToStatus(ucs_status_t status, std::string_view what) {
  if (status == UCS_OK) return Status::Ok();
  const std::string message = fmt::format("{}: {}", what, ucs_status_string(status));
  switch (status) {
    case UCS_ERR_TIMED_OUT:
      return Status(StatusCode::kDeadlineExceeded, message);
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_REJECTED:
    case UCS_ERR_CANCELED:
    case UCS_ERR_IO_ERROR:
    case UCS_ERR_SOME_CONNECTS_FAILED:
      return Status(StatusCode::kUnavailable, message);
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT:
    case UCS_ERR_OUT_OF_RANGE:
      return Status(StatusCode::kResourceExhausted, message);
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
      return InvalidArgument("{}", message);
    case UCS_ERR_UNSUPPORTED:
      return Unimplemented("{}", message);
    default:
      return Internal("{}", message);
  }
}

// ---- Context ----------------------------------------------------------------------------------

Result<std::shared_ptr<Context>> Context::Create(const std::string& net_devices,
                                                 const std::string& tls) {
  ucp_config_t* config = nullptr;
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
  if (st != UCS_OK) return UcsToStatus(st, "reading the UCX configuration (UCX_* variables)");
  if (!net_devices.empty() && std::getenv("UCX_NET_DEVICES") == nullptr) {
    st = ucp_config_modify(config, "NET_DEVICES", net_devices.c_str());
    if (st != UCS_OK) {
      ucp_config_release(config);
      return UcsToStatus(st, "UCX NET_DEVICES=" + net_devices);
    }
  }
  if (!tls.empty() && std::getenv("UCX_TLS") == nullptr) {
    st = ucp_config_modify(config, "TLS", tls.c_str());
    if (st != UCS_OK) {
      ucp_config_release(config);
      return UcsToStatus(st, "UCX TLS=" + tls);
    }
  }
  ucp_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED |
                      UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 1;  // a pool server's worker and a client's worker, two threads
  params.name = "longctx";
  ucp_context_h context = nullptr;
  st = ucp_init(&params, config, &context);
  ucp_config_release(config);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_init");
  return std::shared_ptr<Context>(new Context(context));
}

Context::~Context() { ucp_cleanup(context_); }

// ---- MemoryRegion -----------------------------------------------------------------------------

namespace {
Result<ucp_mem_h> MapMemory(ucp_context_h ctx, void* data, size_t bytes, bool allocate) {
  if (bytes == 0) return InvalidArgument("cannot register an empty memory region");
  ucp_mem_map_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  params.address = data;
  params.length = bytes;
  params.flags = allocate ? UCP_MEM_MAP_ALLOCATE : 0;
  ucp_mem_h memh = nullptr;
  const ucs_status_t st = ucp_mem_map(ctx, &params, &memh);
  if (st != UCS_OK) {
    return UcsToStatus(st, fmt::format("registering a {}-byte memory region", bytes));
  }
  return memh;
}
}  // namespace

Result<std::unique_ptr<MemoryRegion>> MemoryRegion::Allocate(std::shared_ptr<Context> ctx,
                                                             size_t bytes) {
  ASSIGN_OR_RETURN(ucp_mem_h memh, MapMemory(ctx->get(), nullptr, bytes, /*allocate=*/true));
  ucp_mem_attr_t attr;
  std::memset(&attr, 0, sizeof(attr));
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  const ucs_status_t st = ucp_mem_query(memh, &attr);
  if (st != UCS_OK) {
    ucp_mem_unmap(ctx->get(), memh);
    return UcsToStatus(st, "ucp_mem_query");
  }
  if (attr.length < bytes) {
    ucp_mem_unmap(ctx->get(), memh);
    return Internal("UCX allocated {} bytes, asked for {}", attr.length, bytes);
  }
  return std::unique_ptr<MemoryRegion>(
      new MemoryRegion(std::move(ctx), memh, static_cast<std::byte*>(attr.address), bytes));
}

Result<std::unique_ptr<MemoryRegion>> MemoryRegion::Register(std::shared_ptr<Context> ctx,
                                                             void* data, size_t bytes) {
  if (data == nullptr) return InvalidArgument("cannot register a null buffer");
  ASSIGN_OR_RETURN(ucp_mem_h memh, MapMemory(ctx->get(), data, bytes, /*allocate=*/false));
  return std::unique_ptr<MemoryRegion>(
      new MemoryRegion(std::move(ctx), memh, static_cast<std::byte*>(data), bytes));
}

MemoryRegion::~MemoryRegion() {
  const ucs_status_t st = ucp_mem_unmap(ctx_->get(), memh_);
  if (st != UCS_OK) LONGCTX_LOG_WARN("ucp_mem_unmap: {}", ucs_status_string(st));
}

Result<std::vector<std::byte>> MemoryRegion::PackRkey() const {
  void* buffer = nullptr;
  size_t size = 0;
  const ucs_status_t st = ucp_rkey_pack(ctx_->get(), memh_, &buffer, &size);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_rkey_pack");
  std::vector<std::byte> packed(static_cast<const std::byte*>(buffer),
                                static_cast<const std::byte*>(buffer) + size);
  ucp_rkey_buffer_release(buffer);
  return packed;
}

// ---- Worker -----------------------------------------------------------------------------------

Result<std::unique_ptr<Worker>> Worker::Create(std::shared_ptr<Context> ctx) {
  ucp_worker_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  params.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  ucp_worker_h handle = nullptr;
  ucs_status_t st = ucp_worker_create(ctx->get(), &params, &handle);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_worker_create");
  std::unique_ptr<Worker> worker(new Worker(std::move(ctx), handle));
  ucp_address_t* address = nullptr;
  size_t length = 0;
  st = ucp_worker_get_address(handle, &address, &length);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_worker_get_address");
  const auto* bytes = reinterpret_cast<const std::byte*>(address);
  worker->address_.assign(bytes, bytes + length);
  ucp_worker_release_address(handle, address);
  st = ucp_worker_get_efd(handle, &worker->efd_);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_worker_get_efd");
  return worker;
}

Worker::~Worker() { ucp_worker_destroy(worker_); }

void Worker::WaitForEvents(int timeout_ms) {
  if (ucp_worker_arm(worker_) != UCS_OK) return;  // UCS_ERR_BUSY: events already pending
  pollfd p{efd_, POLLIN, 0};
  (void)poll(&p, 1, timeout_ms);
}

ucs_status_t Worker::AmTrampoline(void* arg, const void* header, size_t header_length, void* data,
                                  size_t length, const ucp_am_recv_param_t* param) {
  auto* handler = static_cast<AmHandler*>(arg);
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0) {
    // Control messages are a few bytes; a rendezvous one is not ours. Dropped.
    LONGCTX_LOG_WARN("ucx: dropped a {}-byte rendezvous active message", length);
    return UCS_OK;
  }
  AmMessage message;
  message.header = {static_cast<const std::byte*>(header), header_length};
  message.data = {static_cast<const std::byte*>(data), length};
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) != 0) message.reply_ep = param->reply_ep;
  (*handler)(message);
  return UCS_OK;  // the data was copied by the handler; UCX may release it
}

Status Worker::SetAmHandler(uint16_t id, AmHandler handler) {
  if (handlers_.size() <= id) handlers_.resize(size_t{id} + 1);
  handlers_[id] = std::make_unique<AmHandler>(std::move(handler));
  ucp_am_handler_param_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                      UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
  params.id = id;
  params.flags = UCP_AM_FLAG_WHOLE_MSG;
  params.cb = &Worker::AmTrampoline;
  params.arg = handlers_[id].get();
  return UcsToStatus(ucp_worker_set_am_recv_handler(worker_, &params),
                     fmt::format("registering active-message handler {}", id));
}

Status Worker::Wait(ucs_status_ptr_t request, Deadline deadline, std::string_view what,
                    const std::function<bool()>& alive) {
  return WaitAll({&request, 1}, deadline, what, alive);
}

Status Worker::WaitAll(std::span<ucs_status_ptr_t> requests, Deadline deadline,
                       std::string_view what, const std::function<bool()>& alive) {
  Status first;
  auto record = [&first](Status s) {
    if (first.ok() && !s.ok()) first = std::move(s);
  };
  size_t pending = 0;
  for (ucs_status_ptr_t& r : requests) {
    if (r == nullptr) continue;  // completed at once
    if (UCS_PTR_IS_ERR(r)) {
      record(UcsToStatus(UCS_PTR_STATUS(r), what));
      r = nullptr;
      continue;
    }
    ++pending;
  }
  unsigned idle = 0;
  while (pending > 0) {
    for (ucs_status_ptr_t& r : requests) {
      if (!IsRequestPending(r)) continue;
      const ucs_status_t st = ucp_request_check_status(r);
      if (st == UCS_INPROGRESS) continue;
      record(UcsToStatus(st, what));
      ucp_request_free(r);
      r = nullptr;
      --pending;
    }
    if (pending == 0) break;
    if (Progress() != 0) {
      idle = 0;
      continue;
    }
    // Nothing happened: check the peer and the clock (cheap enough once per idle round), and
    // after a spin, sleep on the wakeup fd for up to 1 ms instead of burning a core.
    const bool dead = alive && !alive();
    const bool late = Clock::now() >= deadline;
    if (dead || late) {
      for (ucs_status_ptr_t& r : requests) {
        if (!IsRequestPending(r)) continue;
        ucp_request_cancel(worker_, r);
        ucp_request_free(r);
        r = nullptr;
      }
      record(dead ? Status(StatusCode::kUnavailable, fmt::format("{}: the peer failed", what))
                  : Status(StatusCode::kDeadlineExceeded,
                           fmt::format("{}: no completion before the deadline", what)));
      return first;
    }
    if (++idle > 256) WaitForEvents(1);
  }
  return first;
}

// ---- RemoteKey / Endpoint ---------------------------------------------------------------------

RemoteKey::~RemoteKey() { ucp_rkey_destroy(rkey_); }

void Endpoint::OnError(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  auto* self = static_cast<Endpoint*>(arg);
  self->failure_.store(status == UCS_OK ? UCS_ERR_CONNECTION_RESET : status);
  LONGCTX_LOG_INFO("ucx: {} failed: {}", self->name_, ucs_status_string(status));
}

std::string HostIdentity() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string boot;
  std::getline(in, boot);
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return boot + "@" + host;
}

std::string NetDeviceOf(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) return "";
  const in_addr want = reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr;
  freeaddrinfo(found);
  if (want.s_addr == htonl(INADDR_ANY)) return "";
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return "";
  std::string device;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    const in_addr a = reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr;
    const bool loopback = (i->ifa_flags & IFF_LOOPBACK) != 0;
    // All of 127.0.0.0/8 is on the loopback device (which lists only 127.0.0.1 itself).
    if (a.s_addr == want.s_addr || (loopback && (ntohl(want.s_addr) >> 24) == 127)) {
      device = i->ifa_name;
      break;
    }
  }
  freeifaddrs(list);
  return device;
}

bool SharedMemoryAllowed() {
  const char* tls = std::getenv("UCX_TLS");
  if (tls == nullptr || *tls == '\0' || *tls == '^') return true;  // default, or an exclusion list
  std::string list = tls;
  for (const char* name : {"sm", "shm", "posix", "sysv", "cma", "xpmem", "knem", "all"}) {
    size_t at = 0;
    while ((at = list.find(name, at)) != std::string::npos) {
      const size_t end = at + std::strlen(name);
      const bool starts = at == 0 || list[at - 1] == ',';
      const bool ends = end == list.size() || list[end] == ',';
      if (starts && ends) return true;
      at = end;
    }
  }
  return false;
}

Result<std::unique_ptr<Endpoint>> Endpoint::Connect(Worker& worker,
                                                    std::span<const std::byte> peer_address,
                                                    std::string name,
                                                    bool shared_memory_possible) {
  std::unique_ptr<Endpoint> ep(new Endpoint(worker, std::move(name)));
  ucp_ep_params_t params;
  std::memset(&params, 0, sizeof(params));
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.address = reinterpret_cast<const ucp_address_t*>(peer_address.data());
  params.err_handler.cb = &Endpoint::OnError;
  params.err_handler.arg = ep.get();
  ucs_status_t st = UCS_ERR_UNREACHABLE;
  if (!shared_memory_possible || !SharedMemoryAllowed()) {
    params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    st = ucp_ep_create(worker.get(), &params, &ep->ep_);
    ep->peer_errors_ = st == UCS_OK;
  }
  if (st == UCS_ERR_UNREACHABLE) {
    // No transport to this peer supports peer error handling, or shared memory may be used
    // (which does not): connect without it; the owner detects a dead peer by other means, and
    // waits have deadlines.
    params.err_mode = UCP_ERR_HANDLING_MODE_NONE;
    st = ucp_ep_create(worker.get(), &params, &ep->ep_);
  }
  if (st != UCS_OK) {
    ep->ep_ = nullptr;
    return UcsToStatus(st, fmt::format("connecting to {}", ep->name_));
  }
  return ep;
}

Endpoint::~Endpoint() {
  if (ep_ == nullptr) return;
  ucp_request_param_t param = NoCallbackParam();
  if (!alive() || !peer_errors_) {
    // A failed peer cannot answer a flush; without peer error handling, a graceful close would
    // wait for a peer that may be gone.
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  }
  ucs_status_ptr_t request = ucp_ep_close_nbx(ep_, &param);
  const Status st = worker_.Wait(request, DeadlineIn(std::chrono::milliseconds(1000)),
                                 fmt::format("closing the endpoint to {}", name_));
  if (!st.ok()) LONGCTX_LOG_DEBUG("{}", st.message());
}

Status Endpoint::FailureStatus() const {
  const ucs_status_t why = failure_.load();
  if (why == UCS_OK) return Status::Ok();
  return Status(StatusCode::kUnavailable,
                fmt::format("{} failed: {}", name_, ucs_status_string(why)));
}

std::function<bool()> Endpoint::AliveFn(const std::function<bool()>& extra) const {
  return [this, extra]() { return alive() && (!extra || extra()); };
}

Result<std::unique_ptr<RemoteKey>> Endpoint::UnpackRkey(std::span<const std::byte> packed,
                                                        uint64_t base, uint64_t bytes) {
  RETURN_IF_ERROR(FailureStatus());
  ucp_rkey_h rkey = nullptr;
  const ucs_status_t st = ucp_ep_rkey_unpack(ep_, packed.data(), &rkey);
  if (st != UCS_OK) return UcsToStatus(st, fmt::format("unpacking the rkey of {}", name_));
  return std::unique_ptr<RemoteKey>(new RemoteKey(rkey, base, bytes));
}

Status Endpoint::CheckRange(const RemoteKey& rkey, const RmaOp& op) const {
  if (op.offset > rkey.bytes() || op.bytes > rkey.bytes() - op.offset) {
    return OutOfRange("{}: [{}, +{}) is outside its {}-byte region", name_, op.offset, op.bytes,
                      rkey.bytes());
  }
  if (op.local == nullptr && op.bytes > 0) return InvalidArgument("{}: null local buffer", name_);
  return Status::Ok();
}

Status Endpoint::PostPuts(const RemoteKey& rkey, std::span<const RmaOp> ops,
                          std::vector<ucs_status_ptr_t>* requests) {
  RETURN_IF_ERROR(FailureStatus());
  for (const RmaOp& op : ops) RETURN_IF_ERROR(CheckRange(rkey, op));
  ucp_request_param_t param = NoCallbackParam();
  for (const RmaOp& op : ops) {
    requests->push_back(
        ucp_put_nbx(ep_, op.local, op.bytes, rkey.base() + op.offset, rkey.get(), &param));
  }
  // The puts are remotely complete only when the flush completes.
  requests->push_back(ucp_ep_flush_nbx(ep_, &param));
  return Status::Ok();
}

Status Endpoint::PutAll(const RemoteKey& rkey, std::span<const RmaOp> ops, Deadline deadline,
                        const std::function<bool()>& alive) {
  std::vector<ucs_status_ptr_t> requests;
  requests.reserve(ops.size() + 1);
  RETURN_IF_ERROR(PostPuts(rkey, ops, &requests));
  return worker_.WaitAll(requests, deadline, fmt::format("put to {}", name_), AliveFn(alive));
}

Status Endpoint::PostGets(const RemoteKey& rkey, std::span<const RmaOp> ops,
                          std::vector<ucs_status_ptr_t>* requests) {
  RETURN_IF_ERROR(FailureStatus());
  for (const RmaOp& op : ops) RETURN_IF_ERROR(CheckRange(rkey, op));
  ucp_request_param_t param = NoCallbackParam();
  for (const RmaOp& op : ops) {
    requests->push_back(
        ucp_get_nbx(ep_, op.local, op.bytes, rkey.base() + op.offset, rkey.get(), &param));
  }
  return Status::Ok();
}

Status Endpoint::GetAll(const RemoteKey& rkey, std::span<const RmaOp> ops, Deadline deadline,
                        const std::function<bool()>& alive) {
  std::vector<ucs_status_ptr_t> requests;
  requests.reserve(ops.size());
  RETURN_IF_ERROR(PostGets(rkey, ops, &requests));
  return worker_.WaitAll(requests, deadline, fmt::format("get from {}", name_), AliveFn(alive));
}

Status Endpoint::SendAm(uint16_t id, std::span<const std::byte> header,
                        std::span<const std::byte> data, bool want_reply, Deadline deadline,
                        const std::function<bool()>& alive) {
  RETURN_IF_ERROR(FailureStatus());
  ucp_request_param_t param = NoCallbackParam();
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = UCP_AM_SEND_FLAG_EAGER | (want_reply ? UCP_AM_SEND_FLAG_REPLY : 0);
  ucs_status_ptr_t request =
      ucp_am_send_nbx(ep_, id, header.data(), header.size(), data.data(), data.size(), &param);
  return worker_.Wait(request, deadline, fmt::format("active message {} to {}", id, name_),
                      AliveFn(alive));
}

}  // namespace longctx::comm::ucx
