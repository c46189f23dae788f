// The one-rank "self" communicator: a process started without a launcher. Sends to itself are
// buffered (the send completes at once) and matched to receives by tag, in posting order;
// collectives are copies. Thread-safe: a receive may be satisfied from another thread.
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <vector>

#include "backend_registry.h"

namespace longctx::comm::internal {
namespace {

// A posted receive; owned jointly by its request and, while unmatched, the mailbox.
struct PostedRecv {
  MutableBuffer buf;
  int tag = 0;
  bool done = false;
  Status status;
};

// Per-communicator matching state: messages sent but not yet received, and receives posted
// but not yet matched, each FIFO per tag. At most one of the two queues of a tag is non-empty.
struct Mailbox {
  std::mutex mu;
  std::condition_variable cv;
  std::map<int, std::deque<std::vector<std::byte>>> unreceived;
  std::map<int, std::deque<std::shared_ptr<PostedRecv>>> unmatched;
  std::atomic<uint64_t> sent{0};      // bytes
  std::atomic<uint64_t> received{0};  // bytes

  // Completes `recv` with `message`; called with mu held.
  void Deliver(PostedRecv& recv, const std::byte* message, size_t bytes) {
    if (bytes > recv.buf.bytes) {
      recv.status = InvalidArgument(
          "self communicator: message of {} bytes with tag {} is longer than the receive buffer "
          "({} bytes)",
          bytes, recv.tag, recv.buf.bytes);
    } else {
      if (bytes > 0) std::memcpy(recv.buf.data, message, bytes);
      received += bytes;
    }
    recv.done = true;
  }
};

class CompletedRequest final : public Request {
 public:
  Result<bool> Test() override { return true; }
  Status Wait(Deadline) override { return Status::Ok(); }
};

class SelfRecvRequest final : public Request {
 public:
  SelfRecvRequest(std::shared_ptr<Mailbox> mailbox, std::shared_ptr<PostedRecv> recv)
      : mailbox_(std::move(mailbox)), recv_(std::move(recv)) {}

  ~SelfRecvRequest() override {  // cancels an unmatched receive
    std::lock_guard<std::mutex> lock(mailbox_->mu);
    if (recv_->done) return;
    auto it = mailbox_->unmatched.find(recv_->tag);
    if (it == mailbox_->unmatched.end()) return;
    std::erase(it->second, recv_);
    if (it->second.empty()) mailbox_->unmatched.erase(it);
  }

  Result<bool> Test() override {
    std::lock_guard<std::mutex> lock(mailbox_->mu);
    if (!recv_->status.ok()) return recv_->status;
    return recv_->done;
  }

  Status Wait(Deadline deadline) override {
    std::unique_lock<std::mutex> lock(mailbox_->mu);
    if (!mailbox_->cv.wait_until(lock, deadline, [&] { return recv_->done; })) {
      return Status(StatusCode::kDeadlineExceeded,
                    fmt::format("self communicator: receive from rank 0 with tag {} ({} bytes) "
                                "not complete by the deadline",
                                recv_->tag, recv_->buf.bytes));
    }
    return recv_->status;
  }

 private:
  std::shared_ptr<Mailbox> mailbox_;
  std::shared_ptr<PostedRecv> recv_;
};

Status CheckPeerAndTag(int peer, int tag) {
  if (peer != 0) return InvalidArgument("self communicator: peer {} is not rank 0", peer);
  if (tag < 0) return InvalidArgument("self communicator: tag {} is negative", tag);
  return Status::Ok();
}

Status CheckBuffer(MemoryKind kind, const void* data, size_t bytes, std::string_view what) {
  if (kind != MemoryKind::kHost) {
    return Unimplemented("self communicator: {} is device memory; this backend moves host memory",
                         what);
  }
  if (data == nullptr && bytes > 0) {
    return InvalidArgument("self communicator: {} of {} bytes has no data pointer", what, bytes);
  }
  return Status::Ok();
}

size_t ElementBytes(ReduceType type) {
  switch (type) {
    case ReduceType::kI64:
      return 8;
    case ReduceType::kF64:
      return 8;
    case ReduceType::kF32:
      return 4;
  }
  return 0;
}

class SelfCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  std::string_view backend() const override { return "self"; }
  bool Supports(MemoryKind kind) const override { return kind == MemoryKind::kHost; }

  Result<RequestPtr> Isend(ConstBuffer buf, int peer, int tag) override {
    RETURN_IF_ERROR(CheckPeerAndTag(peer, tag));
    RETURN_IF_ERROR(CheckBuffer(buf.kind, buf.data, buf.bytes, "send buffer"));
    const auto* bytes = static_cast<const std::byte*>(buf.data);
    std::lock_guard<std::mutex> lock(mailbox_->mu);
    mailbox_->sent += buf.bytes;
    auto waiting = mailbox_->unmatched.find(tag);
    if (waiting != mailbox_->unmatched.end()) {
      std::shared_ptr<PostedRecv> recv = std::move(waiting->second.front());
      waiting->second.pop_front();
      if (waiting->second.empty()) mailbox_->unmatched.erase(waiting);
      mailbox_->Deliver(*recv, bytes, buf.bytes);
      mailbox_->cv.notify_all();
    } else {
      mailbox_->unreceived[tag].emplace_back(bytes, bytes + buf.bytes);
    }
    return RequestPtr(std::make_unique<CompletedRequest>());
  }

  Result<RequestPtr> Irecv(MutableBuffer buf, int peer, int tag) override {
    RETURN_IF_ERROR(CheckPeerAndTag(peer, tag));
    RETURN_IF_ERROR(CheckBuffer(buf.kind, buf.data, buf.bytes, "receive buffer"));
    auto recv = std::make_shared<PostedRecv>();
    recv->buf = buf;
    recv->tag = tag;
    std::lock_guard<std::mutex> lock(mailbox_->mu);
    auto queued = mailbox_->unreceived.find(tag);
    if (queued != mailbox_->unreceived.end()) {
      std::vector<std::byte> message = std::move(queued->second.front());
      queued->second.pop_front();
      if (queued->second.empty()) mailbox_->unreceived.erase(queued);
      mailbox_->Deliver(*recv, message.data(), message.size());
    } else {
      mailbox_->unmatched[tag].push_back(recv);
    }
    return RequestPtr(std::make_unique<SelfRecvRequest>(mailbox_, std::move(recv)));
  }

  Status AllGatherV(ConstBuffer send, MutableBuffer recv, std::span<const size_t> counts,
                    Deadline) override {
    RETURN_IF_ERROR(CheckBuffer(send.kind, send.data, send.bytes, "AllGatherV send buffer"));
    RETURN_IF_ERROR(CheckBuffer(recv.kind, recv.data, recv.bytes, "AllGatherV receive buffer"));
    if (counts.size() != 1 || counts[0] != send.bytes || recv.bytes != send.bytes) {
      return InvalidArgument(
          "self communicator: AllGatherV needs one count equal to the send and receive sizes; "
          "got {} counts, send {} bytes, receive {} bytes",
          counts.size(), send.bytes, recv.bytes);
    }
    if (send.bytes > 0) std::memmove(recv.data, send.data, send.bytes);
    mailbox_->sent += send.bytes;  // received: total minus own = 0
    return Status::Ok();
  }

  Status AllReduce(void* data, size_t count, ReduceType type, ReduceOp, Deadline) override {
    const size_t element = ElementBytes(type);
    if (element == 0) return InvalidArgument("self communicator: unknown ReduceType");
    RETURN_IF_ERROR(CheckBuffer(MemoryKind::kHost, data, count * element, "AllReduce buffer"));
    mailbox_->sent += count * element;
    mailbox_->received += count * element;
    return Status::Ok();  // one rank: the reduction is the input
  }

  Status Barrier(Deadline) override { return Status::Ok(); }

  Result<std::unique_ptr<Communicator>> Split(int color, int) override {
    if (color < 0) return InvalidArgument("self communicator: Split color {} is negative", color);
    return NewSelfCommunicator();
  }

  TrafficCounters traffic() const override { return {mailbox_->sent, mailbox_->received}; }

 private:
  std::shared_ptr<Mailbox> mailbox_ = std::make_shared<Mailbox>();
};

}  // namespace

std::unique_ptr<Communicator> NewSelfCommunicator() { return std::make_unique<SelfCommunicator>(); }

Result<std::shared_ptr<Communicator>> SelfWorld() {
  static const std::shared_ptr<Communicator> world = NewSelfCommunicator();
  return world;
}

}  // namespace longctx::comm::internal
