// The KV store under attack (label ucx; docs/security.md): each test replays one attack found on
// the unauthenticated store (wrong token, another session's blocks, a garbage UCX address, the
// whole pool taken, silent and half-open clients, a dead client's memory) and checks that it is
// refused or contained while honest clients keep being served. A hostile client is written here
// by hand over the wire format (cache/src/store_wire.h), as an attacker would. Every wait has a
// deadline.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "longctx/cache/kv_block.h"
#include "longctx/cache/store.h"
#include "longctx/comm/ucx/socket.h"
#include "longctx/comm/ucx/ucx.h"
#include "longctx/test/temp_dir.h"
#include "store_wire.h"
#include "longctx/test/status_matchers.h"

namespace longctx::cache {
namespace {

using namespace std::chrono_literals;
namespace ucx = comm::ucx;

std::vector<std::byte> Block(const BlockKey& key, uint32_t seed) {
  const BlockShape shape{16, 2, 32};
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> k(static_cast<size_t>(shape.tokens * shape.row())), v(k.size());
  for (float& x : k) x = dist(rng);
  for (float& x : v) x = dist(rng);
  return *EncodeBlock(key, shape, Codec::kF32, k, v);
}

// Polls `done` until it holds or `limit` passes.
template <typename F>
bool Eventually(F done, std::chrono::milliseconds limit = 5000ms) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

using Nonce = std::array<uint8_t, wire::kNonceBytes>;

// The pool's first frame on a connection: its challenge's nonce.
Nonce ReadChallenge(int fd) {
  Nonce nonce{};
  auto frame = ucx::RecvFrame(fd, 1024, comm::DeadlineIn(5s));
  EXPECT_OK(frame);
  if (!frame.ok()) return nonce;
  auto c = wire::Read<wire::Challenge>(*frame, "challenge");
  EXPECT_TRUE(c.ok() && c->magic == wire::kChallengeMagic);
  if (c.ok()) std::memcpy(nonce.data(), c->nonce, nonce.size());
  return nonce;
}

// The hello frame a client sends (the wire's ClientHello + the address bytes), proving `token`
// on `nonce` (no proof without a token).
std::vector<std::byte> HelloFrame(const StoreToken* token, const Nonce& nonce,
                                  std::span<const std::byte> address,
                                  uint16_t version = wire::kVersion) {
  wire::ClientHello h{};
  h.magic = wire::kHelloMagic;
  h.version = version;
  h.flags = ucx::SharedMemoryAllowed() ? wire::kFlagSharedMemory : 0;
  h.addr_len = static_cast<uint32_t>(address.size());
  if (token != nullptr) {
    uint8_t n[wire::kNonceBytes];
    std::memcpy(n, nonce.data(), sizeof(n));
    const auto proof = wire::HelloProof(*token, n);
    std::memcpy(h.proof, proof.data(), proof.size());
  }
  wire::SetHost(h.host, ucx::HostIdentity());
  // (resize + memcpy: GCC 12 at -O3 warns falsely on vector::insert of two spans here)
  std::vector<std::byte> frame(sizeof(h) + address.size());
  std::memcpy(frame.data(), &h, sizeof(h));
  if (!address.empty()) std::memcpy(frame.data() + sizeof(h), address.data(), address.size());
  return frame;
}

// What came back on the bootstrap socket: a refusal's text, or the pool's hello and the rest.
struct Answer {
  bool refused = false;
  std::string text;  // the refusal's reason
  wire::PoolHello hello{};
  std::vector<std::byte> rest;  // pool worker address + rkey
  size_t bytes = 0;             // the whole frame
};
Result<Answer> ReadAnswer(int fd) {
  ASSIGN_OR_RETURN(std::vector<std::byte> frame, ucx::RecvFrame(fd, 1 << 16, comm::DeadlineIn(5s)));
  Answer a;
  a.bytes = frame.size();
  ASSIGN_OR_RETURN(const uint32_t magic, wire::Read<uint32_t>(frame, "magic"));
  if (magic == wire::kRefusalMagic) {
    ASSIGN_OR_RETURN(const wire::Refusal r, wire::Read<wire::Refusal>(frame, "refusal"));
    a.refused = true;
    a.text.assign(reinterpret_cast<const char*>(frame.data()) + sizeof(r), r.text_len);
    EXPECT_EQ(frame.size(), sizeof(r) + r.text_len) << "a refusal carries its reason only";
    return a;
  }
  ASSIGN_OR_RETURN(a.hello, wire::Read<wire::PoolHello>(frame, "pool hello"));
  a.rest.assign(frame.begin() + sizeof(wire::PoolHello), frame.end());
  return a;
}

// A hand-written client: its own worker, a hello over a raw socket, an endpoint to the pool, and
// requests with whatever session id and key it chooses.
class RawClient {
 public:
  explicit RawClient(std::shared_ptr<ucx::Context> ctx) {
    auto worker = ucx::Worker::Create(ctx);
    EXPECT_OK(worker);
    worker_ = std::move(*worker);
    EXPECT_TRUE(worker_->SetAmHandler(wire::kAmReply, [this](const ucx::AmMessage& m) {
      auto r = wire::Read<wire::Reply>(m.header, "reply");
      if (r.ok()) {
        replies_[r->request_id] = std::make_pair(
            *r, std::string(reinterpret_cast<const char*>(m.data.data()), m.data.size()));
      }
    }).ok());
  }
  ~RawClient() {
    ep_.reset();
    worker_.reset();
  }
  // Hello with `token`; on success connects the endpoint. Returns the answer.
  Result<Answer> Hello(const ucx::HostPort& pool, const StoreToken* token) {
    ASSIGN_OR_RETURN(socket_, ucx::TcpConnect(pool, comm::DeadlineIn(5s)));
    const Nonce nonce = ReadChallenge(socket_.get());
    RETURN_IF_ERROR(ucx::SendFrame(socket_.get(), HelloFrame(token, nonce, worker_->address()),
                                   comm::DeadlineIn(5s)));
    ASSIGN_OR_RETURN(Answer a, ReadAnswer(socket_.get()));
    if (a.refused) return a;
    hello_ = a.hello;
    ASSIGN_OR_RETURN(ep_, ucx::Endpoint::Connect(
                              *worker_, std::span(a.rest).subspan(0, a.hello.addr_len), "pool",
                              wire::SameHost(a.hello.host, ucx::HostIdentity()) &&
                                  (a.hello.flags & wire::kFlagSharedMemory)));
    return a;
  }
  // Sends one request as session (id, key); waits up to `wait` for its reply (nullopt: none).
  std::optional<std::pair<wire::Reply, std::string>> Request(
      wire::Op op, uint64_t arg0, uint64_t arg1, uint64_t session_id, const uint8_t* key,
      std::chrono::milliseconds wait = 5000ms) {
    wire::Request req{};
    req.magic = wire::kAmMagic;
    req.version = wire::kVersion;
    req.op = static_cast<uint16_t>(op);
    req.request_id = ++next_;
    req.session_id = session_id;
    if (key != nullptr) std::memcpy(req.session_key, key, wire::kSessionKeyBytes);
    req.arg0 = arg0;
    req.arg1 = arg1;
    EXPECT_TRUE(ep_->SendAm(wire::kAmRequest, wire::AsBytes(req), {}, false,
                            comm::DeadlineIn(5s)).ok());
    const auto until = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < until) {
      if (worker_->Progress() == 0) worker_->WaitForEvents(1);
      auto it = replies_.find(req.request_id);
      if (it != replies_.end()) return it->second;
    }
    return std::nullopt;
  }
  // As itself.
  std::optional<std::pair<wire::Reply, std::string>> Own(wire::Op op, uint64_t arg0,
                                                         uint64_t arg1 = 0) {
    return Request(op, arg0, arg1, hello_.session_id, hello_.session_key);
  }
  int socket() const { return socket_.get(); }
  void CloseSocket() { socket_ = UniqueFd(); }
  const wire::PoolHello& hello() const { return hello_; }

 private:
  std::unique_ptr<ucx::Worker> worker_;
  std::unique_ptr<ucx::Endpoint> ep_;
  UniqueFd socket_;
  wire::PoolHello hello_{};
  uint64_t next_ = 0;
  std::map<uint64_t, std::pair<wire::Reply, std::string>> replies_;
};

class StoreSecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ctx = ucx::Context::Create();
    ASSERT_OK(ctx);
    ctx_ = *ctx;
    token_ = *NewStoreToken();
  }
  void StartPool(uint64_t bytes, uint64_t quota = 0,
                 std::chrono::milliseconds hello_timeout = 2000ms) {
    PoolServerOptions so;
    so.pool_bytes = bytes;
    so.token = token_;
    so.quota_per_session = quota;
    so.hello_timeout = hello_timeout;
    auto server = PoolServer::Start(ctx_, so);
    ASSERT_OK(server);
    server_ = std::move(*server);
  }
  Result<std::shared_ptr<StoreClient>> Connect(std::optional<StoreToken> token) {
    StoreClientOptions o;
    o.pools = {{server_->address().ToString(), token}};
    o.timeout = 5s;
    return StoreClient::Connect(ctx_, o);
  }
  // An honest client stores and reads back a block.
  void ExpectServing() {
    auto client = Connect(token_);
    ASSERT_OK(client);
    const BlockKey key{77, 0, 1};
    const auto block = Block(key, 1);
    ASSERT_OK((*client)->Put(key, block));
    EXPECT_EQ(*(*client)->Get(key), block);
  }

  std::shared_ptr<ucx::Context> ctx_;
  StoreToken token_;
  std::unique_ptr<PoolServer> server_;
};

// ---- 1. authentication ------------------------------------------------------------------------

TEST_F(StoreSecurityTest, WrongOrMissingTokenIsRefusedBeforeAnyAddressOrKey) {
  StartPool(1 << 20);
  StoreToken wrong = token_;
  wrong.bytes[31] ^= 1;  // one bit off
  const std::vector<const StoreToken*> offered = {nullptr, &wrong};
  for (const StoreToken* token : offered) {
    RawClient raw(ctx_);
    auto a = raw.Hello(server_->address(), token);
    ASSERT_OK(a);
    EXPECT_TRUE(a->refused);
    EXPECT_EQ(a->text, "wrong or missing store token");
    // Nothing else follows: the pool closed the connection after the one line.
    EXPECT_TRUE(Eventually([&] { return ucx::PeerClosed(raw.socket()); }, 2000ms));
  }
  // The token is checked before the address is looked at: a wrong token with a garbage address
  // gets the token refusal (not an abort, not an address complaint).
  {
    auto fd = ucx::TcpConnect(server_->address(), comm::DeadlineIn(5s));
    ASSERT_OK(fd);
    const std::vector<std::byte> garbage(64, std::byte{0xFF});
    const Nonce nonce = ReadChallenge(fd->get());
    ASSERT_OK(ucx::SendFrame(fd->get(), HelloFrame(&wrong, nonce, garbage), comm::DeadlineIn(5s)));
    auto a = ReadAnswer(fd->get());
    ASSERT_OK(a);
    EXPECT_TRUE(a->refused);
    EXPECT_EQ(a->text, "wrong or missing store token");
  }
  EXPECT_EQ(server_->Stats().clients, 0u);
  // (counted before the refusal is sent, published to Stats() just after)
  EXPECT_TRUE(Eventually([&] { return server_->Stats().refused_hellos == 3; }, 2000ms))
      << server_->Stats().refused_hellos;
  // Through the client API: one line naming the store.
  auto refused = Connect(std::nullopt);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("refused: wrong or missing store token"),
            std::string::npos) << refused.status().message();
  EXPECT_NE(refused.status().message().find(server_->address().ToString()), std::string::npos);
  EXPECT_EQ(refused.status().message().find('\n'), std::string::npos);
  auto refused2 = Connect(wrong);
  EXPECT_EQ(refused2.status().code(), StatusCode::kFailedPrecondition);
  ExpectServing();
}

TEST_F(StoreSecurityTest, AnotherProtocolVersionIsRefused) {
  StartPool(1 << 20);
  auto fd = ucx::TcpConnect(server_->address(), comm::DeadlineIn(5s));
  ASSERT_OK(fd);
  const Nonce nonce = ReadChallenge(fd->get());
  ASSERT_TRUE(ucx::SendFrame(fd->get(), HelloFrame(&token_, nonce, std::vector<std::byte>(80), 1),
                             comm::DeadlineIn(5s)).ok());
  auto a = ReadAnswer(fd->get());
  ASSERT_OK(a);
  EXPECT_TRUE(a->refused);
  EXPECT_NE(a->text.find("protocol version 1"), std::string::npos) << a->text;
}

// The token never crosses the wire, and a hello captured on one connection (its proof covers that
// connection's nonce) is refused on another.
TEST_F(StoreSecurityTest, ACapturedHelloCannotBeReplayed) {
  StartPool(1 << 20);
  RawClient first(ctx_);
  auto a = first.Hello(server_->address(), &token_);
  ASSERT_TRUE(a.ok() && !a->refused);
  auto fd = ucx::TcpConnect(server_->address(), comm::DeadlineIn(5s));
  ASSERT_OK(fd);
  const Nonce mine = ReadChallenge(fd->get());
  Nonce other = mine;
  other[0] ^= 1;  // the proof of another connection's nonce
  const auto replayed = HelloFrame(&token_, other, std::vector<std::byte>(80));
  // The frame holds no copy of the token.
  const auto* t = reinterpret_cast<const std::byte*>(token_.bytes.data());
  EXPECT_EQ(std::search(replayed.begin(), replayed.end(), t, t + token_.bytes.size()),
            replayed.end());
  ASSERT_OK(ucx::SendFrame(fd->get(), replayed, comm::DeadlineIn(5s)));
  auto answer = ReadAnswer(fd->get());
  ASSERT_OK(answer);
  EXPECT_TRUE(answer->refused);
  EXPECT_EQ(answer->text, "wrong or missing store token");
}

TEST_F(StoreSecurityTest, AnUnauthenticatedPoolListensOnLoopbackOnly) {
  PoolServerOptions so;
  so.pool_bytes = 1 << 20;
  so.listen = "0.0.0.0:0";
  auto refused = PoolServer::Start(ctx_, so);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  so.listen = "127.0.0.1:0";
  auto insecure = PoolServer::Start(ctx_, so);
  ASSERT_OK(insecure);
  StoreClientOptions o;
  o.pools = {{(*insecure)->address().ToString(), std::nullopt}};
  EXPECT_OK(StoreClient::Connect(ctx_, o));
}

TEST(StoreToken, CreatedOnceWithMode600AndReadBack) {
  const test::TempDir tmp("longctx_token");
  const std::filesystem::path& dir = tmp.path();
  ASSERT_FALSE(dir.empty());
  const std::string path = (dir / "t").string();
  bool created = false;
  auto a = LoadOrCreateStoreToken(path, &created);
  ASSERT_OK(a);
  EXPECT_TRUE(created);
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::ifstream in(path);
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text.size(), 64u);
  auto b = LoadOrCreateStoreToken(path, &created);
  ASSERT_OK(b);
  EXPECT_FALSE(created);
  EXPECT_TRUE(SameToken(*a, *b));
  auto c = NewStoreToken();
  EXPECT_FALSE(SameToken(*a, *c));
  chmod(path.c_str(), 0640);
  EXPECT_EQ(ReadStoreToken(path).status().code(), StatusCode::kFailedPrecondition);
  chmod(path.c_str(), 0600);
  std::ofstream(path) << "abc\n";
  EXPECT_EQ(ReadStoreToken(path).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadStoreToken((dir / "none").string()).status().code(), StatusCode::kNotFound);
}

// What confines a pool's UCX listening sockets to the --listen / --kv-bind device.
TEST(UcxNetDevice, TheDeviceOfAListenAddress) {
  const std::string lo = ucx::NetDeviceOf("127.0.0.1");
  EXPECT_FALSE(lo.empty());
  EXPECT_EQ(ucx::NetDeviceOf("127.0.0.5"), lo);  // all of 127/8 is on the loopback device
  EXPECT_EQ(ucx::NetDeviceOf("localhost"), lo);
  EXPECT_EQ(ucx::NetDeviceOf("0.0.0.0"), "");    // every device: not confined
  EXPECT_EQ(ucx::NetDeviceOf("198.51.100.77"), "");  // on no local device (TEST-NET-2)
  EXPECT_EQ(ucx::NetDeviceOf("no-such-host.invalid"), "");
  // A context confined to it works (store and client on loopback were tested above).
  EXPECT_OK(ucx::Context::Create(lo));
}

// ---- 2. a session is its connection; quotas ---------------------------------------------------

TEST_F(StoreSecurityTest, ASessionCannotFreeAnotherSessionsBlocks) {
  StartPool(1 << 20);
  auto victim = Connect(token_);
  ASSERT_OK(victim);
  std::vector<std::pair<BlockKey, std::vector<std::byte>>> blocks;
  for (uint64_t b = 0; b < 4; ++b) {
    const BlockKey key{1, 0, b};
    blocks.emplace_back(key, Block(key, static_cast<uint32_t>(b)));
    ASSERT_OK((*victim)->Put(key, blocks.back().second));
  }
  const uint64_t used = server_->Stats().used_bytes;
  ASSERT_GT(used, 0u);

  RawClient attacker(ctx_);
  auto a = attacker.Hello(server_->address(), &token_);  // a legitimate client of the same pool
  ASSERT_TRUE(a.ok() && !a->refused);
  const uint64_t bytes = blocks[0].second.size();
  // As itself: the victim's ranges are not its allocations.
  for (uint64_t offset = 0; offset < used; offset += 64) {
    auto r = attacker.Own(wire::Op::kFree, offset, bytes);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->first.status, static_cast<int32_t>(StatusCode::kInvalidArgument));
  }
  // Claiming other session ids (the old client ids were 1, 2, 3), with its own key or none: no
  // answer at all, nothing freed.
  for (uint64_t id = 0; id < 4; ++id) {
    EXPECT_FALSE(attacker.Request(wire::Op::kFree, 0, bytes, id, a->hello.session_key, 100ms));
    EXPECT_FALSE(attacker.Request(wire::Op::kFree, 0, bytes, id, nullptr, 100ms));
  }
  EXPECT_GE(server_->Stats().dropped_requests, 8u);
  EXPECT_EQ(server_->Stats().used_bytes, used);
  for (const auto& [key, block] : blocks) {
    auto got = (*victim)->Get(key);
    ASSERT_OK(got);
    EXPECT_EQ(*got, block);
  }
  // Its own allocation it can free.
  auto mine = attacker.Own(wire::Op::kAlloc, 1000);
  ASSERT_TRUE(mine.has_value());
  ASSERT_EQ(mine->first.status, 0);
  auto freed = attacker.Own(wire::Op::kFree, mine->first.offset, 1000);
  ASSERT_TRUE(freed.has_value());
  EXPECT_EQ(freed->first.status, 0) << freed->second;
}

TEST_F(StoreSecurityTest, QuotaPerSessionIsEnforced) {
  StartPool(1 << 20, /*quota=*/64 << 10);
  RawClient greedy(ctx_);
  auto a = greedy.Hello(server_->address(), &token_);
  ASSERT_TRUE(a.ok() && !a->refused);
  EXPECT_EQ(a->hello.quota_bytes, 64u << 10);
  // 16 KiB at a time: four fit, the fifth is over the quota (the pool itself has room).
  for (int i = 0; i < 4; ++i) {
    auto r = greedy.Own(wire::Op::kAlloc, 16 << 10);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->first.status, 0) << r->second;
  }
  auto over = greedy.Own(wire::Op::kAlloc, 16 << 10);
  ASSERT_TRUE(over.has_value());
  EXPECT_EQ(over->first.status, static_cast<int32_t>(StatusCode::kResourceExhausted));
  EXPECT_NE(over->second.find("quota"), std::string::npos) << over->second;
  EXPECT_EQ(over->first.free_bytes, 0u);  // what this session may still take
  EXPECT_EQ(server_->Stats().used_bytes, 64u << 10);
  // Another session has its own quota; the client API reports the refusal as exhaustion.
  auto other = Connect(token_);
  ASSERT_OK(other);
  const BlockKey key{5, 0, 0};
  ASSERT_OK((*other)->Put(key, Block(key, 5)));
  std::vector<std::byte> big(100 << 10, std::byte{1});
  const Status st = (*other)->Put(BlockKey{5, 0, 1}, big);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
}

// ---- 3. a garbage UCX address -----------------------------------------------------------------

TEST_F(StoreSecurityTest, AGarbageUcxAddressIsRefusedAndTheStoreKeepsServing) {
  StartPool(1 << 20);
  const std::vector<std::vector<std::byte>> garbage = {
      std::vector<std::byte>(64, std::byte{0xFF}),  // the probe that aborted the store
      std::vector<std::byte>(3, std::byte{0}),      // shorter than any address
      std::vector<std::byte>(3000, std::byte{0}),   // longer than the pool accepts
  };
  for (const auto& address : garbage) {
    auto fd = ucx::TcpConnect(server_->address(), comm::DeadlineIn(5s));
    ASSERT_OK(fd);
    const Nonce nonce = ReadChallenge(fd->get());
    ASSERT_OK(ucx::SendFrame(fd->get(), HelloFrame(&token_, nonce, address), comm::DeadlineIn(5s)));
    auto a = ReadAnswer(fd->get());
    ASSERT_OK(a);
    EXPECT_TRUE(a->refused) << address.size();
    EXPECT_NE(a->text.find("address"), std::string::npos) << a->text;
  }
  ExpectServing();
}

// ---- 4. a forged block ------------------------------------------------------------------------

// Another token holder overwrites a stored block with a *valid* block of the same key and size
// (its checksum consistent): VerifyBlock alone accepts it; the client's MAC does not.
TEST_F(StoreSecurityTest, AForgedBlockWithAValidChecksumIsDetected) {
  StartPool(1 << 20);
  const BlockKey key{9, 2, 4};
  const auto real = Block(key, 1);
  const auto forged = Block(key, 2);
  ASSERT_EQ(real.size(), forged.size());
  ASSERT_NE(real, forged);
  ASSERT_OK(VerifyBlock(forged, key));
  for (bool mac : {true, false}) {
    StoreClientOptions o;
    o.pools = {{server_->address().ToString(), token_}};
    o.timeout = 5s;
    o.verify_mac = mac;
    auto client = StoreClient::Connect(ctx_, o);
    ASSERT_OK(client);
    ASSERT_OK((*client)->Put(key, real));
    ASSERT_OK((*client)->OverwriteForTest(key, 0, forged));
    auto got = (*client)->Get(key);
    std::vector<std::byte> into(real.size());
    const std::span<std::byte> out[] = {into};
    const Status batch = (*client)->GetBatchInto({&key, 1}, out);
    if (mac) {
      ASSERT_FALSE(got.ok());
      EXPECT_EQ(got.status().code(), StatusCode::kDataLoss);
      EXPECT_NE(got.status().message().find("MAC mismatch"), std::string::npos)
          << got.status().message();
      EXPECT_NE(got.status().message().find(key.ToString()), std::string::npos);
      EXPECT_EQ(batch.code(), StatusCode::kDataLoss) << batch.ToString();
    } else {
      // Without the MAC the forgery goes through: what the MAC is for.
      ASSERT_OK(got);
      EXPECT_EQ(*got, forged);
      EXPECT_OK(batch);
    }
  }
}

// ---- 5. slow, silent, half-open and dead clients ----------------------------------------------

TEST_F(StoreSecurityTest, SilentClientsDoNotDelayOthersAndAreDropped) {
  StartPool(1 << 20, 0, /*hello_timeout=*/1500ms);
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 5; ++i) {
    auto fd = ucx::TcpConnect(server_->address(), comm::DeadlineIn(5s));
    ASSERT_OK(fd);
    (void)ReadChallenge(fd->get());  // (so that PeerClosed below sees the close, not this frame)
    silent.push_back(std::move(*fd));
  }
  // One that sends half a hello and stops.
  const auto frame = HelloFrame(&token_, Nonce{}, std::vector<std::byte>(80));
  uint32_t len = static_cast<uint32_t>(frame.size());
  ASSERT_EQ(send(silent[0].get(), &len, 4, 0), 4);
  ASSERT_EQ(send(silent[0].get(), frame.data(), 20, 0), 20);
  ASSERT_TRUE(Eventually([&] { return server_->Stats().pending_hellos == 5; }, 2000ms));
  // An honest client is served at once (it was 2 s per silent client before).
  const auto t0 = std::chrono::steady_clock::now();
  ExpectServing();
  // (under one hello timeout: it used to wait for each silent client's in turn)
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1400ms);
  // The silent ones are dropped after the hello timeout.
  EXPECT_TRUE(Eventually([&] { return server_->Stats().pending_hellos == 0; }, 5000ms));
  for (auto& fd : silent) {
    EXPECT_TRUE(Eventually([&] { return ucx::PeerClosed(fd.get()); }, 2000ms));
  }
}

TEST_F(StoreSecurityTest, BytesAfterTheHelloCloseTheSessionAndFreeItsMemory) {
  StartPool(1 << 20);
  RawClient raw(ctx_);
  auto a = raw.Hello(server_->address(), &token_);
  ASSERT_TRUE(a.ok() && !a->refused);
  auto r = raw.Own(wire::Op::kAlloc, 4096);
  ASSERT_TRUE(r.has_value() && r->first.status == 0);
  EXPECT_EQ(server_->Stats().used_bytes, 4096u);
  const char one = 'x';
  ASSERT_EQ(send(raw.socket(), &one, 1, 0), 1);  // then nothing, and the socket stays open
  EXPECT_TRUE(Eventually([&] {
    const auto s = server_->Stats();
    return s.clients == 0 && s.used_bytes == 0 && s.allocations == 0;
  }));
  EXPECT_EQ(server_->Stats().closed_misbehaving, 1u);
  EXPECT_TRUE(Eventually([&] { return ucx::PeerClosed(raw.socket()); }, 2000ms));
  ExpectServing();
}

TEST_F(StoreSecurityTest, ADeadClientsAllocationsAreFreed) {
  StartPool(1 << 20);
  {
    auto client = Connect(token_);
    ASSERT_OK(client);
    for (uint64_t b = 0; b < 8; ++b) {
      const BlockKey key{3, 0, b};
      ASSERT_OK((*client)->Put(key, Block(key, 3)));
    }
    EXPECT_GT(server_->Stats().used_bytes, 0u);
    RawClient raw(ctx_);
    ASSERT_OK(raw.Hello(server_->address(), &token_));
    ASSERT_TRUE(raw.Own(wire::Op::kAlloc, 8192).has_value());
    EXPECT_EQ(server_->Stats().clients, 2u);
    raw.CloseSocket();  // the raw client goes away without a word
  }  // and the honest one is destroyed
  EXPECT_TRUE(Eventually([&] {
    const auto s = server_->Stats();
    return s.clients == 0 && s.used_bytes == 0;
  }));
}

TEST_F(StoreSecurityTest, SessionsPerHostAreBounded) {
  PoolServerOptions so;
  so.pool_bytes = 1 << 20;
  so.token = token_;
  so.max_sessions_per_host = 2;
  auto server = PoolServer::Start(ctx_, so);
  ASSERT_OK(server);
  server_ = std::move(*server);
  auto a = Connect(token_);
  auto b = Connect(token_);
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = Connect(token_);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("too many sessions"), std::string::npos)
      << c.status().message();
  a->reset();
  EXPECT_TRUE(Eventually([&] { return server_->Stats().clients == 1; }));
  EXPECT_OK(Connect(token_));
}

}  // namespace
}  // namespace longctx::cache
