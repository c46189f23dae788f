// The Communicator contract on real MPI ranks: tests/mpi/run_mpi_test.sh starts this binary
// with mpirun -np N and every test runs on every rank. `--die-rank R` is the dead-peer check
// instead (tests/mpi/dead_rank.sh): rank R kills itself while the others wait on it.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "longctx/comm/communicator.h"
#include "longctx/test/mpi_test.h"
#include "longctx/test/status_matchers.h"

namespace longctx::comm {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;


// Every wait in these tests ends by this (long enough for 64 MiB on 4 oversubscribed ranks).
Deadline Soon() { return DeadlineIn(seconds(60)); }

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Content of message `seq` from `sender`, so a misrouted or reordered message is visible.
std::vector<uint8_t> Pattern(int sender, int seq, size_t bytes) {
  std::vector<uint8_t> out(bytes);
  for (size_t i = 0; i < bytes; ++i) {
    out[i] = static_cast<uint8_t>(i * 131 + (i >> 9) + sender * 17 + seq * 29 + 1);
  }
  return out;
}

// Index of the first differing byte, or -1 (gtest would print a 64 MiB vector).
int64_t FirstMismatch(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want) {
  if (got.size() != want.size()) return static_cast<int64_t>(std::min(got.size(), want.size()));
  auto [a, b] = std::mismatch(got.begin(), got.end(), want.begin());
  return a == got.end() ? -1 : static_cast<int64_t>(a - got.begin());
}

class MpiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(test::WorldPtr(), nullptr);
    ASSERT_EQ(test::World().backend(), "mpi");
    // Every test starts with the ranks in step.
    ASSERT_OK(world().Barrier(Soon()));
  }
  Communicator& world() { return test::World(); }
  int rank() { return test::World().rank(); }
  int size() { return test::World().size(); }
  int next() { return (rank() + 1) % size(); }
  int prev() { return (rank() + size() - 1) % size(); }
};

TEST_F(MpiTest, RankSizeAndLocalRanks) {
  EXPECT_TRUE(LaunchedByMpi());
  ASSERT_GE(rank(), 0);
  ASSERT_LT(rank(), size());
  if (const char* env = std::getenv("OMPI_COMM_WORLD_SIZE")) {
    EXPECT_EQ(size(), std::atoi(env));
  }
  EXPECT_TRUE(world().Supports(MemoryKind::kHost));
  EXPECT_FALSE(world().Supports(MemoryKind::kDevice));

  // All ranks agree on the size.
  int64_t sizes[2] = {size(), size()};
  ASSERT_OK(world().AllReduce(&sizes[0], 1, ReduceType::kI64, ReduceOp::kMax, Soon()));
  ASSERT_OK(world().AllReduce(&sizes[1], 1, ReduceType::kI64, ReduceOp::kMin, Soon()));
  EXPECT_EQ(sizes[0], size());
  EXPECT_EQ(sizes[1], size());

  // Local ranks: per host, 0..local_size-1, distinct, in world-rank order.
  ASSERT_GE(world().local_size(), 1);
  ASSERT_LE(world().local_size(), size());
  ASSERT_GE(world().local_rank(), 0);
  ASSERT_LT(world().local_rank(), world().local_size());
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof(host) - 1), 0);
  const int64_t mine[3] = {static_cast<int64_t>(std::hash<std::string>{}(host) >> 1),
                           world().local_rank(), world().local_size()};
  std::vector<int64_t> all(3 * size());
  std::vector<size_t> counts(size(), sizeof(mine));
  ASSERT_OK(world().AllGatherV(HostBuffer(mine, sizeof(mine)),
                               HostBuffer(all.data(), all.size() * sizeof(int64_t)), counts,
                               Soon()));
  std::map<int64_t, std::vector<int>> ranks_by_host;  // host -> world ranks, ascending
  for (int r = 0; r < size(); ++r) ranks_by_host[all[3 * r]].push_back(r);
  for (const auto& [hash, ranks] : ranks_by_host) {
    for (size_t i = 0; i < ranks.size(); ++i) {
      EXPECT_EQ(all[3 * ranks[i] + 1], static_cast<int64_t>(i)) << "local rank of " << ranks[i];
      EXPECT_EQ(all[3 * ranks[i] + 2], static_cast<int64_t>(ranks.size()));
    }
  }
}

TEST_F(MpiTest, WorldIsOneObject) {
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<Communicator> again, WorldCommunicator("mpi"));
  EXPECT_EQ(again.get(), &test::World());
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<Communicator> automatic, WorldCommunicator("auto"));
  EXPECT_EQ(automatic.get(), &test::World());  // launched by mpirun, so "auto" is MPI
  const Result<std::shared_ptr<Communicator>> bogus = WorldCommunicator("carrier-pigeon");
  ASSERT_FALSE(bogus.ok());
  EXPECT_EQ(bogus.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(MpiTest, RingOfSeveralSizes) {
  const std::vector<size_t> sizes = {0, 1, 7, 4096, 65537, size_t{1} << 20, size_t{64} << 20};
  const TrafficCounters before = world().traffic();
  uint64_t moved = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << sizes[i] << " bytes");
    const int tag = 100 + static_cast<int>(i);
    const std::vector<uint8_t> out = Pattern(rank(), tag, sizes[i]);
    std::vector<uint8_t> in(sizes[i], 0xEE);
    std::vector<RequestPtr> requests(2);
    ASSERT_OK_AND_ASSIGN(requests[0], world().Irecv(HostBuffer(in.data(), in.size()), prev(), tag));
    ASSERT_OK_AND_ASSIGN(requests[1],
                         world().Isend(HostBuffer(out.data(), out.size()), next(), tag));
    const auto start = Clock::now();
    ASSERT_OK(WaitAll(requests, Soon()));
    if (sizes[i] >= (size_t{64} << 20) && rank() == 0) {
      std::printf("[rank 0] ring of %zu bytes on %d ranks: %.3f s\n", sizes[i], size(),
                  SecondsSince(start));
    }
    EXPECT_EQ(FirstMismatch(in, Pattern(prev(), tag, sizes[i])), -1);
    ASSERT_OK_AND_ASSIGN(const bool done, requests[0]->Test());  // complete stays complete
    EXPECT_TRUE(done);
    moved += sizes[i];
  }
  const TrafficCounters after = world().traffic();
  EXPECT_EQ(after.sent - before.sent, moved);
  EXPECT_EQ(after.received - before.received, moved);
}

TEST_F(MpiTest, ReceiveBufferLongerThanMessage) {
  const std::vector<uint8_t> out = Pattern(rank(), 1, 100);
  std::vector<uint8_t> in(250, 0xEE);
  const TrafficCounters before = world().traffic();
  ASSERT_OK_AND_ASSIGN(RequestPtr recv, world().Irecv(HostBuffer(in.data(), in.size()), prev(), 9));
  ASSERT_OK_AND_ASSIGN(RequestPtr send,
                       world().Isend(HostBuffer(out.data(), out.size()), next(), 9));
  ASSERT_OK(send->Wait(Soon()));
  ASSERT_OK(recv->Wait(Soon()));
  const std::vector<uint8_t> head(in.begin(), in.begin() + 100);
  EXPECT_EQ(FirstMismatch(head, Pattern(prev(), 1, 100)), -1);
  EXPECT_EQ(in[100], 0xEE);
  EXPECT_EQ(world().traffic().received - before.received, 100u);  // bytes that arrived
}

TEST_F(MpiTest, SameTagArrivesInOrder) {
  // Alternating small (eager) and large (rendezvous) messages must not overtake each other.
  constexpr int kMessages = 24;
  constexpr size_t kLarge = 300 * 1024;
  auto bytes_of = [](int seq) { return seq % 2 ? size_t{16} : kLarge; };
  std::vector<std::vector<uint8_t>> out(kMessages);
  std::vector<std::vector<uint8_t>> in(kMessages, std::vector<uint8_t>(kLarge, 0));
  std::vector<RequestPtr> requests;
  for (int seq = 0; seq < kMessages; ++seq) {  // all sends first: they queue at the receiver
    out[seq] = Pattern(rank(), seq, bytes_of(seq));
    ASSERT_OK_AND_ASSIGN(RequestPtr send,
                         world().Isend(HostBuffer(out[seq].data(), out[seq].size()), next(), 7));
    requests.push_back(std::move(send));
  }
  for (int seq = 0; seq < kMessages; ++seq) {
    ASSERT_OK_AND_ASSIGN(RequestPtr recv,
                         world().Irecv(HostBuffer(in[seq].data(), in[seq].size()), prev(), 7));
    requests.push_back(std::move(recv));
  }
  ASSERT_OK(WaitAll(requests, Soon()));
  for (int seq = 0; seq < kMessages; ++seq) {
    const std::vector<uint8_t> head(in[seq].begin(), in[seq].begin() + bytes_of(seq));
    EXPECT_EQ(FirstMismatch(head, Pattern(prev(), seq, bytes_of(seq))), -1) << "message " << seq;
  }
}

// Gathers counts[r] bytes of Pattern(r, seq) from every rank and checks result and counters.
void CheckAllGatherV(Communicator& comm, const std::vector<size_t>& counts, int seq) {
  SCOPED_TRACE(::testing::Message() << "AllGatherV round " << seq);
  const std::vector<uint8_t> mine = Pattern(comm.rank(), seq, counts[comm.rank()]);
  const size_t total = std::accumulate(counts.begin(), counts.end(), size_t{0});
  std::vector<uint8_t> all(total, 0xEE);
  const TrafficCounters before = comm.traffic();
  ASSERT_OK(comm.AllGatherV(HostBuffer(mine.data(), mine.size()),
                            HostBuffer(all.data(), all.size()), counts, Soon()));
  size_t offset = 0;
  for (int r = 0; r < comm.size(); ++r) {
    const std::vector<uint8_t> part(all.begin() + offset, all.begin() + offset + counts[r]);
    EXPECT_EQ(FirstMismatch(part, Pattern(r, seq, counts[r])), -1) << "from rank " << r;
    offset += counts[r];
  }
  const TrafficCounters after = comm.traffic();
  EXPECT_EQ(after.sent - before.sent, counts[comm.rank()]);
  EXPECT_EQ(after.received - before.received, total - counts[comm.rank()]);
}

TEST_F(MpiTest, AllGatherVWithUnequalAndZeroCounts) {
  std::vector<size_t> counts(size());
  for (int r = 0; r < size(); ++r) counts[r] = r % 2 == 0 ? 0 : 1000 * r + 13;  // rank 0: none
  CheckAllGatherV(world(), counts, 1);
  for (int r = 0; r < size(); ++r) counts[r] = 3 * r + 1;
  CheckAllGatherV(world(), counts, 2);
  std::fill(counts.begin(), counts.end(), 0);
  CheckAllGatherV(world(), counts, 3);
  for (int r = 0; r < size(); ++r) counts[r] = r == size() - 1 ? (size_t{3} << 20) : 5;
  CheckAllGatherV(world(), counts, 4);
}

template <typename T>
void CheckAllReduce(Communicator& comm, ReduceType type) {
  constexpr size_t kCount = 1001;
  // Small integers: exact in every type, so sums compare exactly.
  auto value = [](int r, size_t j) { return static_cast<T>(int((r * 7 + j * 3) % 11) - 5 + r); };
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
    SCOPED_TRACE(::testing::Message() << "op " << static_cast<int>(op));
    std::vector<T> data(kCount);
    for (size_t j = 0; j < kCount; ++j) data[j] = value(comm.rank(), j);
    const TrafficCounters before = comm.traffic();
    ASSERT_OK(comm.AllReduce(data.data(), kCount, type, op, Soon()));
    const TrafficCounters after = comm.traffic();
    EXPECT_EQ(after.sent - before.sent, kCount * sizeof(T));
    EXPECT_EQ(after.received - before.received, kCount * sizeof(T));
    for (size_t j = 0; j < kCount; ++j) {
      T want = value(0, j);
      for (int r = 1; r < comm.size(); ++r) {
        const T v = value(r, j);
        want = op == ReduceOp::kSum   ? want + v
               : op == ReduceOp::kMax ? std::max(want, v)
                                      : std::min(want, v);
      }
      ASSERT_EQ(data[j], want) << "element " << j;
    }
  }
  ASSERT_OK(comm.AllReduce(nullptr, 0, type, ReduceOp::kSum, Soon()));  // nothing to reduce
}

TEST_F(MpiTest, AllReduceI64) { CheckAllReduce<int64_t>(world(), ReduceType::kI64); }
TEST_F(MpiTest, AllReduceF64) { CheckAllReduce<double>(world(), ReduceType::kF64); }
TEST_F(MpiTest, AllReduceF32) { CheckAllReduce<float>(world(), ReduceType::kF32); }

TEST_F(MpiTest, BarrierWaitsForTheLastRank) {
  const auto start = Clock::now();
  if (rank() == 0) std::this_thread::sleep_for(milliseconds(300));
  ASSERT_OK(world().Barrier(Soon()));
  EXPECT_GE(SecondsSince(start), 0.25);
}

TEST_F(MpiTest, SplitIntoEvenAndOdd) {
  const TrafficCounters world_before = world().traffic();
  // Key size-rank: the new ranks run in reverse order of the old ones.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Communicator> half,
                       world().Split(rank() % 2, size() - rank()));
  std::vector<int> members;  // world ranks of this half, in the new order
  for (int r = size() - 1; r >= 0; --r) {
    if (r % 2 == rank() % 2) members.push_back(r);
  }
  const int n = static_cast<int>(members.size());
  ASSERT_EQ(half->size(), n);
  ASSERT_EQ(members[half->rank()], rank());
  EXPECT_EQ(half->backend(), "mpi");
  EXPECT_GE(half->local_rank(), 0);
  EXPECT_LT(half->local_rank(), half->local_size());

  int64_t sum = rank();
  ASSERT_OK(half->AllReduce(&sum, 1, ReduceType::kI64, ReduceOp::kSum, Soon()));
  EXPECT_EQ(sum, std::accumulate(members.begin(), members.end(), int64_t{0}));

  // A ring inside the half, on a tag the world uses too: the communicators do not mix.
  int64_t out = 1000 + rank();
  int64_t in = -1;
  ASSERT_OK_AND_ASSIGN(RequestPtr recv,
                       half->Irecv(HostBuffer(&in, sizeof(in)), (half->rank() + n - 1) % n, 5));
  ASSERT_OK_AND_ASSIGN(RequestPtr send,
                       half->Isend(HostBuffer(&out, sizeof(out)), (half->rank() + 1) % n, 5));
  ASSERT_OK(send->Wait(Soon()));
  ASSERT_OK(recv->Wait(Soon()));
  EXPECT_EQ(in, 1000 + members[(half->rank() + n - 1) % n]);
  ASSERT_OK(half->Barrier(Soon()));

  // Counters are per communicator: the half's traffic is not the world's.
  EXPECT_EQ(half->traffic().sent, 2 * sizeof(int64_t));      // AllReduce + Isend
  EXPECT_EQ(half->traffic().received, 2 * sizeof(int64_t));  // AllReduce + Irecv
  EXPECT_EQ(world().traffic().sent, world_before.sent);
  EXPECT_EQ(world().traffic().received, world_before.received);

  const Result<std::unique_ptr<Communicator>> bad = world().Split(-1, 0);  // every rank: no hang
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(MpiTest, WaitDeadlineThenCancel) {
  constexpr int kTag = 4242;
  const int peer = next();  // never sends on kTag before the barrier below
  int64_t in = -1;
  ASSERT_OK_AND_ASSIGN(RequestPtr recv, world().Irecv(HostBuffer(&in, sizeof(in)), peer, kTag));
  ASSERT_OK_AND_ASSIGN(const bool done, recv->Test());
  EXPECT_FALSE(done);

  auto start = Clock::now();
  Status status = recv->Wait(DeadlineIn(milliseconds(500)));
  double waited = SecondsSince(start);
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status.ToString();
  EXPECT_GE(waited, 0.5);
  EXPECT_LT(waited, 1.0);
  EXPECT_NE(status.message().find(fmt::format("rank {}", peer)), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find(fmt::format("tag {}", kTag)), std::string::npos)
      << status.message();

  // The request stays valid: wait again, then destroy it (cancels the receive).
  status = recv->Wait(DeadlineIn(milliseconds(100)));
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status.ToString();
  start = Clock::now();
  recv.reset();
  EXPECT_LT(SecondsSince(start), 0.5);

  // The cancelled receive must not swallow a later message on the same tag.
  ASSERT_OK(world().Barrier(Soon()));
  const int64_t out = 77 + rank();
  ASSERT_OK_AND_ASSIGN(RequestPtr send, world().Isend(HostBuffer(&out, sizeof(out)), prev(), kTag));
  ASSERT_OK_AND_ASSIGN(RequestPtr again, world().Irecv(HostBuffer(&in, sizeof(in)), peer, kTag));
  ASSERT_OK(again->Wait(Soon()));
  ASSERT_OK(send->Wait(Soon()));
  EXPECT_EQ(in, 77 + peer);
}

TEST_F(MpiTest, MissedCollectiveDeadlineStopsCollectives) {
  if (size() < 2) GTEST_SKIP() << "needs a second rank that is late";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Communicator> sub, world().Split(0, rank()));
  if (rank() == 0) {  // the others join sub's barrier only after the world barrier below
    const auto start = Clock::now();
    const Status late = sub->Barrier(DeadlineIn(milliseconds(300)));
    EXPECT_EQ(late.code(), StatusCode::kDeadlineExceeded) << late.ToString();
    EXPECT_LT(SecondsSince(start), 0.8);
    int64_t x = 1;
    const Status refused = sub->AllReduce(&x, 1, ReduceType::kI64, ReduceOp::kSum, Soon());
    EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition) << refused.ToString();
  }
  ASSERT_OK(world().Barrier(Soon()));
  // The abandoned barrier still matches the others' (rank 0's world waits drive its progress).
  if (rank() != 0) ASSERT_OK(sub->Barrier(Soon()));
  ASSERT_OK(world().Barrier(Soon()));
  // Point to point on the out-of-step communicator still works.
  int64_t out = rank();
  int64_t in = -1;
  ASSERT_OK_AND_ASSIGN(RequestPtr recv, sub->Irecv(HostBuffer(&in, sizeof(in)), prev(), 1));
  ASSERT_OK_AND_ASSIGN(RequestPtr send, sub->Isend(HostBuffer(&out, sizeof(out)), next(), 1));
  ASSERT_OK(send->Wait(Soon()));
  ASSERT_OK(recv->Wait(Soon()));
  EXPECT_EQ(in, prev());
}

TEST_F(MpiTest, DestroyingAnUnmatchedSendStillDelivers) {
  // 4 MiB goes by rendezvous: the send cannot finish before the receive is posted. Destroying
  // its request waits briefly, then hands the send to MPI; the message still arrives.
  const std::vector<uint8_t> out = Pattern(rank(), 55, size_t{4} << 20);  // outlives the send
  ASSERT_OK_AND_ASSIGN(RequestPtr send,
                       world().Isend(HostBuffer(out.data(), out.size()), next(), 55));
  const auto start = Clock::now();
  send.reset();
  EXPECT_LT(SecondsSince(start), 1.5);
  ASSERT_OK(world().Barrier(Soon()));
  std::vector<uint8_t> in(out.size());
  ASSERT_OK_AND_ASSIGN(RequestPtr recv,
                       world().Irecv(HostBuffer(in.data(), in.size()), prev(), 55));
  ASSERT_OK(recv->Wait(Soon()));
  EXPECT_EQ(FirstMismatch(in, Pattern(prev(), 55, in.size())), -1);
  ASSERT_OK(world().Barrier(Soon()));  // every receive is done before `out` goes away
}

TEST_F(MpiTest, BadArgumentsAreRefusedLocally) {
  std::vector<uint8_t> buf(8);
  auto code_of = [](const Result<RequestPtr>& r) { return r.status().code(); };
  EXPECT_EQ(code_of(world().Isend(HostBuffer(buf.data(), 8), size(), 0)),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code_of(world().Irecv(HostBuffer(buf.data(), 8), -1, 0)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code_of(world().Isend(HostBuffer(buf.data(), 8), next(), -3)),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(code_of(world().Irecv(MutableBuffer{buf.data(), 8, MemoryKind::kDevice}, prev(), 0)),
            StatusCode::kUnimplemented);
  EXPECT_EQ(code_of(world().Isend(ConstBuffer{nullptr, 8, MemoryKind::kHost}, next(), 0)),
            StatusCode::kInvalidArgument);
  std::vector<size_t> counts(size() + 1, 0);
  EXPECT_EQ(world().AllGatherV({}, {}, counts, Soon()).code(), StatusCode::kInvalidArgument);
  counts.assign(size(), 0);
  EXPECT_EQ(world()
                .AllGatherV(HostBuffer(buf.data(), 8), HostBuffer(buf.data(), 8), counts, Soon())
                .code(),
            StatusCode::kInvalidArgument);  // counts[rank] != 8
  // Refusals run no collective, so the ranks are still in step.
  ASSERT_OK(world().Barrier(Soon()));
}

TEST_F(MpiTest, TrafficCountsBytesMoved) {
  const TrafficCounters before = world().traffic();
  std::vector<uint8_t> out(1000, 1);
  std::vector<uint8_t> in(1000);
  ASSERT_OK_AND_ASSIGN(RequestPtr recv, world().Irecv(HostBuffer(in.data(), 1000), prev(), 3));
  ASSERT_OK_AND_ASSIGN(RequestPtr send, world().Isend(HostBuffer(out.data(), 1000), next(), 3));
  ASSERT_OK(send->Wait(Soon()));
  ASSERT_OK(recv->Wait(Soon()));
  std::vector<size_t> counts(size(), 24);
  std::vector<uint8_t> gathered(24 * size());
  ASSERT_OK(world().AllGatherV(HostBuffer(out.data(), 24),
                               HostBuffer(gathered.data(), gathered.size()), counts, Soon()));
  double values[10] = {};
  ASSERT_OK(world().AllReduce(values, 10, ReduceType::kF64, ReduceOp::kSum, Soon()));
  ASSERT_OK(world().Barrier(Soon()));
  const TrafficCounters after = world().traffic();
  EXPECT_EQ(after.sent - before.sent, 1000u + 24u + 80u);
  EXPECT_EQ(after.received - before.received, 1000u + 24u * (size() - 1) + 80u);
}

TEST_F(MpiTest, LargerThanIntMaxMessage) {
  if (std::getenv("LONGCTX_TEST_LARGE_MESSAGES") == nullptr) {
    GTEST_SKIP() << "set LONGCTX_TEST_LARGE_MESSAGES=1 (ctest -L large) to move 2 GiB + 3 bytes "
                    "around the ring (about 4.2 GB of memory per rank)";
  }
  const size_t bytes = (size_t{2} << 30) + 3;
  std::vector<uint8_t> out(bytes);
  std::vector<uint8_t> in(bytes, 0);
  for (size_t i = 0; i < bytes; i += 4096) out[i] = static_cast<uint8_t>(i / 4096 + rank());
  out[bytes - 1] = static_cast<uint8_t>(0xA0 + rank());
  ASSERT_OK_AND_ASSIGN(RequestPtr recv, world().Irecv(HostBuffer(in.data(), bytes), prev(), 11));
  ASSERT_OK_AND_ASSIGN(RequestPtr send, world().Isend(HostBuffer(out.data(), bytes), next(), 11));
  ASSERT_OK(send->Wait(DeadlineIn(seconds(240))));
  ASSERT_OK(recv->Wait(DeadlineIn(seconds(240))));
  for (size_t i = 0; i < bytes; i += 4096) {
    ASSERT_EQ(in[i], static_cast<uint8_t>(i / 4096 + prev())) << "byte " << i;
  }
  EXPECT_EQ(in[bytes - 1], static_cast<uint8_t>(0xA0 + prev()));
}

TEST(SelfCommunicator, OneRankWorld) {
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<Communicator> self, WorldCommunicator("self"));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<Communicator> again, WorldCommunicator("self"));
  EXPECT_EQ(self.get(), again.get());
  EXPECT_NE(self.get(), &test::World());
  EXPECT_EQ(self->backend(), "self");
  EXPECT_EQ(self->rank(), 0);
  EXPECT_EQ(self->size(), 1);
  EXPECT_EQ(self->local_rank(), 0);
  EXPECT_EQ(self->local_size(), 1);
  EXPECT_TRUE(self->Supports(MemoryKind::kHost));
  EXPECT_FALSE(self->Supports(MemoryKind::kDevice));
}

TEST(SelfCommunicator, SendToSelfInEitherOrder) {
  std::unique_ptr<Communicator> self;
  {
    ASSERT_OK_AND_ASSIGN(std::shared_ptr<Communicator> world, WorldCommunicator("self"));
    ASSERT_OK_AND_ASSIGN(self, world->Split(0, 0));  // a fresh one: counters start at 0
  }
  const std::vector<uint8_t> a = Pattern(0, 1, 100);
  const std::vector<uint8_t> b = Pattern(0, 2, 50);
  std::vector<uint8_t> in(100, 0);

  // Send first, then receive.
  ASSERT_OK_AND_ASSIGN(RequestPtr send, self->Isend(HostBuffer(a.data(), a.size()), 0, 1));
  ASSERT_OK(send->Wait(DeadlineIn(milliseconds(100))));  // buffered: complete at once
  ASSERT_OK_AND_ASSIGN(RequestPtr recv, self->Irecv(HostBuffer(in.data(), in.size()), 0, 1));
  ASSERT_OK(recv->Wait(DeadlineIn(milliseconds(100))));
  EXPECT_EQ(in, a);

  // Receive first, then send; another tag in between is not matched.
  std::vector<uint8_t> in_b(50, 0);
  ASSERT_OK_AND_ASSIGN(RequestPtr recv_b, self->Irecv(HostBuffer(in_b.data(), 50), 0, 2));
  ASSERT_OK_AND_ASSIGN(const bool early, recv_b->Test());
  EXPECT_FALSE(early);
  ASSERT_OK_AND_ASSIGN(RequestPtr other, self->Isend(HostBuffer(a.data(), 10), 0, 3));
  ASSERT_OK_AND_ASSIGN(const bool still, recv_b->Test());
  EXPECT_FALSE(still);
  ASSERT_OK_AND_ASSIGN(RequestPtr send_b, self->Isend(HostBuffer(b.data(), b.size()), 0, 2));
  ASSERT_OK(recv_b->Wait(DeadlineIn(milliseconds(100))));
  EXPECT_EQ(in_b, b);

  // Same tag: in order.
  for (int seq = 0; seq < 3; ++seq) {
    const int64_t v = seq;
    ASSERT_OK_AND_ASSIGN(RequestPtr s, self->Isend(HostBuffer(&v, sizeof(v)), 0, 4));
  }
  for (int seq = 0; seq < 3; ++seq) {
    int64_t v = -1;
    ASSERT_OK_AND_ASSIGN(RequestPtr r, self->Irecv(HostBuffer(&v, sizeof(v)), 0, 4));
    ASSERT_OK(r->Wait(DeadlineIn(milliseconds(100))));
    EXPECT_EQ(v, seq);
  }

  // A message longer than the buffer is an error on the receive.
  ASSERT_OK_AND_ASSIGN(RequestPtr too_big, self->Irecv(HostBuffer(in.data(), 5), 0, 3));
  EXPECT_EQ(too_big->Wait(DeadlineIn(milliseconds(100))).code(), StatusCode::kInvalidArgument);

  // Sent: 100 + 10 + 50 + 24; received: 100 + 50 + 24 (the truncated message is not counted).
  EXPECT_EQ(self->traffic().sent, 184u);
  EXPECT_EQ(self->traffic().received, 174u);

  EXPECT_EQ(self->Isend(HostBuffer(a.data(), 1), 1, 0).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(self->Isend(HostBuffer(a.data(), 1), 0, -1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(self->Isend(ConstBuffer{a.data(), 1, MemoryKind::kDevice}, 0, 0).status().code(),
            StatusCode::kUnimplemented);
}

TEST(SelfCommunicator, DeadlineAndCancel) {
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<Communicator> self, WorldCommunicator("self"));
  int64_t v = -1;
  ASSERT_OK_AND_ASSIGN(RequestPtr recv, self->Irecv(HostBuffer(&v, sizeof(v)), 0, 9));
  const auto start = Clock::now();
  const Status status = recv->Wait(DeadlineIn(milliseconds(200)));
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(status.message().find("tag 9"), std::string::npos) << status.message();
  EXPECT_GE(SecondsSince(start), 0.2);
  EXPECT_LT(SecondsSince(start), 0.7);
  recv.reset();  // cancelled: the next message on tag 9 goes to the next receive
  const int64_t one = 1;
  ASSERT_OK_AND_ASSIGN(RequestPtr send, self->Isend(HostBuffer(&one, sizeof(one)), 0, 9));
  ASSERT_OK_AND_ASSIGN(RequestPtr again, self->Irecv(HostBuffer(&v, sizeof(v)), 0, 9));
  ASSERT_OK(again->Wait(DeadlineIn(milliseconds(100))));
  EXPECT_EQ(v, 1);

  // A receive completed from another thread wakes the waiter.
  ASSERT_OK_AND_ASSIGN(RequestPtr late, self->Irecv(HostBuffer(&v, sizeof(v)), 0, 10));
  std::thread sender([&] {
    std::this_thread::sleep_for(milliseconds(50));
    const int64_t two = 2;
    auto s = self->Isend(HostBuffer(&two, sizeof(two)), 0, 10);
    EXPECT_OK(s);
  });
  EXPECT_OK(late->Wait(DeadlineIn(seconds(5))));
  sender.join();
  EXPECT_EQ(v, 2);
}

TEST(SelfCommunicator, CollectivesAreCopies) {
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<Communicator> self, WorldCommunicator("self"));
  const std::vector<uint8_t> mine = Pattern(0, 5, 33);
  std::vector<uint8_t> all(33, 0);
  const size_t counts[1] = {33};
  ASSERT_OK(self->AllGatherV(HostBuffer(mine.data(), 33), HostBuffer(all.data(), 33), counts,
                             DeadlineIn(milliseconds(100))));
  EXPECT_EQ(all, mine);
  const size_t wrong[1] = {32};
  EXPECT_EQ(self->AllGatherV(HostBuffer(mine.data(), 33), HostBuffer(all.data(), 33), wrong,
                             DeadlineIn(milliseconds(100)))
                .code(),
            StatusCode::kInvalidArgument);
  double x[3] = {1.5, -2, 3};
  ASSERT_OK(self->AllReduce(x, 3, ReduceType::kF64, ReduceOp::kSum, DeadlineIn(seconds(1))));
  EXPECT_EQ(x[0], 1.5);
  EXPECT_EQ(x[1], -2);
  ASSERT_OK(self->Barrier(DeadlineIn(milliseconds(100))));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Communicator> split, self->Split(3, 0));
  EXPECT_EQ(split->backend(), "self");
  EXPECT_EQ(split->size(), 1);
  EXPECT_EQ(self->Split(-1, 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(CommDefaults, TimeoutFromEnvironment) {
  const spdlog::level::level_enum saved_level = spdlog::get_level();
  spdlog::set_level(spdlog::level::err);  // the bad values below log a warning each
  const char* saved = std::getenv("LONGCTX_COMM_TIMEOUT_S");
  const std::string saved_value = saved ? saved : "";
  unsetenv("LONGCTX_COMM_TIMEOUT_S");
  EXPECT_EQ(DefaultTimeout(), milliseconds(300'000));
  setenv("LONGCTX_COMM_TIMEOUT_S", "2.5", 1);
  EXPECT_EQ(DefaultTimeout(), milliseconds(2500));
  for (const char* bad : {"0", "-4", "abc", "5s", ""}) {
    setenv("LONGCTX_COMM_TIMEOUT_S", bad, 1);
    EXPECT_EQ(DefaultTimeout(), milliseconds(300'000)) << "'" << bad << "'";
  }
  if (saved) {
    setenv("LONGCTX_COMM_TIMEOUT_S", saved_value.c_str(), 1);
  } else {
    unsetenv("LONGCTX_COMM_TIMEOUT_S");
  }
  spdlog::set_level(saved_level);
}

// Rank `die_rank` kills itself after a barrier; the others wait for a message from it that
// never comes. The launcher must end the job (non-zero) long before the 60 s wait runs out.
int RunDeadRank(Communicator& world, int die_rank) {
  if (world.size() < 2 || die_rank < 0 || die_rank >= world.size()) {
    std::fprintf(stderr, "--die-rank %d needs at least 2 ranks and a valid rank\n", die_rank);
    return 2;
  }
  std::printf("longctx-mpi-test dead-rank: rank %d/%d ready\n", world.rank(), world.size());
  std::fflush(stdout);
  if (Status s = world.Barrier(DeadlineIn(seconds(60))); !s.ok()) {
    std::fprintf(stderr, "rank %d: barrier: %s\n", world.rank(), s.ToString().c_str());
    return 3;
  }
  if (world.rank() == die_rank) {
    std::printf("longctx-mpi-test dead-rank: rank %d/%d killing itself\n", world.rank(),
                world.size());
    std::fflush(stdout);
    std::raise(SIGKILL);
  }
  int64_t v = 0;
  Result<RequestPtr> recv = world.Irecv(HostBuffer(&v, sizeof(v)), die_rank, 1);
  Status s = recv.ok() ? (*recv)->Wait(DeadlineIn(seconds(60))) : recv.status();
  std::fprintf(stderr, "rank %d: still alive after waiting on rank %d: %s\n", world.rank(),
               die_rank, s.ToString().c_str());
  return 4;
}

// `--die-rank R` (tests/mpi/dead_rank.sh) instead of the tests.
[[maybe_unused]] const bool kDeadRankMode = test::RegisterMpiTestMode(
    "--die-rank", [](Communicator& world, std::string_view value) {
      return RunDeadRank(world, std::atoi(std::string(value).c_str()));
    });

}  // namespace
}  // namespace longctx::comm
