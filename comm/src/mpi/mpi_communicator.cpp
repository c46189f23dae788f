// The MPI backend of Communicator: host memory through the MPI C API (OpenMPI or MPICH).
//
// - Every MPI call's return code goes through LONGCTX_MPI (mpi_error.h); communicators carry
//   MPI_ERRORS_RETURN, so a failure is a Status, never an abort.
// - Messages above INT_MAX bytes travel as one message of a derived datatype (1 GiB blocks and
//   a tail), so matching and per-tag order are the same for every size.
// - Waits poll MPI_Test with a short backoff until their deadline. Collectives are the
//   non-blocking ones (MPI_Iallgatherv, MPI_Iallreduce, MPI_Ibarrier) on staging buffers, so a
//   collective abandoned at its deadline never touches the caller's memory afterwards.
#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <memory>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "../backend_registry.h"
#include "longctx/core/log.h"
#include "mpi_error.h"

namespace longctx::comm::mpi {
namespace {

constexpr size_t kMaxIntBytes = INT_MAX;
// Block of the derived datatype that describes a message above INT_MAX bytes.
constexpr size_t kLargeBlockBytes = size_t{1} << 30;
// AllReduce runs in pieces of at most this many elements (MPI counts are int).
constexpr size_t kAllReduceChunkElements = size_t{1} << 28;
// How long destroying an incomplete request waits for MPI to finish or cancel it.
constexpr std::chrono::milliseconds kDestroyGrace{1000};

bool MpiFinalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

// Between polls: nothing for the first kBusy, then yield the core (a busy poll that lets other
// ranks on the same cores run) until kSpin into the wait — halo and global exchanges finish within a few milliseconds, and a
// sleep there would add its wake-up latency to every layer (measured with `longctx bench comm`:
// 2.5-3.5x bare MPI with sleeps after 100 polls) — then sleep 50 us doubling to 200 us, never
// past the deadline.
class Backoff {
 public:
  void Pause(Deadline deadline) {
    const Clock::time_point now = Clock::now();
    if (now - start_ < kBusy) return;  // poll again at once: most exchanges end within this
    if (now - start_ < kSpin) {
      sched_yield();
      return;
    }
    const Clock::duration left = deadline - now;
    if (left <= Clock::duration::zero()) return;
    std::this_thread::sleep_for(std::min<Clock::duration>(sleep_, left));
    sleep_ = std::min(sleep_ * 2, kMaxSleep);
  }

 private:
  static constexpr std::chrono::microseconds kBusy{200};
  static constexpr std::chrono::milliseconds kSpin{20};
  static constexpr std::chrono::microseconds kMaxSleep{200};
  Clock::time_point start_ = Clock::now();
  std::chrono::microseconds sleep_{50};
};

// RAII for a committed or intermediate derived datatype.
class Datatype {
 public:
  Datatype() = default;
  Datatype(Datatype&& other) noexcept : type_(std::exchange(other.type_, MPI_DATATYPE_NULL)) {}
  Datatype& operator=(Datatype&& other) noexcept {
    if (this != &other) {
      Reset();
      type_ = std::exchange(other.type_, MPI_DATATYPE_NULL);
    }
    return *this;
  }
  Datatype(const Datatype&) = delete;
  Datatype& operator=(const Datatype&) = delete;
  ~Datatype() { Reset(); }

  MPI_Datatype get() const { return type_; }
  MPI_Datatype* ptr() { return &type_; }
  void Reset() {
    if (type_ != MPI_DATATYPE_NULL && !MpiFinalized()) MPI_Type_free(&type_);
    type_ = MPI_DATATYPE_NULL;
  }

 private:
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
};

// RAII for a communicator this backend created (never MPI_COMM_WORLD itself). Not freed once
// MPI is finalised: MPI_Comm_free is then erroneous and the process is ending anyway.
class CommHandle {
 public:
  CommHandle() = default;
  CommHandle(CommHandle&& other) noexcept : comm_(std::exchange(other.comm_, MPI_COMM_NULL)) {}
  CommHandle& operator=(CommHandle&&) = delete;
  CommHandle(const CommHandle&) = delete;
  CommHandle& operator=(const CommHandle&) = delete;
  ~CommHandle() {
    if (comm_ != MPI_COMM_NULL && !MpiFinalized()) MPI_Comm_free(&comm_);
  }
  MPI_Comm get() const { return comm_; }
  MPI_Comm* ptr() { return &comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

// How `bytes` bytes are described to MPI: `count` MPI_BYTEs up to INT_MAX bytes; above it, one
// element of a derived type. Either way a single message, and a longer receive buffer
// accepts it (the type signature is a sequence of bytes).
struct ByteLayout {
  int count = 0;
  MPI_Datatype type = MPI_BYTE;
  Datatype owned;  // set when `type` is derived
};

Result<ByteLayout> DescribeBytes(size_t bytes) {
  ByteLayout layout;
  if (bytes <= kMaxIntBytes) {
    layout.count = static_cast<int>(bytes);
    return layout;
  }
  const size_t blocks = bytes / kLargeBlockBytes;
  const size_t tail = bytes % kLargeBlockBytes;
  if (blocks > static_cast<size_t>(INT_MAX)) {
    return Unimplemented("a message of {} bytes is beyond the MPI backend's limit", bytes);
  }
  Datatype block;
  Datatype body;
  LONGCTX_MPI_RETURN_IF_ERROR(
      MPI_Type_contiguous(static_cast<int>(kLargeBlockBytes), MPI_BYTE, block.ptr()));
  LONGCTX_MPI_RETURN_IF_ERROR(
      MPI_Type_contiguous(static_cast<int>(blocks), block.get(), body.ptr()));
  if (tail == 0) {
    layout.owned = std::move(body);
  } else {
    Datatype rest;
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Type_contiguous(static_cast<int>(tail), MPI_BYTE, rest.ptr()));
    int lengths[2] = {1, 1};
    MPI_Aint offsets[2] = {0, static_cast<MPI_Aint>(blocks * kLargeBlockBytes)};
    MPI_Datatype types[2] = {body.get(), rest.get()};
    LONGCTX_MPI_RETURN_IF_ERROR(
        MPI_Type_create_struct(2, lengths, offsets, types, layout.owned.ptr()));
  }
  LONGCTX_MPI_RETURN_IF_ERROR(MPI_Type_commit(layout.owned.ptr()));
  layout.count = 1;
  layout.type = layout.owned.get();
  return layout;
}

struct Counters {
  std::atomic<uint64_t> sent{0};      // bytes
  std::atomic<uint64_t> received{0};  // bytes
};

class MpiRequest final : public Request {
 public:
  enum class Kind { kSend, kRecv };

  MpiRequest(Kind kind, int peer, int tag, size_t bytes, ByteLayout layout,
             std::shared_ptr<Counters> counters)
      : kind_(kind),
        peer_(peer),
        tag_(tag),
        bytes_(bytes),
        layout_(std::move(layout)),
        counters_(std::move(counters)) {}
  MpiRequest(const MpiRequest&) = delete;
  MpiRequest& operator=(const MpiRequest&) = delete;

  // An incomplete receive is cancelled; an incomplete send gets kDestroyGrace to finish.
  // Either way the handle is then released to MPI (MPI_Request_free), never leaked.
  ~MpiRequest() override {
    if (request_ == MPI_REQUEST_NULL || MpiFinalized()) return;
    if (kind_ == Kind::kRecv) (void)LONGCTX_MPI(MPI_Cancel(&request_));
    const Deadline grace = Clock::now() + kDestroyGrace;
    Backoff backoff;
    while (true) {
      int flag = 0;
      MPI_Status status;
      if (MPI_Test(&request_, &flag, &status) != MPI_SUCCESS) break;
      if (flag) {
        int cancelled = 0;
        MPI_Test_cancelled(&status, &cancelled);
        if (kind_ == Kind::kRecv && !cancelled) CountReceived(status);
        break;
      }
      if (Clock::now() >= grace) {
        LONGCTX_LOG_WARN("{}: still in flight {} ms after its request was destroyed; handed to MPI",
                         Describe(), kDestroyGrace.count());
        MPI_Request_free(&request_);
        break;
      }
      backoff.Pause(grace);
    }
  }

  int count() const { return layout_.count; }
  MPI_Datatype type() const { return layout_.type; }
  MPI_Request* handle() { return &request_; }

  Result<bool> Test() override {
    if (done_) {
      if (!error_.ok()) return error_;
      return true;
    }
    int flag = 0;
    MPI_Status status;
    Status rc = LONGCTX_MPI(MPI_Test(&request_, &flag, &status));
    if (!rc.ok()) {
      done_ = true;
      error_ = rc.WithContext(Describe());
      return error_;
    }
    if (!flag) return false;
    done_ = true;
    if (kind_ == Kind::kRecv) CountReceived(status);
    return true;
  }

  Status Wait(Deadline deadline) override {
    Backoff backoff;
    while (true) {
      ASSIGN_OR_RETURN(const bool complete, Test());
      if (complete) return Status::Ok();
      if (Clock::now() >= deadline) {
        return Status(StatusCode::kDeadlineExceeded,
                      fmt::format("{}: not complete by the deadline", Describe()));
      }
      backoff.Pause(deadline);
    }
  }

 private:
  std::string Describe() const {
    return fmt::format("MPI {} rank {} with tag {} ({} bytes)",
                       kind_ == Kind::kSend ? "send to" : "receive from", peer_, tag_, bytes_);
  }

  void CountReceived(const MPI_Status& status) {
    MPI_Count elements = 0;  // bytes: every type here is made of MPI_BYTE
    if (MPI_Get_elements_x(&status, layout_.type, &elements) == MPI_SUCCESS && elements > 0) {
      counters_->received += static_cast<uint64_t>(elements);
    }
  }

  const Kind kind_;
  const int peer_;
  const int tag_;
  const size_t bytes_;  // buffer size
  ByteLayout layout_;   // the derived type, if any, lives until the request is gone
  std::shared_ptr<Counters> counters_;
  MPI_Request request_ = MPI_REQUEST_NULL;
  bool done_ = false;
  Status error_;
};

// A non-blocking collective in flight. MPI owns the buffers and the count/offset arrays until
// `request` completes, so they live here rather than in the caller.
struct PendingCollective {
  MPI_Request request = MPI_REQUEST_NULL;
  std::vector<std::byte> send;
  std::vector<std::byte> recv;
  // AllGatherV's receive staging: left uninitialized (MPI overwrites all of it), since zeroing
  // it on every call was measurable in `longctx bench comm`.
  std::unique_ptr<std::byte[]> gathered;
  size_t gathered_bytes = 0;
  std::vector<int> counts;   // bytes per rank
  std::vector<int> offsets;  // bytes
};

Status CheckHostBuffer(MemoryKind kind, const void* data, size_t bytes, std::string_view what) {
  if (kind != MemoryKind::kHost) {
    return Unimplemented("MPI communicator: {} is device memory; this backend moves host memory",
                         what);
  }
  if (data == nullptr && bytes > 0) {
    return InvalidArgument("MPI communicator: {} of {} bytes has no data pointer", what, bytes);
  }
  return Status::Ok();
}

struct ReduceSpec {
  MPI_Datatype type;
  MPI_Op op;
  size_t element_bytes;
};

Result<ReduceSpec> SpecOf(ReduceType type, ReduceOp op) {
  ReduceSpec spec{};
  switch (type) {
    case ReduceType::kI64:
      spec.type = MPI_INT64_T;
      spec.element_bytes = 8;
      break;
    case ReduceType::kF64:
      spec.type = MPI_DOUBLE;
      spec.element_bytes = 8;
      break;
    case ReduceType::kF32:
      spec.type = MPI_FLOAT;
      spec.element_bytes = 4;
      break;
    default:
      return InvalidArgument("AllReduce: unknown ReduceType {}", static_cast<int>(type));
  }
  switch (op) {
    case ReduceOp::kSum:
      spec.op = MPI_SUM;
      break;
    case ReduceOp::kMax:
      spec.op = MPI_MAX;
      break;
    case ReduceOp::kMin:
      spec.op = MPI_MIN;
      break;
    default:
      return InvalidArgument("AllReduce: unknown ReduceOp {}", static_cast<int>(op));
  }
  return spec;
}

class MpiCommunicator final : public Communicator {
 public:
  static Result<std::unique_ptr<MpiCommunicator>> Create(CommHandle comm) {
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Comm_set_errhandler(comm.get(), MPI_ERRORS_RETURN));
    std::unique_ptr<MpiCommunicator> self(new MpiCommunicator(std::move(comm)));
    MPI_Comm c = self->comm_.get();
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Comm_rank(c, &self->rank_));
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Comm_size(c, &self->size_));
    // The node's share of this communicator: right under mpirun, srun and sbatch alike, unlike
    // OMPI_COMM_WORLD_LOCAL_RANK or SLURM_LOCALID.
    CommHandle node;
    LONGCTX_MPI_RETURN_IF_ERROR(
        MPI_Comm_split_type(c, MPI_COMM_TYPE_SHARED, self->rank_, MPI_INFO_NULL, node.ptr()));
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Comm_rank(node.get(), &self->local_rank_));
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Comm_size(node.get(), &self->local_size_));
    int* tag_ub = nullptr;
    int has_tag_ub = 0;
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Comm_get_attr(c, MPI_TAG_UB, &tag_ub, &has_tag_ub));
    if (has_tag_ub && tag_ub != nullptr) self->tag_ub_ = *tag_ub;
    return self;
  }

  ~MpiCommunicator() override {
    // MPI may still write into an abandoned collective's buffers: keep them unless it is done.
    for (std::unique_ptr<PendingCollective>& op : abandoned_) {
      int flag = 0;
      if (MpiFinalized() || MPI_Test(&op->request, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS ||
          !flag) {
        LONGCTX_LOG_WARN(
            "MPI communicator destroyed with a collective in flight; its {} staging "
            "bytes are left to MPI",
            op->send.size() + op->recv.size() + op->gathered_bytes);
        (void)op.release();
      }
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string_view backend() const override { return "mpi"; }
  bool Supports(MemoryKind kind) const override { return kind == MemoryKind::kHost; }

  Result<RequestPtr> Isend(ConstBuffer buf, int peer, int tag) override {
    RETURN_IF_ERROR(CheckPeerAndTag(peer, tag, "Isend"));
    RETURN_IF_ERROR(CheckHostBuffer(buf.kind, buf.data, buf.bytes, "Isend buffer"));
    ASSIGN_OR_RETURN(ByteLayout layout, DescribeBytes(buf.bytes));
    auto request = std::make_unique<MpiRequest>(MpiRequest::Kind::kSend, peer, tag, buf.bytes,
                                                std::move(layout), counters_);
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Isend(buf.data, request->count(), request->type(), peer, tag,
                                          comm_.get(), request->handle()));
    counters_->sent += buf.bytes;
    return RequestPtr(std::move(request));
  }

  Result<RequestPtr> Irecv(MutableBuffer buf, int peer, int tag) override {
    RETURN_IF_ERROR(CheckPeerAndTag(peer, tag, "Irecv"));
    RETURN_IF_ERROR(CheckHostBuffer(buf.kind, buf.data, buf.bytes, "Irecv buffer"));
    ASSIGN_OR_RETURN(ByteLayout layout, DescribeBytes(buf.bytes));
    auto request = std::make_unique<MpiRequest>(MpiRequest::Kind::kRecv, peer, tag, buf.bytes,
                                                std::move(layout), counters_);
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Irecv(buf.data, request->count(), request->type(), peer, tag,
                                          comm_.get(), request->handle()));
    return RequestPtr(std::move(request));  // received bytes are counted on completion
  }

  Status AllGatherV(ConstBuffer send, MutableBuffer recv, std::span<const size_t> counts,
                    Deadline deadline) override {
    RETURN_IF_ERROR(CheckCollectivesUsable("AllGatherV"));
    RETURN_IF_ERROR(CheckHostBuffer(send.kind, send.data, send.bytes, "AllGatherV send buffer"));
    RETURN_IF_ERROR(CheckHostBuffer(recv.kind, recv.data, recv.bytes, "AllGatherV receive buffer"));
    if (counts.size() != static_cast<size_t>(size_)) {
      return InvalidArgument("AllGatherV: {} counts for {} ranks", counts.size(), size_);
    }
    if (counts[rank_] != send.bytes) {
      return InvalidArgument("AllGatherV: counts[{}] = {} bytes but this rank sends {} bytes",
                             rank_, counts[rank_], send.bytes);
    }
    size_t total = 0;
    for (size_t count : counts) total += count;
    if (total != recv.bytes) {
      return InvalidArgument("AllGatherV: counts add up to {} bytes but the receive buffer has {}",
                             total, recv.bytes);
    }
    // Every count and offset is at most the total, so this one check covers MPI's int limits.
    if (total > kMaxIntBytes) {
      return Unimplemented(
          "AllGatherV of {} bytes in all: the MPI backend gathers at most {} "
          "bytes (INT_MAX) per call; gather in several calls",
          total, kMaxIntBytes);
    }
    auto op = std::make_unique<PendingCollective>();
    const auto* send_bytes = static_cast<const std::byte*>(send.data);
    op->send.assign(send_bytes, send_bytes + send.bytes);
    op->gathered = std::make_unique_for_overwrite<std::byte[]>(std::max<size_t>(total, 1));
    op->gathered_bytes = total;
    op->counts.resize(size_);
    op->offsets.resize(size_);
    int offset = 0;
    for (int r = 0; r < size_; ++r) {
      op->counts[r] = static_cast<int>(counts[r]);
      op->offsets[r] = offset;
      offset += op->counts[r];
    }
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Iallgatherv(
        op->send.data(), static_cast<int>(send.bytes), MPI_BYTE, op->gathered.get(), op->counts.data(),
        op->offsets.data(), MPI_BYTE, comm_.get(), &op->request));
    RETURN_IF_ERROR(Complete(op, deadline, "AllGatherV"));
    if (total > 0) std::memcpy(recv.data, op->gathered.get(), total);
    counters_->sent += send.bytes;
    counters_->received += total - send.bytes;
    return Status::Ok();
  }

  Status AllReduce(void* data, size_t count, ReduceType type, ReduceOp op,
                   Deadline deadline) override {
    RETURN_IF_ERROR(CheckCollectivesUsable("AllReduce"));
    ASSIGN_OR_RETURN(const ReduceSpec spec, SpecOf(type, op));
    RETURN_IF_ERROR(
        CheckHostBuffer(MemoryKind::kHost, data, count * spec.element_bytes, "AllReduce buffer"));
    auto* bytes = static_cast<std::byte*>(data);
    auto pending = std::make_unique<PendingCollective>();
    // count == 0 on every rank (the contract: the same count everywhere) runs no collective.
    for (size_t first = 0; first < count; first += kAllReduceChunkElements) {
      const size_t n = std::min(kAllReduceChunkElements, count - first);
      std::byte* chunk = bytes + first * spec.element_bytes;
      pending->recv.assign(chunk, chunk + n * spec.element_bytes);
      LONGCTX_MPI_RETURN_IF_ERROR(MPI_Iallreduce(MPI_IN_PLACE, pending->recv.data(),
                                                 static_cast<int>(n), spec.type, spec.op,
                                                 comm_.get(), &pending->request));
      RETURN_IF_ERROR(Complete(pending, deadline, "AllReduce"));
      std::memcpy(chunk, pending->recv.data(), n * spec.element_bytes);
    }
    counters_->sent += count * spec.element_bytes;
    counters_->received += count * spec.element_bytes;
    return Status::Ok();
  }

  Status Barrier(Deadline deadline) override {
    RETURN_IF_ERROR(CheckCollectivesUsable("Barrier"));
    auto op = std::make_unique<PendingCollective>();
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Ibarrier(comm_.get(), &op->request));
    return Complete(op, deadline, "Barrier");
  }

  Result<std::unique_ptr<Communicator>> Split(int color, int key) override {
    if (color < 0) return InvalidArgument("Split: color {} is negative", color);
    // MPI_Comm_split blocks with no deadline; once every rank has passed this barrier, it
    // cannot wait for a rank that never comes.
    RETURN_IF_ERROR(Barrier(DeadlineIn(DefaultTimeout())).WithContext("Split"));
    CommHandle sub;
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Comm_split(comm_.get(), color, key, sub.ptr()));
    ASSIGN_OR_RETURN(std::unique_ptr<MpiCommunicator> split, Create(std::move(sub)));
    return std::unique_ptr<Communicator>(std::move(split));
  }

  TrafficCounters traffic() const override { return {counters_->sent, counters_->received}; }

 private:
  explicit MpiCommunicator(CommHandle comm) : comm_(std::move(comm)) {}

  Status CheckPeerAndTag(int peer, int tag, std::string_view what) const {
    if (peer < 0 || peer >= size_) {
      return InvalidArgument("{}: peer {} is not a rank of this communicator (size {})", what, peer,
                             size_);
    }
    if (tag < 0 || tag > tag_ub_) {
      return InvalidArgument("{}: tag {} is outside [0, {}]", what, tag, tag_ub_);
    }
    return Status::Ok();
  }

  Status CheckCollectivesUsable(std::string_view what) const {
    if (out_of_step_.empty()) return Status::Ok();
    return FailedPrecondition(
        "{}: refused, the ranks of this communicator are out of step since "
        "{}",
        what, out_of_step_);
  }

  // Polls a posted collective to completion or the deadline. On failure the communicator is
  // marked out of step and `op` (whose buffers MPI may still use) is kept in abandoned_.
  Status Complete(std::unique_ptr<PendingCollective>& op, Deadline deadline,
                  std::string_view what) {
    Backoff backoff;
    while (true) {
      int flag = 0;
      Status rc = LONGCTX_MPI(MPI_Test(&op->request, &flag, MPI_STATUS_IGNORE));
      if (!rc.ok()) {
        out_of_step_ = fmt::format("{} failed", what);
        if (op->request != MPI_REQUEST_NULL) abandoned_.push_back(std::move(op));
        return rc.WithContext(fmt::format("{} on rank {} of {}", what, rank_, size_));
      }
      if (flag) return Status::Ok();
      if (Clock::now() >= deadline) {
        out_of_step_ = fmt::format("{} missed its deadline", what);
        abandoned_.push_back(std::move(op));
        return Status(StatusCode::kDeadlineExceeded,
                      fmt::format("{} on rank {} of {}: not complete by the deadline (another "
                                  "rank has not joined); collectives on this communicator are "
                                  "refused from now on",
                                  what, rank_, size_));
      }
      backoff.Pause(deadline);
    }
  }

  CommHandle comm_;
  int rank_ = 0;
  int size_ = 0;
  int local_rank_ = 0;
  int local_size_ = 0;
  int tag_ub_ = 32767;  // the least MPI guarantees; replaced by MPI_TAG_UB
  std::shared_ptr<Counters> counters_ = std::make_shared<Counters>();
  std::string out_of_step_;  // why collectives are refused; empty while they run
  std::vector<std::unique_ptr<PendingCollective>> abandoned_;
};

// The process's MPI state. Never destroyed (static destruction order would race the
// finalisation registered with atexit); FinalizeAtExit drops the world and finalises MPI.
struct MpiRuntime {
  std::shared_ptr<Communicator> world;
};

MpiRuntime& Runtime() {
  static MpiRuntime* runtime = new MpiRuntime;
  return *runtime;
}

void FinalizeAtExit() {
  Runtime().world.reset();  // frees the world's MPI_Comm while MPI is up (if nobody holds it)
  if (!MpiFinalized()) MPI_Finalize();
}

}  // namespace
}  // namespace longctx::comm::mpi

namespace longctx::comm::internal {

Result<std::shared_ptr<Communicator>> MpiWorld() {
  mpi::MpiRuntime& runtime = mpi::Runtime();
  if (runtime.world != nullptr) return runtime.world;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (mpi::MpiFinalized()) {
    return FailedPrecondition("MPI is already finalised; no MPI communicator can be created");
  }
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      return Status(StatusCode::kUnavailable, "MPI_Init_thread(MPI_THREAD_FUNNELED) failed");
    }
    std::atexit(&mpi::FinalizeAtExit);
    // Errors not tied to one communicator are raised on these; we own MPI, so set them too.
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN));
  } else {
    LONGCTX_MPI_RETURN_IF_ERROR(MPI_Query_thread(&provided));
  }
  if (provided < MPI_THREAD_FUNNELED) {
    LONGCTX_LOG_WARN(
        "MPI provides thread level {} (< MPI_THREAD_FUNNELED); use the "
        "communicator from the main thread only",
        provided);
  }
  // A duplicate, so longctx's tags never meet another library's on MPI_COMM_WORLD.
  mpi::CommHandle world;
  LONGCTX_MPI_RETURN_IF_ERROR(MPI_Comm_dup(MPI_COMM_WORLD, world.ptr()));
  ASSIGN_OR_RETURN(std::unique_ptr<mpi::MpiCommunicator> communicator,
                   mpi::MpiCommunicator::Create(std::move(world)));
  runtime.world = std::move(communicator);
  return runtime.world;
}

}  // namespace longctx::comm::internal
