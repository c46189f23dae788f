// JoinStore under mpirun (label ucx): every rank lends a pool, joins, stores its own blocks in
// the other ranks' pools (never its own), reads them back verified, and leaves after a barrier.
// Run by tests/mpi/run_mpi_test.sh, which checks every rank's "N passed, 0 failed" line.
#include <gtest/gtest.h>

#include <cstdio>
#include <optional>
#include <random>

#include "longctx/cache/kv_block.h"
#include "longctx/cache/store.h"
#include "longctx/comm/communicator.h"
#include "longctx/test/mpi_test.h"
#include "longctx/test/status_matchers.h"

namespace longctx::cache {
namespace {


std::vector<std::byte> Block(const BlockKey& key, uint32_t seed) {
  const BlockShape shape{8, 2, 32};
  std::vector<float> k(static_cast<size_t>(shape.tokens * shape.row())), v(k.size());
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (float& x : k) x = dist(rng);
  for (float& x : v) x = dist(rng);
  return *EncodeBlock(key, shape, Codec::kBF16, k, v);
}

TEST(JoinStore, EveryRankStoresInTheOthersPools) {
  comm::Communicator& world = test::World();
  StoreJoinOptions options;
  options.pool_bytes = 8 << 20;
  options.replicas = world.size() >= 3 ? 2 : 1;
  if (world.size() == 1) {
    // One rank has no other process to lend it memory: a clear error, not a hang.
    auto alone = JoinStore(world, options);
    ASSERT_FALSE(alone.ok());
    EXPECT_EQ(alone.status().code(), StatusCode::kInvalidArgument) << alone.status().ToString();
    return;
  }
  auto joined = JoinStore(world, options);
  ASSERT_OK(joined);
  auto client = std::dynamic_pointer_cast<StoreClient>(*joined);
  ASSERT_NE(client, nullptr);
  ASSERT_EQ(client->Pools().size(), static_cast<size_t>(world.size() - 1));
  std::vector<std::pair<BlockKey, std::vector<std::byte>>> mine;
  for (uint64_t b = 0; b < 16; ++b) {
    const BlockKey key{static_cast<uint64_t>(world.rank()), 0, b};
    mine.emplace_back(key, Block(key, static_cast<uint32_t>(world.rank() * 100 + b)));
    ASSERT_OK((*joined)->Put(key, mine.back().second));
    EXPECT_EQ(client->ReplicaPools(key).size(), static_cast<size_t>(options.replicas));
  }
  ASSERT_OK(world.Barrier(comm::DeadlineIn(std::chrono::seconds(60))));
  for (const auto& [key, bytes] : mine) {
    auto got = (*joined)->Get(key);
    ASSERT_OK(got);
    EXPECT_EQ(*got, bytes);
  }
  EXPECT_EQ((*joined)->Stats().blocks, 16u);
  // Leave together: a rank's pool must outlive the other ranks' use of it.
  ASSERT_OK(world.Barrier(comm::DeadlineIn(std::chrono::seconds(60))));
  joined->reset();
  client.reset();
  ASSERT_OK(world.Barrier(comm::DeadlineIn(std::chrono::seconds(60))));
}

// A rank's pool serves only the job's ranks: a process without the job's token (drawn by rank 0
// and never written anywhere) — or with another token — is refused, and gets no address or key.
TEST(JoinStore, ARanksPoolRefusesClientsWithoutTheJobToken) {
  if (test::World().size() == 1) GTEST_SKIP() << "needs another rank's pool";
  StoreJoinOptions options;
  options.pool_bytes = 1 << 20;
  auto joined = JoinStore(test::World(), options);
  ASSERT_OK(joined);
  auto client = std::dynamic_pointer_cast<StoreClient>(*joined);
  ASSERT_FALSE(client->Pools().empty());
  auto ctx = comm::ucx::Context::Create();
  ASSERT_OK(ctx);
  const std::vector<std::optional<StoreToken>> tokens = {std::nullopt, *NewStoreToken()};
  for (const std::optional<StoreToken>& token : tokens) {
    StoreClientOptions o;
    o.pools = {{client->Pools()[0].address, token}};
    o.timeout = std::chrono::seconds(10);
    auto outsider = StoreClient::Connect(*ctx, o);
    ASSERT_FALSE(outsider.ok());
    EXPECT_NE(outsider.status().message().find("refused: wrong or missing store token"),
              std::string::npos) << outsider.status().message();
  }
  ASSERT_OK(test::World().Barrier(comm::DeadlineIn(std::chrono::seconds(60))));
}

TEST(JoinStore, ListeningEverywhereIsReachedByHostName) {
  if (test::World().size() == 1) GTEST_SKIP() << "needs another rank's pool";
  StoreJoinOptions options;
  options.pool_bytes = 1 << 20;
  options.bind_host = "0.0.0.0";
  auto joined = JoinStore(test::World(), options);
  ASSERT_OK(joined);
  auto client = std::dynamic_pointer_cast<StoreClient>(*joined);
  for (const auto& pool : client->Pools()) {
    EXPECT_EQ(pool.address.rfind("0.0.0.0", 0), std::string::npos) << pool.address;
  }
  const BlockKey key{static_cast<uint64_t>(test::World().rank()), 1, 0};
  const auto block = Block(key, 5);
  ASSERT_OK((*joined)->Put(key, block));
  EXPECT_EQ(*(*joined)->Get(key), block);
  ASSERT_OK(test::World().Barrier(comm::DeadlineIn(std::chrono::seconds(60))));
}

TEST(JoinStore, BadOptionsFailOnEveryRank) {
  StoreJoinOptions options;
  options.pool_bytes = 1 << 20;
  options.replicas = 3;
  auto joined = JoinStore(test::World(), options);
  ASSERT_FALSE(joined.ok());
  options.replicas = 1;
  options.stores = {"127.0.0.1:1"};  // nothing listens there
  joined = JoinStore(test::World(), options);
  ASSERT_FALSE(joined.ok());
  if (test::World().rank() == 0) {
    EXPECT_NE(joined.status().message().find("127.0.0.1:1"), std::string::npos)
        << joined.status().message();
  }
}

}  // namespace
}  // namespace longctx::cache
