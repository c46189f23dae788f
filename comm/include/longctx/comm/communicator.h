// Communicator: the ranks of one job and the messages between them (DESIGN.md §2, §4).
// One interface, backends behind it: MPI (CPU builds; also carries host buffers of GPU
// builds) and, later, NCCL for device buffers. Buffers say which memory they live in, so a
// backend can refuse what it cannot move instead of reading a device pointer on the host.
//
// Contracts: every call returns a Status; nothing aborts on a peer's failure. Non-blocking
// operations return a Request; Wait() takes a deadline and returns kDeadlineExceeded when it
// passes (the request stays valid and may be waited again). Collectives are called by every
// rank of the communicator in the same order. Byte counters are per communicator.
// A collective that misses its deadline leaves the ranks out of step: the communicator then
// refuses further collectives (kFailedPrecondition); point-to-point still works.
// Threads: the MPI backend runs under MPI_THREAD_FUNNELED, so a communicator, its requests
// and the communicators split from it are used from the thread that created the world.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::comm {

enum class MemoryKind : uint8_t { kHost, kDevice };

struct ConstBuffer {
  const void* data = nullptr;
  size_t bytes = 0;
  MemoryKind kind = MemoryKind::kHost;
};
struct MutableBuffer {
  void* data = nullptr;
  size_t bytes = 0;
  MemoryKind kind = MemoryKind::kHost;
  // So that a writable buffer can be sent: Isend(HostBuffer(vec.data(), n), ...).
  operator ConstBuffer() const { return {data, bytes, kind}; }  // NOLINT: implicit by design
};
inline ConstBuffer HostBuffer(const void* data, size_t bytes) {
  return {data, bytes, MemoryKind::kHost};
}
inline MutableBuffer HostBuffer(void* data, size_t bytes) {
  return {data, bytes, MemoryKind::kHost};
}

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
inline Deadline DeadlineIn(std::chrono::milliseconds ms) { return Clock::now() + ms; }
// Default for waits inside longctx: long enough for a million-token layer on a slow node,
// short enough that a lost peer ends the job. Overridable with LONGCTX_COMM_TIMEOUT_S.
std::chrono::milliseconds DefaultTimeout();

// A pending send or receive. Destroying an incomplete request cancels it (a receive) or waits
// for it briefly (a send, which MPI cannot cancel safely) — never leaks the handle.
class Request {
 public:
  virtual ~Request() = default;
  // true when complete; an error when the transfer failed.
  virtual Result<bool> Test() = 0;
  // Polls until complete or the deadline passes (kDeadlineExceeded).
  virtual Status Wait(Deadline deadline) = 0;
};
using RequestPtr = std::unique_ptr<Request>;

// Waits for all; returns the first error (the others are still waited for or cancelled).
Status WaitAll(std::span<RequestPtr> requests, Deadline deadline);

enum class ReduceOp : uint8_t { kSum, kMax, kMin };
enum class ReduceType : uint8_t { kI64, kF64, kF32 };

struct TrafficCounters {  // bytes this rank handed to / got from the backend
  uint64_t sent = 0;
  uint64_t received = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Rank among the processes on this node (MPI_Comm_split_type SHARED), and their count.
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;
  virtual std::string_view backend() const = 0;  // "mpi" or "self"
  virtual bool Supports(MemoryKind kind) const = 0;

  // Point to point. tag >= 0. Messages between a pair with the same tag arrive in order.
  virtual Result<RequestPtr> Isend(ConstBuffer buf, int peer, int tag) = 0;
  virtual Result<RequestPtr> Irecv(MutableBuffer buf, int peer, int tag) = 0;

  // recv = concatenation, in rank order, of every rank's `send`; counts[r] = bytes from rank r
  // (the same array on every rank; counts[rank()] == send.bytes; recv.bytes == sum).
  virtual Status AllGatherV(ConstBuffer send, MutableBuffer recv, std::span<const size_t> counts,
                            Deadline deadline) = 0;
  // In-place element-wise reduction over all ranks of `count` elements of `type`.
  virtual Status AllReduce(void* data, size_t count, ReduceType type, ReduceOp op,
                           Deadline deadline) = 0;
  virtual Status Barrier(Deadline deadline) = 0;
  // Ranks with the same color (>= 0) form a new communicator, ordered by (key, old rank).
  // Collective; waits at most DefaultTimeout() for the other ranks to arrive.
  virtual Result<std::unique_ptr<Communicator>> Split(int color, int key) = 0;

  virtual TrafficCounters traffic() const = 0;
};

// The communicator of this process, from the launcher's environment: MPI under mpirun or
// srun --mpi=pmix (detected from OMPI_COMM_WORLD_SIZE / PMIX_RANK / PMI_RANK); a one-rank
// "self" communicator when started without a launcher (MPI is then not initialised at all).
// Initialises MPI on first use (MPI_THREAD_FUNNELED) and finalises it at exit.
// prefer: "auto" (as above), "mpi" (error if MPI is unavailable), "self".
Result<std::shared_ptr<Communicator>> WorldCommunicator(std::string_view prefer = "auto");

// True when the environment shows a parallel launcher (see WorldCommunicator).
bool LaunchedByMpi();

// Makes every rank agree on a step's outcome (a collective: every rank calls it). Returns OK when
// every rank's `local` is OK. Otherwise the lowest failing rank gets its own Status back, prefixed
// "rank R: " when there are several ranks, to report; every other rank gets an error with an
// empty message (to exit non-zero without repeating the line).
Status AgreeOnStatus(Communicator& comm, const Status& local);

}  // namespace longctx::comm
