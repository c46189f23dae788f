// The UCX transport and the KV store (label ucx). Run by CTest once per transport
// (UCX_TLS=tcp and UCX_TLS=sm). In-process tests start pool servers in this process (each with
// its own worker and progress thread); the process tests start `longctx store` processes
// (LONGCTX_BIN) and kill or stop them. Every wait has a deadline.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "longctx/cache/kv_block.h"
#include "longctx/cache/store.h"
#include "longctx/comm/ucx/socket.h"
#include "longctx/comm/ucx/ucx.h"
#include "longctx/test/child_process.h"
#include "longctx/test/temp_dir.h"
#include "longctx/test/status_matchers.h"

extern char** environ;

namespace longctx::cache {
namespace {

using namespace std::chrono_literals;
namespace ucx = comm::ucx;

std::shared_ptr<ucx::Context> NewContext() {
  auto ctx = ucx::Context::Create();
  EXPECT_OK(ctx);
  return ctx.ok() ? *ctx : nullptr;
}

struct Source {
  BlockShape shape;
  std::vector<float> k, v;
};

Source RandomSource(uint32_t seed, int32_t tokens = 16, int32_t kv_heads = 2,
                    int32_t head_dim = 32) {
  Source s;
  s.shape = BlockShape{tokens, kv_heads, head_dim};
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.5f);
  const size_t n = static_cast<size_t>(s.shape.tokens * s.shape.row());
  s.k.resize(n);
  s.v.resize(n);
  for (float& x : s.k) x = dist(rng);
  for (float& x : s.v) x = dist(rng);
  return s;
}

std::vector<std::byte> Encode(const BlockKey& key, const Source& s, Codec codec) {
  auto encoded = EncodeBlock(key, s.shape, codec, s.k, s.v);
  EXPECT_OK(encoded);
  return encoded.ok() ? *encoded : std::vector<std::byte>{};
}

// ---- the transport alone ----------------------------------------------------------------------

// A target worker with a registered region and a progress thread; an initiator that puts a
// batch, gets it back, and exchanges active messages.
TEST(UcxTransport, BatchedPutGetAndActiveMessages) {
  auto ctx = NewContext();
  ASSERT_NE(ctx, nullptr);
  auto target = ucx::Worker::Create(ctx);
  auto initiator = ucx::Worker::Create(ctx);
  ASSERT_TRUE(target.ok() && initiator.ok());
  constexpr size_t kBytes = 4 << 20;
  auto region = ucx::MemoryRegion::Allocate(ctx, kBytes);
  ASSERT_OK(region);
  auto packed = (*region)->PackRkey();
  ASSERT_OK(packed);

  std::atomic<int> messages{0};
  std::vector<std::byte> last_message;
  ASSERT_TRUE((*target)->SetAmHandler(7, [&](const ucx::AmMessage& m) {
    last_message.assign(m.data.begin(), m.data.end());
    messages.fetch_add(1);
  }).ok());
  std::atomic<bool> stop{false};
  std::thread progress([&] {
    while (!stop.load()) {
      if ((*target)->Progress() == 0) (*target)->WaitForEvents(1);
    }
  });

  {
    auto ep = ucx::Endpoint::Connect(**initiator, (*target)->address(), "target",
                                     /*shared_memory_possible=*/true);
    ASSERT_OK(ep);
    // Peer error handling exactly when shared memory is ruled out (UCX_TLS=tcp).
    EXPECT_EQ((*ep)->peer_error_handling(), !ucx::SharedMemoryAllowed());
    auto rkey = (*ep)->UnpackRkey(*packed, reinterpret_cast<uint64_t>((*region)->base()), kBytes);
    ASSERT_OK(rkey);

    // 32 ops of different sizes in flight together, at scattered offsets.
    std::mt19937 rng(1);
    std::vector<std::vector<std::byte>> sources;
    std::vector<ucx::RmaOp> puts;
    uint64_t offset = 0;
    for (int i = 0; i < 32; ++i) {
      const size_t bytes = 1 + rng() % 100000;
      std::vector<std::byte> data(bytes);
      for (auto& b : data) b = std::byte(rng());
      sources.push_back(std::move(data));
      puts.push_back({sources.back().data(), bytes, offset});
      offset += bytes + 64;
    }
    const auto deadline = comm::DeadlineIn(20s);
    ASSERT_OK((*ep)->PutAll(**rkey, puts, deadline));
    // The flush made every put visible in the target's memory.
    for (size_t i = 0; i < puts.size(); ++i) {
      ASSERT_EQ(std::memcmp((*region)->base() + puts[i].offset, sources[i].data(),
                            sources[i].size()), 0) << i;
    }
    std::vector<std::vector<std::byte>> back(puts.size());
    std::vector<ucx::RmaOp> gets;
    for (size_t i = 0; i < puts.size(); ++i) {
      back[i].resize(puts[i].bytes);
      gets.push_back({back[i].data(), puts[i].bytes, puts[i].offset});
    }
    ASSERT_OK((*ep)->GetAll(**rkey, gets, deadline));
    for (size_t i = 0; i < puts.size(); ++i) EXPECT_EQ(back[i], sources[i]) << i;

    // Out-of-range access is refused before anything is posted.
    ucx::RmaOp beyond{back[0].data(), 128, kBytes - 64};
    EXPECT_EQ((*ep)->GetAll(**rkey, {&beyond, 1}, deadline).code(), StatusCode::kOutOfRange);

    const std::string hello = "allocate 4096";
    ASSERT_OK((*ep)->SendAm(7, {}, std::as_bytes(std::span(hello)), false, deadline));
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (messages.load() == 0 && std::chrono::steady_clock::now() < until) {
      (*initiator)->Progress();
    }
    ASSERT_EQ(messages.load(), 1);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(last_message.data()), last_message.size()),
              hello);
  }
  stop.store(true);
  progress.join();
}

TEST(UcxTransport, BootstrapSocketErrorsAreOneLine) {
  auto bad = ucx::ParseHostPort("localhost", "--store");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("HOST:PORT"), std::string::npos);
  EXPECT_EQ(ucx::ParseHostPort("h:70000", "--store").status().code(),
            StatusCode::kInvalidArgument);
  // Nothing listens on port 1 here: refused at once, not after the deadline.
  const auto start = std::chrono::steady_clock::now();
  auto conn = ucx::TcpConnect({"127.0.0.1", 1}, comm::DeadlineIn(10s));
  EXPECT_EQ(conn.status().code(), StatusCode::kUnavailable) << conn.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  // A listener that never answers: the receive ends at its deadline.
  auto listener = ucx::TcpListener::Listen({"127.0.0.1", 0});
  ASSERT_OK(listener);
  auto client = ucx::TcpConnect(listener->address(), comm::DeadlineIn(5s));
  ASSERT_OK(client);
  auto frame = ucx::RecvFrame(client->get(), 100, comm::DeadlineIn(300ms));
  EXPECT_EQ(frame.status().code(), StatusCode::kDeadlineExceeded);
}

// ---- the store in one process -----------------------------------------------------------------

class StoreTest : public ::testing::Test {
 protected:
  void StartPools(int n, uint64_t bytes) {
    ctx_ = NewContext();
    ASSERT_NE(ctx_, nullptr);
    auto token = NewStoreToken();
    ASSERT_OK(token);
    token_ = *token;
    for (int i = 0; i < n; ++i) {
      PoolServerOptions so;
      so.pool_bytes = bytes;
      so.token = token_;
      auto server = PoolServer::Start(ctx_, so);
      ASSERT_OK(server);
      servers_.push_back(std::move(*server));
    }
  }
  Result<std::shared_ptr<StoreClient>> Connect(int replicas, uint64_t exclude = 0,
                                               std::chrono::milliseconds timeout = 10s) {
    StoreClientOptions o;
    for (const auto& s : servers_) o.pools.push_back({s->address().ToString(), token_});
    o.replicas = replicas;
    o.exclude_pool_id = exclude;
    o.timeout = timeout;
    return StoreClient::Connect(ctx_, o);
  }
  std::shared_ptr<ucx::Context> ctx_;
  StoreToken token_;
  std::vector<std::unique_ptr<PoolServer>> servers_;
};

TEST_F(StoreTest, EveryCodecRoundTripsThroughTwoReplicas) {
  StartPools(3, 8 << 20);
  auto client = Connect(2);
  ASSERT_OK(client);
  for (Codec codec : {Codec::kF32, Codec::kF16, Codec::kBF16, Codec::kInt8}) {
    for (uint64_t b = 0; b < 4; ++b) {
      const BlockKey key{7, static_cast<uint32_t>(codec), b};
      const Source src = RandomSource(static_cast<uint32_t>(b * 10 + uint64_t(codec)));
      const std::vector<std::byte> encoded = Encode(key, src, codec);
      ASSERT_OK((*client)->Put(key, encoded));
      const auto pools = (*client)->ReplicaPools(key);
      ASSERT_EQ(pools.size(), 2u);
      EXPECT_NE(pools[0], pools[1]);
      auto got = (*client)->Get(key);
      ASSERT_OK(got);
      EXPECT_EQ(*got, encoded);  // byte for byte what was put
      BlockShape shape;
      std::vector<float> k, v;
      ASSERT_OK(DecodeBlock(*got, key, &shape, &k, &v));
      ASSERT_EQ(k.size(), src.k.size());
      float kmax = 0, vmax = 0;
      for (size_t i = 0; i < k.size(); ++i) {
        kmax = std::max(kmax, std::fabs(src.k[i]));
        vmax = std::max(vmax, std::fabs(src.v[i]));
      }
      for (size_t i = 0; i < k.size(); ++i) {
        double tk = 0, tv = 0;
        if (codec == Codec::kF16) tk = std::fabs(src.k[i]) * 1e-3, tv = std::fabs(src.v[i]) * 1e-3;
        if (codec == Codec::kBF16) tk = std::fabs(src.k[i]) * 8e-3, tv = std::fabs(src.v[i]) * 8e-3;
        if (codec == Codec::kInt8) tk = kmax / 127 * 0.5001, tv = vmax / 127 * 0.5001;
        ASSERT_NEAR(k[i], src.k[i], tk) << CodecName(codec) << " k " << i;
        ASSERT_NEAR(v[i], src.v[i], tv) << CodecName(codec) << " v " << i;
      }
    }
  }
  const RemoteTierStats s = (*client)->Stats();
  EXPECT_EQ(s.blocks, 16u);
  EXPECT_EQ(s.replica_fallbacks, 0u);
  EXPECT_GT(s.bytes_got, 0u);
  EXPECT_EQ(s.capacity_bytes, 3u * (8 << 20));
}

TEST_F(StoreTest, CorruptReplicaFallsBackAndNoGoodCopyNamesTheBlock) {
  StartPools(2, 4 << 20);
  auto client = Connect(2);
  ASSERT_OK(client);
  const BlockKey key{3, 1, 17};
  const std::vector<std::byte> encoded = Encode(key, RandomSource(5), Codec::kInt8);
  ASSERT_OK((*client)->Put(key, encoded));
  ASSERT_OK((*client)->CorruptForTest(key, 0, encoded.size() / 2));
  auto got = (*client)->Get(key);
  ASSERT_OK(got);
  EXPECT_EQ(*got, encoded);
  EXPECT_EQ((*client)->Stats().replica_fallbacks, 1u);
  ASSERT_OK((*client)->CorruptForTest(key, 1, 3));
  got = (*client)->Get(key);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(got.status().message().find("seq 3 layer 1 block 17"), std::string::npos)
      << got.status().message();
}

TEST_F(StoreTest, SingleReplicaCorruptionIsDataLoss) {
  StartPools(1, 1 << 20);
  auto client = Connect(1);
  ASSERT_OK(client);
  const BlockKey key{1, 0, 2};
  const auto encoded = Encode(key, RandomSource(9), Codec::kF32);
  ASSERT_OK((*client)->Put(key, encoded));
  ASSERT_OK((*client)->CorruptForTest(key, 0, encoded.size() - 1));
  auto got = (*client)->Get(key);
  EXPECT_EQ(got.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(got.status().message().find("seq 1 layer 0 block 2"), std::string::npos);
}

TEST_F(StoreTest, PlacementByFreeCapacityEraseAndExhaustion) {
  StartPools(3, 1 << 20);
  auto client = Connect(1);
  ASSERT_OK(client);
  const Source src = RandomSource(1);
  std::vector<BlockKey> keys;
  for (uint64_t b = 0; b < 30; ++b) {
    keys.push_back({9, 0, b});
    ASSERT_OK((*client)->Put(keys.back(), Encode(keys.back(), src, Codec::kF32)));
  }
  // Each put goes to the emptiest pool: they end up within one block of each other.
  uint64_t lo = ~0ull, hi = 0;
  for (const auto& s : servers_) {
    lo = std::min(lo, s->Stats().used_bytes);
    hi = std::max(hi, s->Stats().used_bytes);
  }
  const uint64_t block = Encode(keys[0], src, Codec::kF32).size();
  EXPECT_LE(hi - lo, block + 64);
  // Overwriting a block replaces it (old space freed) and reads the new bytes.
  const auto other = Encode(keys[0], RandomSource(2), Codec::kF32);
  ASSERT_OK((*client)->Put(keys[0], other));
  EXPECT_EQ(*(*client)->Get(keys[0]), other);
  EXPECT_EQ((*client)->Stats().blocks, 30u);
  for (const auto& key : keys) ASSERT_OK((*client)->Erase(key));
  EXPECT_EQ((*client)->Erase(keys[0]).code(), StatusCode::kNotFound);
  EXPECT_EQ((*client)->Get(keys[0]).status().code(), StatusCode::kUnavailable);
  for (const auto& s : servers_) EXPECT_EQ(s->Stats().used_bytes, 0u);
  // A block larger than any pool: refused, naming it, with nothing left allocated.
  const Source big = RandomSource(3, 4096, 4, 64);  // 8 MiB as f32
  const BlockKey big_key{9, 1, 0};
  const Status st = (*client)->Put(big_key, Encode(big_key, big, Codec::kF32));
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_NE(st.message().find("seq 9 layer 1 block 0"), std::string::npos);
  for (const auto& s : servers_) EXPECT_EQ(s->Stats().used_bytes, 0u);
}

TEST_F(StoreTest, NeverItsOwnPoolAndReplicasNeedDistinctPools) {
  StartPools(2, 1 << 20);
  // Pool 0 is "this process's": replicas=2 would need two others.
  auto refused = Connect(2, servers_[0]->pool_id());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  auto client = Connect(1, servers_[0]->pool_id());
  ASSERT_OK(client);
  ASSERT_EQ((*client)->Pools().size(), 1u);
  EXPECT_EQ((*client)->Pools()[0].pool_id, servers_[1]->pool_id());
  EXPECT_EQ(Connect(3).status().code(), StatusCode::kInvalidArgument);
  StoreClientOptions o;
  o.pools = {{"127.0.0.1:1", token_}};
  auto unreachable = StoreClient::Connect(ctx_, o);
  EXPECT_EQ(unreachable.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(unreachable.status().message().find("127.0.0.1:1"), std::string::npos);
}

TEST_F(StoreTest, ADestroyedPoolServerIsDetectedAndReplicasServe) {
  StartPools(3, 4 << 20);
  auto two = Connect(2);
  auto one = Connect(1);
  ASSERT_TRUE(two.ok() && one.ok());
  std::vector<std::pair<BlockKey, std::vector<std::byte>>> blocks;
  for (uint64_t b = 0; b < 12; ++b) {
    const BlockKey key{4, 2, b};
    blocks.emplace_back(key, Encode(key, RandomSource(uint32_t(b)), Codec::kBF16));
    ASSERT_OK((*two)->Put(key, blocks.back().second));
    ASSERT_OK((*one)->Put(key, blocks.back().second));
  }
  const std::string gone = servers_[1]->address().ToString();
  servers_[1].reset();
  const auto start = std::chrono::steady_clock::now();
  int lost = 0;
  for (const auto& [key, bytes] : blocks) {
    auto got = (*two)->Get(key);
    ASSERT_OK(got);
    EXPECT_EQ(*got, bytes);
    auto single = (*one)->Get(key);
    if ((*one)->ReplicaPools(key)[0] == gone) {
      ++lost;
      ASSERT_FALSE(single.ok());
      EXPECT_EQ(single.status().code(), StatusCode::kUnavailable);
      EXPECT_NE(single.status().message().find(key.ToString()), std::string::npos)
          << single.status().message();
    } else {
      ASSERT_OK(single);
    }
  }
  EXPECT_GT(lost, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  // New blocks go to the pools still alive.
  const BlockKey key{4, 3, 0};
  const auto fresh = Encode(key, RandomSource(77), Codec::kF16);
  ASSERT_OK((*two)->Put(key, fresh));
  EXPECT_EQ((*two)->ReplicaPools(key).size(), 2u);
  for (const auto& where : (*two)->ReplicaPools(key)) EXPECT_NE(where, gone);
  EXPECT_EQ(*(*two)->Get(key), fresh);
  int alive = 0;
  for (const auto& p : (*two)->Pools()) alive += p.alive ? 1 : 0;
  EXPECT_EQ(alive, 2);
}

TEST_F(StoreTest, BatchedPutAndGetWithFallbackAndAllOrNothing) {
  StartPools(3, 2 << 20);
  auto client = Connect(2);
  ASSERT_OK(client);
  std::vector<std::vector<std::byte>> encoded;
  std::vector<BlockKey> keys;
  for (uint64_t b = 0; b < 40; ++b) {
    keys.push_back({5, uint32_t(b % 4), b});
    encoded.push_back(Encode(keys.back(), RandomSource(uint32_t(b)), Codec(b % 4)));
  }
  std::vector<BlockRef> refs;
  for (size_t i = 0; i < keys.size(); ++i) refs.push_back({keys[i], encoded[i]});
  ASSERT_OK((*client)->PutBatch(refs));
  for (const auto& key : keys) {
    const auto pools = (*client)->ReplicaPools(key);
    ASSERT_EQ(pools.size(), 2u);
    EXPECT_NE(pools[0], pools[1]);
  }
  ASSERT_OK((*client)->CorruptForTest(keys[7], 0, 100));
  auto got = (*client)->GetBatch(keys);
  ASSERT_OK(got);
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ((*got)[i], encoded[i]) << i;
  EXPECT_EQ((*client)->Stats().replica_fallbacks, 1u);
  // Into reused buffers: the same bytes; a buffer of the wrong size is refused.
  std::vector<std::vector<std::byte>> landing(keys.size());
  std::vector<std::span<std::byte>> spans;
  for (size_t i = 0; i < keys.size(); ++i) {
    landing[i].resize(*(*client)->StoredBytes(keys[i]));
    spans.push_back(landing[i]);
  }
  ASSERT_OK((*client)->GetBatchInto(keys, spans));
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(landing[i], encoded[i]) << i;
  spans[3] = spans[3].first(spans[3].size() - 1);
  EXPECT_EQ((*client)->GetBatchInto(keys, spans).code(), StatusCode::kInvalidArgument);
  // A batch that cannot fit stores nothing new and keeps nothing allocated for it.
  uint64_t used_before = 0;
  for (const auto& srv : servers_) used_before += srv->Stats().used_bytes;
  std::vector<std::vector<std::byte>> big;
  std::vector<BlockRef> too_many;
  for (uint64_t b = 0; b < 12; ++b) {
    const BlockKey key{6, 0, b};
    big.push_back(Encode(key, RandomSource(uint32_t(b), 1024, 2, 64), Codec::kF32));  // 1 MiB
  }
  for (uint64_t b = 0; b < 12; ++b) too_many.push_back({BlockKey{6, 0, b}, big[b]});
  const Status st = (*client)->PutBatch(too_many);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  uint64_t used_after = 0;
  for (const auto& srv : servers_) used_after += srv->Stats().used_bytes;
  EXPECT_EQ(used_after, used_before);
  EXPECT_TRUE((*client)->ReplicaPools(BlockKey{6, 0, 0}).empty());
  EXPECT_EQ((*client)->PutBatch(std::vector<BlockRef>{refs[0], refs[0]}).code(),
            StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, CallsFromSeveralThreadsAreSerialised) {
  StartPools(2, 8 << 20);
  auto client = Connect(2);
  ASSERT_OK(client);
  std::atomic<int> failures{0};
  auto worker = [&](uint64_t sequence) {
    for (uint64_t b = 0; b < 40; ++b) {
      const BlockKey key{sequence, 0, b};
      const auto encoded = Encode(key, RandomSource(uint32_t(sequence * 100 + b)), Codec::kF16);
      if (!(*client)->Put(key, encoded).ok()) ++failures;
      auto got = (*client)->Get(key);
      if (!got.ok() || *got != encoded) ++failures;
      if (b % 3 == 0 && !(*client)->Erase(key).ok()) ++failures;
    }
  };
  std::thread a(worker, 100), b(worker, 200), c(worker, 300);
  a.join();
  b.join();
  c.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ((*client)->Stats().blocks, 3u * (40 - 14));
}

// ---- `longctx store` processes ----------------------------------------------------------------

// One `longctx store` child (test::ChildProcess: posix_spawn, stopped with SIGTERM then SIGKILL
// after 5 s and reaped when it goes), ready when its address file appears.
class StoreProcess {
 public:
  // `ucx_tls` false: the child runs without UCX_TLS (UCX's and the store's defaults).
  StoreProcess(const std::string& bin, const std::filesystem::path& dir, int index,
               const std::string& pool = "16M", bool ucx_tls = true)
      : address_file_(dir / ("store" + std::to_string(index) + ".addr")),
        log_(dir / ("store" + std::to_string(index) + ".log")),
        child_(test::SpawnOptions{
            {bin, "store", "--pool", pool, "--listen", "127.0.0.1:0", "--address-file",
             address_file_.string(), "--token-file", (dir / "store.token").string()},
            log_,
            ucx_tls ? std::vector<std::string>{} : std::vector<std::string>{"UCX_TLS"}}) {
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (child_.running() && std::chrono::steady_clock::now() < until) {
      if (std::filesystem::exists(address_file_)) {
        std::ifstream in(address_file_);
        std::getline(in, address_);
        if (!address_.empty()) return;
      }
      if (child_.WaitExit(0ms) >= 0) break;  // exited before it was ready
      std::this_thread::sleep_for(20ms);
    }
    ADD_FAILURE() << "longctx store did not become ready; log: " << Slurp(log_);
  }
  const std::string& address() const { return address_; }
  pid_t pid() const { return child_.pid(); }
  void Signal(int sig) const { child_.Signal(sig); }
  // SIGSTOP, then waits (up to 5 s) until the kernel shows the process stopped.
  bool Stop() const {
    child_.Signal(SIGSTOP);
    return child_.WaitStopped(5s);
  }
  // Waits for the child to exit; its wait status, or -1 at the deadline.
  int WaitExit(std::chrono::milliseconds limit) { return child_.WaitExit(limit); }
  const std::filesystem::path& address_file() const { return address_file_; }

  static std::string Slurp(const std::filesystem::path& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  std::filesystem::path address_file_, log_;
  test::ChildProcess child_;
  std::string address_;
};

class StoreProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bin = std::getenv("LONGCTX_BIN");
    if (bin == nullptr || !std::filesystem::exists(bin)) {
      GTEST_SKIP() << "LONGCTX_BIN (the longctx binary) is not set: process tests skipped";
    }
    bin_ = bin;
    ASSERT_FALSE(dir_.empty()) << "no temporary directory";
  }
  void TearDown() override {
    stores_.clear();  // SIGTERM + reap every child before the directory goes (tmp_)
  }
  void StartStores(int n) {
    for (int i = 0; i < n; ++i) {
      stores_.push_back(std::make_unique<StoreProcess>(bin_, dir_, i));
      ASSERT_FALSE(stores_.back()->address().empty());
    }
  }
  Result<std::shared_ptr<StoreClient>> Connect(int replicas, std::chrono::milliseconds timeout) {
    if (!ctx_) ctx_ = NewContext();
    StoreClientOptions o;
    auto token = ReadStoreToken((dir_ / "store.token").string());
    if (!token.ok()) return token.status();
    for (const auto& s : stores_) o.pools.push_back({s->address(), *token});
    o.replicas = replicas;
    o.timeout = timeout;
    return StoreClient::Connect(ctx_, o);
  }
  // Runs `longctx ARGS` (20 s deadline); returns its wait status and its output.
  std::pair<int, std::string> RunCli(std::vector<std::string> args) {
    args.insert(args.begin(), bin_);
    const auto log = dir_ / "cli.log";
    const int status = test::RunWithDeadline({args, log, {}}, 20s);
    if (status < 0) return {-1, ""};
    return {status, StoreProcess::Slurp(log)};
  }

  std::string bin_;
  test::TempDir tmp_{"longctx_ucx"};
  const std::filesystem::path dir_ = tmp_.path();
  std::shared_ptr<ucx::Context> ctx_;
  std::vector<std::unique_ptr<StoreProcess>> stores_;
};

std::vector<std::pair<BlockKey, std::vector<std::byte>>> PutBlocks(StoreClient& client, int n,
                                                                  uint64_t sequence) {
  std::vector<std::pair<BlockKey, std::vector<std::byte>>> blocks;
  const Codec codecs[] = {Codec::kF32, Codec::kF16, Codec::kBF16, Codec::kInt8};
  for (int b = 0; b < n; ++b) {
    const BlockKey key{sequence, static_cast<uint32_t>(b % 3), static_cast<uint64_t>(b)};
    blocks.emplace_back(key, Encode(key, RandomSource(uint32_t(b) + 100, 32, 2, 64), codecs[b % 4]));
    const Status st = client.Put(key, blocks.back().second);
    EXPECT_OK(st);
  }
  return blocks;
}

TEST_F(StoreProcessTest, TwoReplicasSurviveAKilledStore) {
  StartStores(3);
  auto client = Connect(2, 20s);
  ASSERT_OK(client);
  const auto blocks = PutBlocks(**client, 24, 11);
  stores_[0]->Signal(SIGKILL);  // mid-test, as an OOM kill would
  ASSERT_GE(stores_[0]->WaitExit(5s), 0);
  const auto start = std::chrono::steady_clock::now();
  for (const auto& [key, bytes] : blocks) {
    auto got = (*client)->Get(key);
    ASSERT_OK(got);
    ASSERT_EQ(*got, bytes) << key.ToString();
    BlockShape shape;
    std::vector<float> k, v;
    ASSERT_OK(DecodeBlock(*got, key, &shape, &k, &v));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  EXPECT_GT((*client)->Stats().replica_fallbacks, 0u);  // some primaries were on the dead store
  // The two survivors still take new blocks, two replicas each.
  const auto more = PutBlocks(**client, 4, 12);
  for (const auto& [key, bytes] : more) EXPECT_EQ(*(*client)->Get(key), bytes);
}

TEST_F(StoreProcessTest, OneReplicaFailsWithinSecondsNamingTheLostBlock) {
  StartStores(2);
  auto client = Connect(1, 60s);  // a long deadline: the failure must come from detection
  ASSERT_OK(client);
  const auto blocks = PutBlocks(**client, 12, 21);
  const std::string dead = stores_[1]->address();
  stores_[1]->Signal(SIGKILL);
  ASSERT_GE(stores_[1]->WaitExit(5s), 0);
  int lost = 0;
  for (const auto& [key, bytes] : blocks) {
    const auto start = std::chrono::steady_clock::now();
    auto got = (*client)->Get(key);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s) << key.ToString();
    if ((*client)->ReplicaPools(key)[0] == dead) {
      ++lost;
      ASSERT_FALSE(got.ok()) << key.ToString();
      EXPECT_EQ(got.status().code(), StatusCode::kUnavailable);
      EXPECT_NE(got.status().message().find(key.ToString()), std::string::npos)
          << got.status().message();
      EXPECT_NE(got.status().message().find(dead), std::string::npos) << got.status().message();
    } else {
      ASSERT_OK(got);
      EXPECT_EQ(*got, bytes);
    }
  }
  EXPECT_GT(lost, 0);
}

TEST_F(StoreProcessTest, AStoppedStoreNeverHangsACaller) {
  StartStores(1);
  auto client = Connect(1, 2s);
  ASSERT_OK(client);
  const auto blocks = PutBlocks(**client, 2, 31);
  ASSERT_TRUE(stores_[0]->Stop());  // alive (its socket stays open) but never progresses
  const BlockKey key{31, 9, 9};
  const auto start = std::chrono::steady_clock::now();
  const Status put = (*client)->Put(key, Encode(key, RandomSource(1), Codec::kF32));
  EXPECT_FALSE(put.ok());
  EXPECT_EQ(put.code(), StatusCode::kDeadlineExceeded) << put.ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 6s);
  // The pool is now known bad: reads fail fast, naming the block.
  const auto t = std::chrono::steady_clock::now();
  auto got = (*client)->Get(blocks[0].first);
  EXPECT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find(blocks[0].first.ToString()), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - t, 3s);
  stores_[0]->Signal(SIGCONT);
}

// The IPv4 addresses (host byte order) on which process `pid` has listening TCP sockets: its
// socket inodes from /proc/PID/fd, matched against /proc/PID/net/tcp (state 0A = LISTEN).
std::vector<uint32_t> ListeningAddresses(pid_t pid) {
  std::set<std::string> inodes;
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& entry : std::filesystem::directory_iterator(fd_dir)) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(entry.path(), ec).string();
    if (!ec && target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::vector<uint32_t> out;
  std::ifstream tcp("/proc/" + std::to_string(pid) + "/net/tcp");
  std::string line;
  std::getline(tcp, line);  // header
  while (std::getline(tcp, line)) {
    std::istringstream in(line);
    std::string slot, local, remote, state, queues, timer, retr, uid, timeout, inode;
    in >> slot >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> inode;
    if (state != "0A" || inodes.count(inode) == 0) continue;
    // "0100007F:1F90": the address as the kernel stores it (network order, printed as a number).
    out.push_back(ntohl(static_cast<uint32_t>(std::stoul(local.substr(0, 8), nullptr, 16))));
  }
  return out;
}

// UCX opens its own listening sockets besides --listen's; a loopback store keeps all of them on
// loopback (UCX_NET_DEVICES set from --listen), instead of on every interface.
TEST_F(StoreProcessTest, UcxListensOnlyOnTheListenInterface) {
  StartStores(1);
  auto client = Connect(1, 10s);  // the store's UCX is up and reachable
  ASSERT_OK(client);
  const std::vector<uint32_t> listening = ListeningAddresses(stores_[0]->pid());
  ASSERT_GE(listening.size(), 1u);
  for (uint32_t a : listening) {
    EXPECT_EQ(a >> 24, 127u) << "a listening socket on " << (a >> 24) << "." << (a >> 16 & 255)
                             << "." << (a >> 8 & 255) << "." << (a & 255);
  }
}

// Over tcp UCX's own port lets anyone who reaches it read the pool without the token
// (docs/security.md). A loopback store left to its defaults (no UCX_TLS) runs no tcp transport:
// its only listening socket is the bootstrap's, and a same-host client still works.
TEST_F(StoreProcessTest, ALoopbackStoreOpensNoUcxTcpPortByDefault) {
  stores_.push_back(std::make_unique<StoreProcess>(bin_, dir_, 0, "16M", /*ucx_tls=*/false));
  ASSERT_FALSE(stores_[0]->address().empty());
  const std::vector<uint32_t> listening = ListeningAddresses(stores_[0]->pid());
  EXPECT_EQ(listening.size(), 1u) << "UCX opened a tcp listener";
  const char* tls = std::getenv("UCX_TLS");
  if (tls != nullptr && std::string(tls).find("tcp") != std::string::npos &&
      std::string(tls).find("sm") == std::string::npos) {
    GTEST_SKIP() << "this process's UCX_TLS=" << tls << " shares no transport with the store";
  }
  auto client = Connect(1, 10s);
  ASSERT_OK(client);
  const auto blocks = PutBlocks(**client, 4, 41);
  for (const auto& [key, bytes] : blocks) EXPECT_EQ(*(*client)->Get(key), bytes);
}

TEST_F(StoreProcessTest, StoreCommandExitsZeroOnSigtermAndRejectsBadFlags) {
  StartStores(1);
  stores_[0]->Signal(SIGTERM);
  const int status = stores_[0]->WaitExit(10s);
  ASSERT_GE(status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(std::filesystem::exists(stores_[0]->address_file()));
  const std::string token = (dir_ / "store.token").string();
  std::vector<std::vector<std::string>> bad = {
      {"store"},                                        // --pool is required
      {"store", "--pool", "12Q"},                       // not a size
      {"store", "--pool", "0"},                         // empty pool
      {"store", "--pool", "1M", "--listen", "nowhere"}, // no port
      {"store", "--pool", "1M", "--listen", "127.0.0.1:99999"},
      {"store", "--pool", "1M", "--listen", "192.0.2.1:0"},  // not an address of this host
      {"store", "--pool", "1M", "--quota-per-session", "0"},
      {"store", "--pool", "1M", "--max-sessions", "0"},
  };
  for (auto& args : bad) {
    args.push_back("--token-file");
    args.push_back(token);
  }
  // Authentication: neither a token nor the explicit opt-out; both; no auth off loopback; a token
  // file others may read.
  const std::string open_token = (dir_ / "open.token").string();
  std::ofstream(open_token) << std::string(64, 'a') << "\n";
  std::filesystem::permissions(open_token, std::filesystem::perms(0644));
  bad.push_back({"store", "--pool", "1M"});
  bad.push_back({"store", "--pool", "1M", "--insecure-no-auth", "--token-file", token});
  bad.push_back({"store", "--pool", "1M", "--insecure-no-auth", "--listen", "0.0.0.0:0"});
  bad.push_back({"store", "--pool", "1M", "--token-file", open_token});
  for (const auto& args : bad) {
    auto [code, err] = RunCli(args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    EXPECT_TRUE(WIFEXITED(code) && WEXITSTATUS(code) != 0) << joined << " status " << code;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << joined << ": " << err;
    EXPECT_EQ(err.rfind("longctx", 0), 0u) << joined << ": " << err;
  }
}

}  // namespace
}  // namespace longctx::cache
