// The UCX transport (DESIGN.md §3, §4): RAII wrappers over UCP for one-sided access to host
// memory pools in other processes, and active messages for their control. What the KV store
// (cache/store.h) is built on; nothing here knows about KV blocks.
//
// Contracts:
//   - Every handle is owned (Context, Worker, Endpoint, MemoryRegion, RemoteKey) and released in
//     the right order by its destructor; a handle keeps what it depends on alive (shared_ptr).
//   - Every wait takes a deadline: kDeadlineExceeded when it passes, kUnavailable when the peer
//     failed. Nothing here blocks without one.
//   - Over tcp and shared memory UCX emulates RMA (and AM replies) in software: the *target*
//     worker must keep being progressed (a thread calling Worker::Progress) or a put to it never
//     completes. A waiting initiator progresses its own worker.
//   - Threads: a Worker is used by one thread at a time (UCS_THREAD_MODE_SERIALIZED); callers
//     serialise (the store client holds a mutex, the pool server owns a progress thread).
//   - Peer failure: endpoints to another host, or on this host when UCX_TLS rules shared memory
//     out, use UCP_ERR_HANDLING_MODE_PEER (UCX's error callback marks them failed). Shared-memory
//     transports do not support it (and asking for it makes UCX route around them, over tcp), so
//     same-host endpoints that may use shared memory are created without it: their owner watches
//     the peer another way (the store's bootstrap socket), and every wait has a deadline.
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/comm/communicator.h"
#include "longctx/core/status.h"

namespace longctx::comm::ucx {

// The one place UCX status codes become Status: "<what>: <ucs_status_string>". Timeouts map to
// kDeadlineExceeded, unreachable/reset/failed peers to kUnavailable, no memory/resources to
// kResourceExhausted, anything else to kInternal.
Status UcsToStatus(ucs_status_t status, std::string_view what);

// Identifies this host (boot id and hostname), to tell peers on the same host from others.
std::string HostIdentity();
// False when UCX_TLS is set and names no shared-memory transport (e.g. UCX_TLS=tcp).
bool SharedMemoryAllowed();
// The network device that carries IPv4 address `host` ("lo" for 127.0.0.0/8, "eth1" for eth1's
// address), for confining UCX to it; "" for a wildcard (0.0.0.0), a name that does not resolve,
// or an address on no local device.
std::string NetDeviceOf(const std::string& host);

// A UCP context: features RMA + AM + WAKEUP. Transports come from UCX's own environment
// (UCX_TLS, UCX_NET_DEVICES).
class Context {
 public:
  // `net_devices` non-empty (e.g. "lo"): UCX opens its interfaces — and their listening TCP
  // sockets — on these network devices only (ucp_config_modify NET_DEVICES), unless the user set
  // UCX_NET_DEVICES, which wins. Shared-memory devices are not affected. `tls` non-empty (e.g.
  // "^tcp": every transport but tcp): the transports, unless the user set UCX_TLS, which wins.
  static Result<std::shared_ptr<Context>> Create(const std::string& net_devices = "",
                                                 const std::string& tls = "");
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ucp_context_h get() const { return context_; }

 private:
  explicit Context(ucp_context_h c) : context_(c) {}
  ucp_context_h context_;
};

class Worker;
class Endpoint;

// A host memory region registered once (registration is slow) for remote access. Either
// allocated by UCX (so it may live in shared memory that peers map directly) or registered over
// caller-owned memory. Invariant: base()..base()+bytes() is valid while the region lives.
class MemoryRegion {
 public:
  // Allocates and registers `bytes` (> 0) of host memory.
  static Result<std::unique_ptr<MemoryRegion>> Allocate(std::shared_ptr<Context> ctx,
                                                        size_t bytes);
  // Registers caller-owned memory (which must outlive the region).
  static Result<std::unique_ptr<MemoryRegion>> Register(std::shared_ptr<Context> ctx, void* data,
                                                        size_t bytes);
  ~MemoryRegion();
  MemoryRegion(const MemoryRegion&) = delete;
  MemoryRegion& operator=(const MemoryRegion&) = delete;

  std::byte* base() const { return base_; }
  size_t bytes() const { return bytes_; }
  ucp_mem_h memh() const { return memh_; }
  // The remote key a peer unpacks to reach this region (tens of bytes).
  Result<std::vector<std::byte>> PackRkey() const;

 private:
  MemoryRegion(std::shared_ptr<Context> ctx, ucp_mem_h memh, std::byte* base, size_t bytes)
      : ctx_(std::move(ctx)), memh_(memh), base_(base), bytes_(bytes) {}
  std::shared_ptr<Context> ctx_;
  ucp_mem_h memh_;
  std::byte* base_;
  size_t bytes_;
};

// A received active message. `header` and `data` are valid only during the handler call.
struct AmMessage {
  std::span<const std::byte> header;
  std::span<const std::byte> data;
  ucp_ep_h reply_ep = nullptr;  // set when the sender asked for a reply path
};
// Returns nothing: the handler copies what it keeps. Runs inside Worker::Progress.
using AmHandler = std::function<void(const AmMessage&)>;

// One UCP worker: the progress engine, its address, and active-message handlers.
class Worker {
 public:
  static Result<std::unique_ptr<Worker>> Create(std::shared_ptr<Context> ctx);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  ucp_worker_h get() const { return worker_; }
  const std::shared_ptr<Context>& context() const { return ctx_; }
  // This worker's address, to hand to peers out of band (~80 bytes over tcp).
  const std::vector<std::byte>& address() const { return address_; }

  // Drives communication; returns the number of events processed (0: nothing happened).
  unsigned Progress() { return ucp_worker_progress(worker_); }
  // Blocks up to `timeout_ms` until something may need progress (UCX's wakeup fd), unless
  // something is already pending. Returns at once when there is work; never longer than asked.
  void WaitForEvents(int timeout_ms);
  // For an owner that polls more fds with the worker's: Arm() returns true when the worker is
  // armed (sleep on event_fd() until it is readable), false when events are pending (progress).
  bool Arm() { return ucp_worker_arm(worker_) == UCS_OK; }
  int event_fd() const { return efd_; }

  // Registers `handler` for active messages with this id (replaces an earlier one).
  Status SetAmHandler(uint16_t id, AmHandler handler);

  // Waits for one request returned by a *_nbx call (nullptr or an error pointer included):
  // progresses this worker until it completes, `alive()` turns false (kUnavailable), or the
  // deadline passes (kDeadlineExceeded; the request is cancelled). Always releases the request.
  Status Wait(ucs_status_ptr_t request, Deadline deadline, std::string_view what,
              const std::function<bool()>& alive = nullptr);
  // The same for a batch in flight together; returns the first error, releases every request.
  Status WaitAll(std::span<ucs_status_ptr_t> requests, Deadline deadline, std::string_view what,
                 const std::function<bool()>& alive = nullptr);

 private:
  Worker(std::shared_ptr<Context> ctx, ucp_worker_h w) : ctx_(std::move(ctx)), worker_(w) {}
  static ucs_status_t AmTrampoline(void* arg, const void* header, size_t header_length,
                                   void* data, size_t length, const ucp_am_recv_param_t* param);
  std::shared_ptr<Context> ctx_;
  ucp_worker_h worker_;
  int efd_ = -1;  // UCX's wakeup fd (owned by the worker)
  std::vector<std::byte> address_;
  std::vector<std::unique_ptr<AmHandler>> handlers_;  // index = AM id; stable addresses
};

// A remote memory region as seen through one endpoint: the peer's base address and its
// unpacked rkey. Released before the endpoint (it holds a pointer to it).
class RemoteKey {
 public:
  ~RemoteKey();
  RemoteKey(const RemoteKey&) = delete;
  RemoteKey& operator=(const RemoteKey&) = delete;
  ucp_rkey_h get() const { return rkey_; }
  uint64_t base() const { return base_; }
  uint64_t bytes() const { return bytes_; }

 private:
  friend class Endpoint;
  RemoteKey(ucp_rkey_h r, uint64_t base, uint64_t bytes) : rkey_(r), base_(base), bytes_(bytes) {}
  ucp_rkey_h rkey_;
  uint64_t base_;
  uint64_t bytes_;
};

// One one-sided transfer of a batch: `bytes` between local memory and remote offset `offset`.
struct RmaOp {
  void* local = nullptr;  // source of a put, destination of a get
  size_t bytes = 0;
  uint64_t offset = 0;    // from the remote region's base
};

// A connection to one peer worker, created from the peer's worker address. The error callback
// marks it failed (peer died, connection reset); every later call then returns kUnavailable.
class Endpoint {
 public:
  // `name` is for messages ("store 127.0.0.1:7000"). `shared_memory_possible`: the peer runs on
  // this host (HostIdentity() matches) and its UCX_TLS allows shared memory too; it decides the
  // error-handling mode (see the top of this file), which both ends of a connection must agree
  // on — UCX refuses an "asymmetric endpoint configuration".
  static Result<std::unique_ptr<Endpoint>> Connect(Worker& worker,
                                                   std::span<const std::byte> peer_address,
                                                   std::string name, bool shared_memory_possible);
  ~Endpoint();  // flushes nothing: closes (force-closes a failed endpoint) with a short deadline
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  ucp_ep_h get() const { return ep_; }
  const std::string& name() const { return name_; }
  bool peer_error_handling() const { return peer_errors_; }
  // False once the error callback fired or MarkFailed was called.
  bool alive() const { return failure_.load() == UCS_OK; }
  // For an owner that detects the failure another way (e.g. a closed bootstrap socket).
  void MarkFailed(ucs_status_t why) { failure_.store(why); }
  Status FailureStatus() const;

  Result<std::unique_ptr<RemoteKey>> UnpackRkey(std::span<const std::byte> packed, uint64_t base,
                                                uint64_t bytes);

  // Posts every op (all in flight), then waits for all. A put is complete at the target only
  // after Flush; PutAll flushes before returning, so on OK the data is in remote memory.
  Status PutAll(const RemoteKey& rkey, std::span<const RmaOp> ops, Deadline deadline,
                const std::function<bool()>& alive = nullptr);
  Status GetAll(const RemoteKey& rkey, std::span<const RmaOp> ops, Deadline deadline,
                const std::function<bool()>& alive = nullptr);
  // Posts the puts (plus a flush) without waiting: the caller waits for the returned requests
  // with Worker::WaitAll (many endpoints in flight together).
  Status PostPuts(const RemoteKey& rkey, std::span<const RmaOp> ops,
                  std::vector<ucs_status_ptr_t>* requests);
  // The same for gets (complete when the requests complete; no flush needed).
  Status PostGets(const RemoteKey& rkey, std::span<const RmaOp> ops,
                  std::vector<ucs_status_ptr_t>* requests);
  // Sends an active message (header + data, copied by UCX before completion) and waits for
  // local completion. `want_reply` gives the receiver a reply endpoint.
  Status SendAm(uint16_t id, std::span<const std::byte> header, std::span<const std::byte> data,
                bool want_reply, Deadline deadline, const std::function<bool()>& alive = nullptr);

 private:
  Endpoint(Worker& w, std::string name) : worker_(w), name_(std::move(name)) {}
  static void OnError(void* arg, ucp_ep_h ep, ucs_status_t status);
  Status CheckRange(const RemoteKey& rkey, const RmaOp& op) const;
  std::function<bool()> AliveFn(const std::function<bool()>& extra) const;
  Worker& worker_;
  std::string name_;
  ucp_ep_h ep_ = nullptr;
  bool peer_errors_ = false;
  std::atomic<ucs_status_t> failure_{UCS_OK};
};

}  // namespace longctx::comm::ucx
