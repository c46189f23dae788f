// The UCX transport and the KV store (label ucx). Run by CTest once per transport
// (UCX_TLS=tcp and UCX_TLS=sm). In-process tests start pool servers in this process (each with
// its own worker and progress thread); the process tests start `longctx store` processes
// (LONGCTX_BIN) and kill or stop them. Every wait has a deadline.
#include <gtest/gtest.h>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "longctx/cache/kv_block.h"
#include "longctx/cache/store.h"
#include "longctx/comm/ucx/socket.h"
#include "longctx/comm/ucx/ucx.h"

extern char** environ;

namespace longctx::cache {
namespace {

using namespace std::chrono_literals;
namespace ucx = comm::ucx;

std::shared_ptr<ucx::Context> NewContext() {
  auto ctx = ucx::Context::Create();
  EXPECT_TRUE(ctx.ok()) << ctx.status().ToString();
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
  EXPECT_TRUE(encoded.ok()) << encoded.status().ToString();
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
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  auto packed = (*region)->PackRkey();
  ASSERT_TRUE(packed.ok());

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
    auto ep = ucx::Endpoint::Connect(**initiator, (*target)->address(), "target");
    ASSERT_TRUE(ep.ok()) << ep.status().ToString();
    auto rkey = (*ep)->UnpackRkey(*packed, reinterpret_cast<uint64_t>((*region)->base()), kBytes);
    ASSERT_TRUE(rkey.ok()) << rkey.status().ToString();

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
    ASSERT_TRUE((*ep)->PutAll(**rkey, puts, deadline).ok());
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
    ASSERT_TRUE((*ep)->GetAll(**rkey, gets, deadline).ok());
    for (size_t i = 0; i < puts.size(); ++i) EXPECT_EQ(back[i], sources[i]) << i;

    // Out-of-range access is refused before anything is posted.
    ucx::RmaOp beyond{back[0].data(), 128, kBytes - 64};
    EXPECT_EQ((*ep)->GetAll(**rkey, {&beyond, 1}, deadline).code(), StatusCode::kOutOfRange);

    const std::string hello = "allocate 4096";
    ASSERT_TRUE((*ep)->SendAm(7, {}, std::as_bytes(std::span(hello)), false, deadline).ok());
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
  ASSERT_TRUE(listener.ok());
  auto client = ucx::TcpConnect(listener->address(), comm::DeadlineIn(5s));
  ASSERT_TRUE(client.ok());
  auto frame = ucx::RecvFrame(client->get(), 100, comm::DeadlineIn(300ms));
  EXPECT_EQ(frame.status().code(), StatusCode::kDeadlineExceeded);
}

// ---- the store in one process -----------------------------------------------------------------

class StoreTest : public ::testing::Test {
 protected:
  void StartPools(int n, uint64_t bytes) {
    ctx_ = NewContext();
    ASSERT_NE(ctx_, nullptr);
    for (int i = 0; i < n; ++i) {
      auto server = PoolServer::Start(ctx_, PoolServerOptions{bytes, "127.0.0.1:0"});
      ASSERT_TRUE(server.ok()) << server.status().ToString();
      servers_.push_back(std::move(*server));
    }
  }
  Result<std::shared_ptr<StoreClient>> Connect(int replicas, uint64_t exclude = 0,
                                               std::chrono::milliseconds timeout = 10s) {
    StoreClientOptions o;
    for (const auto& s : servers_) o.pools.push_back(s->address().ToString());
    o.replicas = replicas;
    o.exclude_pool_id = exclude;
    o.timeout = timeout;
    return StoreClient::Connect(ctx_, o);
  }
  std::shared_ptr<ucx::Context> ctx_;
  std::vector<std::unique_ptr<PoolServer>> servers_;
};

TEST_F(StoreTest, EveryCodecRoundTripsThroughTwoReplicas) {
  StartPools(3, 8 << 20);
  auto client = Connect(2);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  for (Codec codec : {Codec::kF32, Codec::kF16, Codec::kBF16, Codec::kInt8}) {
    for (uint64_t b = 0; b < 4; ++b) {
      const BlockKey key{7, static_cast<uint32_t>(codec), b};
      const Source src = RandomSource(static_cast<uint32_t>(b * 10 + uint64_t(codec)));
      const std::vector<std::byte> encoded = Encode(key, src, codec);
      ASSERT_TRUE((*client)->Put(key, encoded).ok());
      const auto pools = (*client)->ReplicaPools(key);
      ASSERT_EQ(pools.size(), 2u);
      EXPECT_NE(pools[0], pools[1]);
      auto got = (*client)->Get(key);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      EXPECT_EQ(*got, encoded);  // byte for byte what was put
      BlockShape shape;
      std::vector<float> k, v;
      ASSERT_TRUE(DecodeBlock(*got, key, &shape, &k, &v).ok());
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
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const BlockKey key{3, 1, 17};
  const std::vector<std::byte> encoded = Encode(key, RandomSource(5), Codec::kInt8);
  ASSERT_TRUE((*client)->Put(key, encoded).ok());
  ASSERT_TRUE((*client)->CorruptForTest(key, 0, encoded.size() / 2).ok());
  auto got = (*client)->Get(key);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, encoded);
  EXPECT_EQ((*client)->Stats().replica_fallbacks, 1u);
  ASSERT_TRUE((*client)->CorruptForTest(key, 1, 3).ok());
  got = (*client)->Get(key);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(got.status().message().find("seq 3 layer 1 block 17"), std::string::npos)
      << got.status().message();
}

TEST_F(StoreTest, SingleReplicaCorruptionIsDataLoss) {
  StartPools(1, 1 << 20);
  auto client = Connect(1);
  ASSERT_TRUE(client.ok());
  const BlockKey key{1, 0, 2};
  const auto encoded = Encode(key, RandomSource(9), Codec::kF32);
  ASSERT_TRUE((*client)->Put(key, encoded).ok());
  ASSERT_TRUE((*client)->CorruptForTest(key, 0, encoded.size() - 1).ok());
  auto got = (*client)->Get(key);
  EXPECT_EQ(got.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(got.status().message().find("seq 1 layer 0 block 2"), std::string::npos);
}

TEST_F(StoreTest, PlacementByFreeCapacityEraseAndExhaustion) {
  StartPools(3, 1 << 20);
  auto client = Connect(1);
  ASSERT_TRUE(client.ok());
  const Source src = RandomSource(1);
  std::vector<BlockKey> keys;
  for (uint64_t b = 0; b < 30; ++b) {
    keys.push_back({9, 0, b});
    ASSERT_TRUE((*client)->Put(keys.back(), Encode(keys.back(), src, Codec::kF32)).ok());
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
  ASSERT_TRUE((*client)->Put(keys[0], other).ok());
  EXPECT_EQ(*(*client)->Get(keys[0]), other);
  EXPECT_EQ((*client)->Stats().blocks, 30u);
  for (const auto& key : keys) ASSERT_TRUE((*client)->Erase(key).ok());
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
  ASSERT_TRUE(client.ok());
  ASSERT_EQ((*client)->Pools().size(), 1u);
  EXPECT_EQ((*client)->Pools()[0].pool_id, servers_[1]->pool_id());
  EXPECT_EQ(Connect(3).status().code(), StatusCode::kInvalidArgument);
  StoreClientOptions o;
  o.pools = {"127.0.0.1:1"};
  auto unreachable = StoreClient::Connect(ctx_, o);
  EXPECT_EQ(unreachable.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(unreachable.status().message().find("127.0.0.1:1"), std::string::npos);
}

TEST_F(StoreTest, AStoppedPoolServerInThisProcessIsDetected) {
  StartPools(3, 4 << 20);
  auto two = Connect(2);
  auto one = Connect(1);
  ASSERT_TRUE(two.ok() && one.ok());
  std::vector<std::pair<BlockKey, std::vector<std::byte>>> blocks;
  for (uint64_t b = 0; b < 12; ++b) {
    const BlockKey key{4, 2, b};
    blocks.emplace_back(key, Encode(key, RandomSource(uint32_t(b)), Codec::kBF16));
    ASSERT_TRUE((*two)->Put(key, blocks.back().second).ok());
    ASSERT_TRUE((*one)->Put(key, blocks.back().second).ok());
  }
  const std::string gone = servers_[1]->address().ToString();
  servers_[1].reset();
  const auto start = std::chrono::steady_clock::now();
  int lost = 0;
  for (const auto& [key, bytes] : blocks) {
    auto got = (*two)->Get(key);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, bytes);
    auto single = (*one)->Get(key);
    if ((*one)->ReplicaPools(key)[0] == gone) {
      ++lost;
      ASSERT_FALSE(single.ok());
      EXPECT_EQ(single.status().code(), StatusCode::kUnavailable);
      EXPECT_NE(single.status().message().find(key.ToString()), std::string::npos)
          << single.status().message();
    } else {
      ASSERT_TRUE(single.ok()) << single.status().ToString();
    }
  }
  EXPECT_GT(lost, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  // New blocks go to the pools still alive.
  const BlockKey key{4, 3, 0};
  const auto fresh = Encode(key, RandomSource(77), Codec::kF16);
  ASSERT_TRUE((*two)->Put(key, fresh).ok());
  EXPECT_EQ((*two)->ReplicaPools(key).size(), 2u);
  for (const auto& where : (*two)->ReplicaPools(key)) EXPECT_NE(where, gone);
  EXPECT_EQ(*(*two)->Get(key), fresh);
  int alive = 0;
  for (const auto& p : (*two)->Pools()) alive += p.alive ? 1 : 0;
  EXPECT_EQ(alive, 2);
}

}  // namespace
}  // namespace longctx::cache
