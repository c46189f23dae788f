// `longctx bench kvstore` (kvstore_bench.h). Every peer runs in the same invocation, on the same
// machine, moving the same block sizes: a `longctx store` child + this process's StoreClient,
// `ucx_perftest` server + client, and a private `redis-server` + hiredis. Children are started
// with posix_spawn and always reaped (SIGTERM, then SIGKILL after a deadline).
#include "longctx/bench/kvstore_bench.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "longctx/cache/kv_block.h"
#include "longctx/cache/store.h"
#include "longctx/core/byte_size.h"
#include "longctx/core/file.h"

extern char** environ;

namespace longctx::bench {

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// A child process, reaped by the destructor (SIGTERM, 5 s, SIGKILL).
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { Stop(); }

  Status Start(const std::vector<std::string>& args, const std::filesystem::path& log) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int rc = posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = -1;
      return Unavailable("cannot start {}: {}", args[0], std::strerror(rc));
    }
    log_ = log;
    return Status::Ok();
  }
  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      status_ = status;
      return false;
    }
    return true;
  }
  // Waits for exit until the deadline; false if still running.
  bool Wait(Clock::time_point deadline) {
    while (running()) {
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    if (!Wait(Clock::now() + 5s)) {
      kill(pid_, SIGKILL);
      (void)Wait(Clock::now() + 5s);
    }
  }
  int status() const { return status_; }
  std::string Log() const {
    std::ifstream in(log_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  std::filesystem::path log_;
};

Result<uint16_t> FreePort() {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd.get() < 0 || bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return ErrnoStatus(errno, "finding a free port");
  }
  return ntohs(addr.sin_port);
}

// True once some socket listens on `port` (from /proc/net/tcp; connecting to probe would be
// taken by ucx_perftest's server as its client).
bool Listening(uint16_t port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  const std::string want = fmt::format(":{:04X} ", port);
  while (std::getline(in, line)) {
    if (line.find(want) == 14 || line.find(want) == 15) {
      std::istringstream fields(line);
      std::string sl, local, remote, state;
      fields >> sl >> local >> remote >> state;
      if (state == "0A") return true;
    }
  }
  return false;
}

Status WaitListening(Child& child, uint16_t port, std::string_view what) {
  const auto deadline = Clock::now() + 20s;
  while (!Listening(port)) {
    if (!child.running()) return Unavailable("{} exited at start: {}", what, child.Log());
    if (Clock::now() >= deadline) return DeadlineExceeded("{} did not listen within 20 s", what);
    std::this_thread::sleep_for(10ms);
  }
  return Status::Ok();
}

// ---- ucx_perftest ------------------------------------------------------------------------------

// GB/s (1e9 bytes/s) of `test` (ucp_put_bw | ucp_get) at `bytes` per message, or nullopt when
// ucx_perftest is not installed (reported, not fatal).
Result<std::optional<double>> Perftest(const std::filesystem::path& dir, const std::string& test,
                                       uint64_t bytes, uint64_t iters) {
  ASSIGN_OR_RETURN(uint16_t port, FreePort());
  Child server, client;
  if (!server.Start({"ucx_perftest", "-p", std::to_string(port)}, dir / "perftest_server.log")
           .ok()) {
    return std::optional<double>();
  }
  RETURN_IF_ERROR(WaitListening(server, port, "ucx_perftest server"));
  RETURN_IF_ERROR(client.Start({"ucx_perftest", "127.0.0.1", "-p", std::to_string(port), "-t",
                                test, "-s", std::to_string(bytes), "-n", std::to_string(iters),
                                "-w", std::to_string(std::max<uint64_t>(iters / 10, 2)), "-f"},
                               dir / "perftest_client.log"));
  if (!client.Wait(Clock::now() + 180s)) return DeadlineExceeded("ucx_perftest ran over 180 s");
  (void)server.Wait(Clock::now() + 5s);
  // With -f it prints one row of numbers: iterations, overhead p50/avg/overall (us),
  // bandwidth avg/overall (MB/s = MiB/s), message rate avg/overall.
  const std::string log = client.Log();
  std::istringstream lines(log);
  std::string line;
  std::optional<double> bw_overall;
  while (std::getline(lines, line)) {
    if (line.rfind("Final:", 0) == 0) line = line.substr(6);
    std::istringstream fields(line);
    double v[6];
    bool ok = true;
    for (double& x : v) ok = ok && static_cast<bool>(fields >> x);
    if (ok) bw_overall = v[5];
  }
  if (!bw_overall) {
    return Internal("ucx_perftest {} {} bytes printed no result: {}", test, bytes,
                    log.substr(0, 300));
  }
  return std::optional<double>(*bw_overall * 1048576.0 / 1e9);  // its MB/s are MiB/s
}

// ---- Redis -------------------------------------------------------------------------------------

struct RedisDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using RedisPtr = std::unique_ptr<redisContext, RedisDeleter>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

Result<ReplyPtr> RedisReplyOf(redisContext* c) {
  void* raw = nullptr;
  if (redisGetReply(c, &raw) != REDIS_OK || raw == nullptr) {
    return Unavailable("redis: {}", c->errstr[0] != '\0' ? c->errstr : "no reply");
  }
  ReplyPtr reply(static_cast<redisReply*>(raw));
  if (reply->type == REDIS_REPLY_ERROR) return Internal("redis: {}", reply->str);
  return reply;
}

// ---- the store ---------------------------------------------------------------------------------

struct Point {
  std::string transport;
  uint64_t bytes = 0;  // encoded block bytes
  double put = 0, get = 0, put1 = 0, get1 = 0;  // GB/s: batched, and one block per call
  std::optional<double> perf_put, perf_get, redis_set, redis_get;
};

std::vector<std::vector<std::byte>> MakeBlocks(uint64_t target_bytes, size_t count,
                                               std::vector<cache::BlockKey>* keys) {
  // f32 blocks of 8 kv heads x 64 dims: 4 KiB of K+V per token.
  const int32_t tokens = static_cast<int32_t>(std::max<uint64_t>(target_bytes / 4096, 1));
  const cache::BlockShape shape{tokens, 8, 64};
  std::vector<float> k(static_cast<size_t>(shape.tokens * shape.row()));
  std::vector<float> v(k.size());
  std::mt19937 rng(target_bytes);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (float& x : k) x = dist(rng);
  for (float& x : v) x = dist(rng);
  std::vector<std::vector<std::byte>> blocks;
  keys->clear();
  for (size_t i = 0; i < count; ++i) {
    keys->push_back(cache::BlockKey{1, 0, i});
    auto encoded = cache::EncodeBlock(keys->back(), shape, cache::Codec::kF32, k, v);
    blocks.push_back(std::move(*encoded));
  }
  return blocks;
}

Status MeasureStore(const KvstoreBenchOptions& o, cache::StoreClient& client,
                    const std::vector<std::vector<std::byte>>& blocks,
                    const std::vector<cache::BlockKey>& keys, Point* p) {
  const uint64_t total = blocks.size() * blocks[0].size();
  const size_t batch = static_cast<size_t>(std::max(o.batch, 1));
  for (int rep = 0; rep < o.reps; ++rep) {
    auto t0 = Clock::now();
    for (size_t i = 0; i < blocks.size(); i += batch) {
      std::vector<cache::BlockRef> refs;
      for (size_t j = i; j < std::min(blocks.size(), i + batch); ++j) {
        refs.push_back({keys[j], blocks[j]});
      }
      RETURN_IF_ERROR(client.PutBatch(refs));
    }
    // Gets land in buffers reused across batches, as ucx_perftest reuses its buffer (fresh
    // pages would measure this VM's page faults: ~0.5 GB/s here).
    std::vector<std::vector<std::byte>> landing(batch, std::vector<std::byte>(blocks[0].size()));
    std::vector<std::span<std::byte>> spans(landing.begin(), landing.end());
    auto t1 = Clock::now();
    for (size_t i = 0; i < blocks.size(); i += batch) {
      const size_t n = std::min(blocks.size(), i + batch) - i;
      RETURN_IF_ERROR(client.GetBatchInto(
          std::span(keys).subspan(i, n), std::span<const std::span<std::byte>>(spans).first(n)));
    }
    auto t2 = Clock::now();
    if (landing[0] != blocks[blocks.size() - 1 - (blocks.size() - 1) % batch]) {
      return DataLoss("bench: a block came back different");
    }
    p->put = std::max(p->put, total / Seconds(t1 - t0) / 1e9);
    p->get = std::max(p->get, total / Seconds(t2 - t1) / 1e9);
    for (const auto& key : keys) RETURN_IF_ERROR(client.Erase(key));
    // One block per call: what a caller that does not batch sees (alloc round trip, put,
    // flush; get and verify).
    t0 = Clock::now();
    for (size_t i = 0; i < blocks.size(); ++i) RETURN_IF_ERROR(client.Put(keys[i], blocks[i]));
    t1 = Clock::now();
    for (size_t i = 0; i < blocks.size(); ++i) {
      ASSIGN_OR_RETURN(auto got, client.Get(keys[i]));
    }
    t2 = Clock::now();
    p->put1 = std::max(p->put1, total / Seconds(t1 - t0) / 1e9);
    p->get1 = std::max(p->get1, total / Seconds(t2 - t1) / 1e9);
    for (const auto& key : keys) RETURN_IF_ERROR(client.Erase(key));
  }
  return Status::Ok();
}

Status MeasureRedis(const KvstoreBenchOptions& o, redisContext* c,
                    const std::vector<std::vector<std::byte>>& blocks, Point* p) {
  const uint64_t total = blocks.size() * blocks[0].size();
  const size_t batch = static_cast<size_t>(std::max(o.batch, 1));
  double best_set = 0, best_get = 0;
  for (int rep = 0; rep < o.reps; ++rep) {
    auto t0 = Clock::now();
    for (size_t i = 0; i < blocks.size(); i += batch) {  // pipelined like a batch
      const size_t end = std::min(blocks.size(), i + batch);
      for (size_t j = i; j < end; ++j) {
        const std::string key = fmt::format("kv:{}", j);
        redisAppendCommand(c, "SET %b %b", key.data(), key.size(), blocks[j].data(),
                           blocks[j].size());
      }
      for (size_t j = i; j < end; ++j) RETURN_IF_ERROR(RedisReplyOf(c).status());
    }
    auto t1 = Clock::now();
    for (size_t i = 0; i < blocks.size(); i += batch) {
      const size_t end = std::min(blocks.size(), i + batch);
      for (size_t j = i; j < end; ++j) {
        const std::string key = fmt::format("kv:{}", j);
        redisAppendCommand(c, "GET %b", key.data(), key.size());
      }
      for (size_t j = i; j < end; ++j) {
        ASSIGN_OR_RETURN(ReplyPtr r, RedisReplyOf(c));
        if (r->type != REDIS_REPLY_STRING || r->len != static_cast<size_t>(blocks[j].size())) {
          return DataLoss("redis returned a wrong block");
        }
      }
    }
    auto t2 = Clock::now();
    best_set = std::max(best_set, total / Seconds(t1 - t0) / 1e9);
    best_get = std::max(best_get, total / Seconds(t2 - t1) / 1e9);
    ReplyPtr flushed(static_cast<redisReply*>(redisCommand(c, "FLUSHALL")));
  }
  p->redis_set = best_set;
  p->redis_get = best_get;
  return Status::Ok();
}

std::string Ratio(double ours, const std::optional<double>& peer) {
  if (!peer || *peer <= 0) return "-";
  return fmt::format("{:.2f}x", ours / *peer);
}
std::string Gbs(const std::optional<double>& v) {
  return v ? fmt::format("{:.2f}", *v) : std::string("-");
}

// ---- codecs ------------------------------------------------------------------------------------

struct CodecSpeed {
  std::string codec;
  double encode = 0, decode = 0;  // GB/s of fp32 K+V, one core
};

std::vector<CodecSpeed> MeasureCodecs() {
  const cache::BlockShape shape{256, 8, 128};  // 2 MiB of fp32 K+V
  std::vector<float> k(static_cast<size_t>(shape.tokens * shape.row())), v(k.size());
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (float& x : k) x = dist(rng);
  for (float& x : v) x = dist(rng);
  const double source = 2.0 * k.size() * sizeof(float);
  std::vector<CodecSpeed> out;
  for (cache::Codec codec : {cache::Codec::kF32, cache::Codec::kF16, cache::Codec::kBF16,
                             cache::Codec::kInt8}) {
    const cache::BlockKey key{0, 0, 0};
    CodecSpeed s{std::string(cache::CodecName(codec))};
    std::vector<std::byte> encoded;
    int n = 0;
    auto t0 = Clock::now();
    while (n < 3 || Clock::now() - t0 < 300ms) {
      encoded = *cache::EncodeBlock(key, shape, codec, k, v);
      ++n;
    }
    s.encode = n * source / Seconds(Clock::now() - t0) / 1e9;
    cache::BlockShape got;
    std::vector<float> dk, dv;
    n = 0;
    t0 = Clock::now();
    while (n < 3 || Clock::now() - t0 < 300ms) {
      (void)cache::DecodeBlock(encoded, key, &got, &dk, &dv);
      ++n;
    }
    s.decode = n * source / Seconds(Clock::now() - t0) / 1e9;
    out.push_back(s);
  }
  return out;
}

}  // namespace

Status RunKvstoreBench(const KvstoreBenchOptions& o) {
  std::vector<uint64_t> sizes;
  for (const auto& s : o.sizes) {
    ASSIGN_OR_RETURN(uint64_t b, ParseByteSize(s, "--sizes"));
    if (b < 4096) return InvalidArgument("--sizes: {} is below one 4 KiB token row", s);
    sizes.push_back(b);
  }
  ASSIGN_OR_RETURN(const uint64_t per_point, ParseByteSize(o.bytes_per_point, "--bytes"));
  for (const auto& t : o.transports) {
    if (t != "sm" && t != "tcp") return InvalidArgument("--transports: '{}' (sm or tcp)", t);
  }
  if (o.reps < 1 || o.batch < 1) return InvalidArgument("--reps and --batch must be >= 1");
  char tmpl[] = "/tmp/longctx_bench_kvstore_XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return ErrnoStatus(errno, "mkdtemp");
  const std::filesystem::path dir = tmpl;
  struct Cleanup {
    std::filesystem::path dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const uint64_t max_size = *std::max_element(sizes.begin(), sizes.end());
  const uint64_t pool = per_point + per_point / 4 + 4 * max_size + (64ull << 20);

  // Redis first (transport-independent): a private server on a free port, no persistence.
  Child redis;
  RedisPtr rc;
  if (o.redis) {
    ASSIGN_OR_RETURN(uint16_t port, FreePort());
    const Status started =
        redis.Start({"redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--protected-mode", "no",
                     "--dir", dir.string()},
                    dir / "redis.log");
    if (started.ok()) {
      const auto deadline = Clock::now() + 20s;
      while (Clock::now() < deadline && redis.running()) {
        timeval tv{5, 0};
        rc.reset(redisConnectWithTimeout("127.0.0.1", port, tv));
        if (rc && rc->err == 0) break;
        rc.reset();
        std::this_thread::sleep_for(20ms);
      }
      if (!rc) return Unavailable("redis-server did not answer: {}", redis.Log());
      timeval io{120, 0};
      redisSetTimeout(rc.get(), io);
    } else {
      fmt::print(stderr, "bench kvstore: redis-server not available ({}); Redis column skipped\n",
                 started.message());
    }
  }

  std::vector<Point> points;
  for (const std::string& tls : o.transports) {
    setenv("UCX_TLS", tls.c_str(), 1);  // this process's context and every child's
    Child store;
    const auto address_file = dir / ("store_" + tls + ".addr");
    const auto token_file = dir / "store.token";  // created by the first store, reused after
    RETURN_IF_ERROR(store.Start({self, "store", "--pool", std::to_string(pool), "--listen",
                                 "127.0.0.1:0", "--address-file", address_file.string(),
                                 "--token-file", token_file.string()},
                                dir / ("store_" + tls + ".log")));
    std::string address;
    const auto deadline = Clock::now() + 30s;
    while (address.empty()) {
      if (!store.running()) return Unavailable("longctx store exited: {}", store.Log());
      if (Clock::now() >= deadline) return DeadlineExceeded("longctx store not ready in 30 s");
      std::ifstream in(address_file);
      std::getline(in, address);
      if (address.empty()) std::this_thread::sleep_for(10ms);
    }
    ASSIGN_OR_RETURN(auto ctx, comm::ucx::Context::Create());
    cache::StoreClientOptions co;
    ASSIGN_OR_RETURN(const cache::StoreToken token, cache::ReadStoreToken(token_file.string()));
    co.pools = {cache::PoolTarget{address, token}};
    co.replicas = 1;
    co.timeout = std::chrono::milliseconds(120'000);
    co.verify_mac = o.mac;
    // The cost of a session: TCP connect, hello with the token check, UCX endpoints both ways,
    // one stats round trip (what authentication adds is in the hello only; docs/security.md).
    {
      std::vector<double> ms;
      for (int i = 0; i < 20; ++i) {
        const auto t0 = Clock::now();
        ASSIGN_OR_RETURN(std::shared_ptr<cache::StoreClient> probe,
                         cache::StoreClient::Connect(ctx, co));
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      fmt::print("{:>4} session setup (connect, authenticated hello, endpoints, stats): median "
                 "{:.2f} ms, max {:.2f} ms over 20\n", tls, ms[10], ms.back());
    }
    ASSIGN_OR_RETURN(std::shared_ptr<cache::StoreClient> client,
                     cache::StoreClient::Connect(ctx, co));
    for (uint64_t size : sizes) {
      std::vector<cache::BlockKey> keys;
      const size_t count = static_cast<size_t>(std::max<uint64_t>(per_point / size, 4));
      const auto blocks = MakeBlocks(size, count, &keys);
      Point p;
      p.transport = tls;
      p.bytes = blocks[0].size();
      RETURN_IF_ERROR(MeasureStore(o, *client, blocks, keys, &p));
      if (o.perftest) {
        const uint64_t iters = std::max<uint64_t>(per_point / p.bytes, 20);
        for (int rep = 0; rep < o.reps; ++rep) {
          ASSIGN_OR_RETURN(auto put, Perftest(dir, "ucp_put_bw", p.bytes, iters));
          ASSIGN_OR_RETURN(auto get, Perftest(dir, "ucp_get", p.bytes, iters));
          if (put) p.perf_put = std::max(p.perf_put.value_or(0), *put);
          if (get) p.perf_get = std::max(p.perf_get.value_or(0), *get);
        }
      }
      if (rc && tls == o.transports.front()) {
        RETURN_IF_ERROR(MeasureRedis(o, rc.get(), blocks, &p));
      } else if (rc) {
        for (const Point& q : points) {
          if (q.bytes == p.bytes && q.redis_set) p.redis_set = q.redis_set, p.redis_get = q.redis_get;
        }
      }
      fmt::print("{:>4} {:>9} put {:6.2f} GB/s (1/call {:6.2f}) get {:6.2f} GB/s (1/call "
                 "{:6.2f}) | perftest put {:>6} get {:>6} | redis set {:>6} get {:>6}\n",
                 tls, FormatByteSize(p.bytes), p.put, p.put1, p.get, p.get1, Gbs(p.perf_put),
                 Gbs(p.perf_get), Gbs(p.redis_set), Gbs(p.redis_get));
      std::fflush(stdout);
      points.push_back(p);
    }
    client.reset();
    store.Stop();
  }
  if (rc) {
    rc.reset();
    redis.Stop();
  }
  const std::vector<CodecSpeed> codecs = MeasureCodecs();

  std::string table =
      "| transport | block | put GB/s | get GB/s | put 1/call | get 1/call | perftest put | "
      "perftest get | put / perftest | get / perftest | redis SET | redis GET | put / redis | "
      "get / redis |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Point& p : points) {
    table += fmt::format("| {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {} | {} | {} | {} | {} "
                         "| {} | {} | {} |\n",
                         p.transport, FormatByteSize(p.bytes), p.put, p.get, p.put1, p.get1,
                         Gbs(p.perf_put), Gbs(p.perf_get), Ratio(p.put, p.perf_put),
                         Ratio(p.get, p.perf_get), Gbs(p.redis_set), Gbs(p.redis_get),
                         Ratio(p.put, p.redis_set), Ratio(p.get, p.redis_get));
  }
  table += "\n| codec | encode GB/s (1 core) | decode GB/s (1 core) |\n|---|---|---|\n";
  for (const CodecSpeed& c : codecs) {
    table += fmt::format("| {} | {:.2f} | {:.2f} |\n", c.codec, c.encode, c.decode);
  }
  fmt::print("\n{}", table);
  if (!o.json.empty()) {
    std::string json = "{\"points\": [";
    for (size_t i = 0; i < points.size(); ++i) {
      const Point& p = points[i];
      auto num = [](const std::optional<double>& v) {
        return v ? fmt::format("{:.4f}", *v) : std::string("null");
      };
      json += fmt::format(
          "{}{{\"transport\": \"{}\", \"bytes\": {}, \"put\": {:.4f}, \"get\": {:.4f}, "
          "\"put_1\": {:.4f}, \"get_1\": {:.4f}, \"perftest_put\": {}, \"perftest_get\": {}, "
          "\"redis_set\": {}, \"redis_get\": {}}}",
          i ? ", " : "", p.transport, p.bytes, p.put, p.get, p.put1, p.get1, num(p.perf_put),
          num(p.perf_get), num(p.redis_set), num(p.redis_get));
    }
    json += "], \"codecs\": [";
    for (size_t i = 0; i < codecs.size(); ++i) {
      json += fmt::format("{}{{\"codec\": \"{}\", \"encode\": {:.4f}, \"decode\": {:.4f}}}",
                          i ? ", " : "", codecs[i].codec, codecs[i].encode, codecs[i].decode);
    }
    json += "]}\n";
    RETURN_IF_ERROR(WriteFileAtomically(o.json, json).WithContext("--json"));
  }
  return Status::Ok();
}

}  // namespace longctx::bench
