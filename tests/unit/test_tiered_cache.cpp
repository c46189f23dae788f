// TieredKvCache against a plain reference (the appended rows kept in std::vectors): Scan and
// Gather return the rows appended — bitwise for f32, within the codec's error otherwise — for
// budgets from unlimited to the persistent set plus two blocks, with and without a remote tier;
// the callback sequence does not depend on the budgets; no tier ever exceeds its budget (sampled
// from a second thread); the persistent set stays resident; prefetch turns misses into hits;
// Truncate; a corrupt remote block and impossible budgets are clear errors; and int8 K/V give
// attention within 1e-2 of fp32.
#include "longctx/cache/tiered_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <thread>

#include "longctx/attention/reference.h"
#include "longctx/test/status_matchers.h"

namespace longctx::cache {
namespace {

using Clock = std::chrono::steady_clock;

struct Geometry {
  int32_t layers = 3, kv_heads = 2, head_dim = 8, block_tokens = 16;
  int64_t rows = 325;  // 20 full blocks and a partial one per layer
  int64_t row() const { return int64_t(kv_heads) * head_dim; }
  uint64_t device_block_bytes() const { return uint64_t(block_tokens) * uint64_t(row()) * 8; }
  uint64_t encoded_block_bytes(Codec c) const {
    return EncodedBytes(BlockShape{block_tokens, kv_heads, head_dim}, c);
  }
};

// The reference: every layer's K and V rows as appended, [rows][row] floats.
struct Reference {
  std::vector<std::vector<float>> k, v;
};

// Keys with outlier channels and values with loud tokens, as KIVI observes (and as the int8
// codec's per-channel / per-token scales are built for).
void FillRows(const Geometry& g, uint64_t seed, int64_t n, std::vector<float>* k,
              std::vector<float>* v) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t row = g.row();
  k->resize(size_t(n * row));
  v->resize(size_t(n * row));
  for (int64_t i = 0; i < n * row; ++i) {
    (*k)[size_t(i)] = nd(rng) * (1.0f + float(i % row % 5));
    (*v)[size_t(i)] = nd(rng) * (1.0f + float(i / row % 3));
  }
}

Reference MakeReference(const Geometry& g, uint64_t seed) {
  Reference r;
  r.k.resize(size_t(g.layers));
  r.v.resize(size_t(g.layers));
  for (int32_t l = 0; l < g.layers; ++l) FillRows(g, seed * 131 + uint64_t(l), g.rows, &r.k[size_t(l)], &r.v[size_t(l)]);
  return r;
}

// Appends rows [from, to) of every layer in uneven chunks, layer by layer (as prefill does).
Status AppendRange(TieredKvCache* cache, const Geometry& g, const Reference& r, int64_t from,
                   int64_t to) {
  static constexpr int64_t kChunks[] = {7, 33, 1, 64, 16, 5, 40};
  for (int32_t l = 0; l < g.layers; ++l) {
    int64_t row = from;
    for (size_t i = 0; row < to; ++i) {
      const int64_t n = std::min(kChunks[i % 7], to - row);
      const size_t off = size_t(row * g.row());
      RETURN_IF_ERROR(cache->Append(l, r.k[size_t(l)].data() + off, r.v[size_t(l)].data() + off, n));
      row += n;
    }
  }
  return Status::Ok();
}

// The largest error the codec may introduce at element (row, c) of K (is_k) or V of a layer:
// 0 for f32; rounding for f16/bf16; half a quantization step for int8 (key scale per channel over
// the row's block, value scale per (token, kv head)).
double Tolerance(Codec codec, const Geometry& g, const std::vector<float>& ref, int64_t rows,
                 int64_t r, int64_t c, bool is_k) {
  const float x = std::fabs(ref[size_t(r * g.row() + c)]);
  switch (codec) {
    case Codec::kF32: return 0.0;
    case Codec::kF16: return x * 1e-3 + 1e-7;
    case Codec::kBF16: return x * 8e-3 + 1e-30;
    case Codec::kInt8: {
      float m = 0;
      if (is_k) {
        const int64_t b0 = r / g.block_tokens * g.block_tokens, b1 = std::min(b0 + g.block_tokens, rows);
        for (int64_t t = b0; t < b1; ++t) m = std::max(m, std::fabs(ref[size_t(t * g.row() + c)]));
      } else {
        const int64_t h0 = c / g.head_dim * g.head_dim;
        for (int64_t e = h0; e < h0 + g.head_dim; ++e) m = std::max(m, std::fabs(ref[size_t(r * g.row() + e)]));
      }
      return m / 127.0 * 0.5001;
    }
  }
  return 0.0;
}

void ExpectRow(Codec codec, const Geometry& g, const Reference& ref, int32_t layer, int64_t r,
               const float* k, const float* v, int64_t rows) {
  const auto& rk = ref.k[size_t(layer)];
  const auto& rv = ref.v[size_t(layer)];
  if (codec == Codec::kF32) {
    ASSERT_EQ(std::memcmp(k, rk.data() + r * g.row(), size_t(g.row()) * 4), 0)
        << "K of layer " << layer << " row " << r << " differs bitwise";
    ASSERT_EQ(std::memcmp(v, rv.data() + r * g.row(), size_t(g.row()) * 4), 0)
        << "V of layer " << layer << " row " << r << " differs bitwise";
    return;
  }
  for (int64_t c = 0; c < g.row(); ++c) {
    ASSERT_NEAR(k[c], rk[size_t(r * g.row() + c)], Tolerance(codec, g, rk, rows, r, c, true))
        << "K layer " << layer << " row " << r << " col " << c;
    ASSERT_NEAR(v[c], rv[size_t(r * g.row() + c)], Tolerance(codec, g, rv, rows, r, c, false))
        << "V layer " << layer << " row " << r << " col " << c;
  }
}

using Calls = std::vector<std::pair<int64_t, int64_t>>;

// Scans [begin, end) of `layer`, checks every row against the reference and the blocks' order,
// and appends the (first_row, count) sequence to *calls.
void CheckScan(TieredKvCache* cache, Codec codec, const Geometry& g, const Reference& ref,
               int32_t layer, int64_t begin, int64_t end, Calls* calls) {
  int64_t next = begin;
  const int64_t rows = cache->rows(layer);
  Status s = cache->Scan(layer, begin, end, [&](int64_t first, int64_t count, const float* k,
                                                const float* v) -> Status {
    EXPECT_EQ(first, next);
    EXPECT_GT(count, 0);
    // Never across a block boundary.
    EXPECT_EQ(first / g.block_tokens, (first + count - 1) / g.block_tokens);
    for (int64_t i = 0; i < count; ++i) {
      ExpectRow(codec, g, ref, layer, first + i, k + i * g.row(), v + i * g.row(), rows);
    }
    next = first + count;
    calls->emplace_back(first, count);
    return Status::Ok();
  });
  ASSERT_OK(s);
  EXPECT_EQ(next, end);
}

void CheckGather(TieredKvCache* cache, Codec codec, const Geometry& g, const Reference& ref,
                 int32_t layer, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> rows;
  const int64_t n = cache->rows(layer);
  for (int64_t r = 0; r < n; ++r) {
    if (rng() % 5 == 0) rows.push_back(r);
  }
  std::vector<float> k(rows.size() * size_t(g.row())), v(k.size());
  Status s = cache->Gather(layer, rows, k.data(), v.data());
  ASSERT_OK(s);
  for (size_t i = 0; i < rows.size(); ++i) {
    ExpectRow(codec, g, ref, layer, rows[i], k.data() + i * size_t(g.row()),
              v.data() + i * size_t(g.row()), n);
  }
}

const std::vector<int64_t> kPersistent = {0, 3, 100, 250};
constexpr int64_t kWindow = 20;

// Device bytes of the persistent set at its largest (pinned blocks, the window's blocks and the
// tail of every layer) plus two streaming blocks: the smallest budget the contract promises.
uint64_t TinyDeviceBudget(const Geometry& g) {
  std::set<int64_t> pinned;
  for (int64_t r : kPersistent) pinned.insert(r / g.block_tokens);
  const int64_t per_layer = int64_t(pinned.size()) + kWindow / g.block_tokens + 2;
  return uint64_t(per_layer * g.layers + 2) * g.device_block_bytes();
}

struct Budgets {
  const char* name;
  bool remote;
  KvCacheOptions options;
};

std::vector<Budgets> AllBudgets(const Geometry& g, Codec codec) {
  std::vector<Budgets> out;
  for (bool remote : {false, true}) {
    KvCacheOptions o;
    o.block_tokens = g.block_tokens;
    o.codec = codec;
    out.push_back({"unlimited", remote, o});
    o.device_budget = 30 * g.device_block_bytes();
    if (remote) o.host_budget = 10 * g.encoded_block_bytes(codec);
    out.push_back({"medium", remote, o});
    o.device_budget = TinyDeviceBudget(g);
    if (remote) o.host_budget = 3 * g.encoded_block_bytes(codec);
    out.push_back({"tiny", remote, o});
  }
  return out;
}

void ExpectWithinBudgets(const KvCacheStats& s, const KvCacheOptions& o) {
  EXPECT_LE(s.device.bytes, o.device_budget);
  EXPECT_LE(s.host.bytes, o.host_budget);
  EXPECT_LE(s.remote.bytes, o.remote_budget);
  EXPECT_LE(s.device.peak_bytes, o.device_budget);
  EXPECT_LE(s.host.peak_bytes, o.host_budget);
  EXPECT_LE(s.remote.peak_bytes, o.remote_budget);
}

TEST(TieredKvCache, ScanAndGatherReturnTheAppendedRowsForEveryCodecAndBudget) {
  const Geometry g;
  const Reference ref = MakeReference(g, 7);
  for (Codec codec : {Codec::kF32, Codec::kF16, Codec::kBF16, Codec::kInt8}) {
    std::vector<Calls> sequences;
    for (const Budgets& b : AllBudgets(g, codec)) {
      SCOPED_TRACE(fmt::format("codec {} budgets {} remote {}", CodecName(codec), b.name, b.remote));
      auto remote = b.remote ? std::make_shared<MemoryRemoteTier>(uint64_t{1} << 30) : nullptr;
      auto cache = TieredKvCache::Create(b.options, g.layers, g.kv_heads, g.head_dim, 42, remote);
      ASSERT_OK(cache);
      TieredKvCache* c = cache->get();
      ASSERT_OK(c->SetPersistent(kPersistent, kWindow));
      Status s = AppendRange(c, g, ref, 0, g.rows);
      ASSERT_OK(s);
      ASSERT_OK(c->Flush());
      Calls calls;
      for (int32_t l = 0; l < g.layers; ++l) {
        EXPECT_EQ(c->rows(l), g.rows);
        CheckScan(c, codec, g, ref, l, 0, g.rows, &calls);
        CheckScan(c, codec, g, ref, l, 17, 250, &calls);  // starts and ends inside blocks
        CheckScan(c, codec, g, ref, l, 300, 300, &calls);  // empty
        CheckGather(c, codec, g, ref, l, uint64_t(l));
      }
      // Scan in reverse layer order too (an access order LRU handles worst).
      for (int32_t l = g.layers - 1; l >= 0; --l) CheckScan(c, codec, g, ref, l, 0, g.rows, &calls);
      ASSERT_OK(c->Flush());
      const KvCacheStats st = c->Stats();
      ExpectWithinBudgets(st, b.options);
      if (std::string(b.name) == "unlimited") {
        EXPECT_EQ(st.demotions, 0u);
        EXPECT_EQ(st.loads, 0u);
      } else {
        EXPECT_GT(st.demotions, 0u);
        EXPECT_GT(st.loads, 0u);
        EXPECT_GT(st.prefetch_misses, 0u);
      }
      if (std::string(b.name) == "tiny" && b.remote) {
        EXPECT_GT(st.remote.peak_bytes, 0u) << "the tiny host budget should spill to remote";
      }
      sequences.push_back(std::move(calls));
    }
    for (size_t i = 1; i < sequences.size(); ++i) {
      EXPECT_EQ(sequences[i], sequences[0]) << "callback sequence differs for budget set " << i;
    }
  }
}

TEST(TieredKvCache, NoTierAboveItsBudgetWhileSampled) {
  Geometry g;
  g.layers = 4;
  g.rows = 2000;
  const Reference ref = MakeReference(g, 11);
  KvCacheOptions o;
  o.block_tokens = g.block_tokens;
  o.codec = Codec::kInt8;
  o.device_budget = TinyDeviceBudget(g);
  o.host_budget = 8 * g.encoded_block_bytes(o.codec);
  o.remote_budget = 600 * g.encoded_block_bytes(o.codec);
  auto remote = std::make_shared<MemoryRemoteTier>(uint64_t{1} << 30);
  auto cache = TieredKvCache::Create(o, g.layers, g.kv_heads, g.head_dim, 5, remote);
  ASSERT_OK(cache);
  TieredKvCache* c = cache->get();
  ASSERT_OK(c->SetPersistent(kPersistent, kWindow));

  std::atomic<bool> done{false};
  std::atomic<int64_t> samples{0}, violations{0};
  std::thread sampler([&] {
    while (!done.load()) {
      const KvCacheStats s = c->Stats();
      if (s.device.bytes > o.device_budget || s.host.bytes > o.host_budget ||
          s.remote.bytes > o.remote_budget) {
        ++violations;
      }
      ++samples;
    }
  });
  Status s = AppendRange(c, g, ref, 0, g.rows);
  Calls calls;
  for (int32_t l = 0; s.ok() && l < g.layers; ++l) {
    c->Prefetch((l + 1) % g.layers, 0, g.rows);
    CheckScan(c, o.codec, g, ref, l, 0, g.rows, &calls);
  }
  done = true;
  sampler.join();
  ASSERT_OK(s);
  ASSERT_OK(c->Flush());
  EXPECT_EQ(violations.load(), 0) << "of " << samples.load() << " samples";
  EXPECT_GT(samples.load(), 100);
  const KvCacheStats st = c->Stats();
  ExpectWithinBudgets(st, o);
  EXPECT_GT(st.remote.peak_bytes, 0u);
  EXPECT_GT(st.demotions, 0u);
}

TEST(TieredKvCache, PersistentBlocksAndTheLastWindowStayResident) {
  const Geometry g;
  const Reference ref = MakeReference(g, 3);
  KvCacheOptions o;
  o.block_tokens = g.block_tokens;
  o.device_budget = TinyDeviceBudget(g);
  auto cache = TieredKvCache::Create(o, g.layers, g.kv_heads, g.head_dim, 1, nullptr);
  ASSERT_OK(cache);
  TieredKvCache* c = cache->get();
  ASSERT_OK(c->SetPersistent(kPersistent, kWindow));
  ASSERT_OK(AppendRange(c, g, ref, 0, g.rows));
  Calls calls;
  // Stream every layer through the tiny budget, then read only the persistent set.
  for (int32_t l = 0; l < g.layers; ++l) CheckScan(c, o.codec, g, ref, l, 0, g.rows, &calls);
  ASSERT_OK(c->Flush());
  const KvCacheStats before = c->Stats();
  EXPECT_GT(before.loads, 0u);
  for (int32_t l = 0; l < g.layers; ++l) {
    for (int64_t r : kPersistent) CheckScan(c, o.codec, g, ref, l, r, r + 1, &calls);
    CheckScan(c, o.codec, g, ref, l, g.rows - kWindow, g.rows, &calls);
  }
  const KvCacheStats after = c->Stats();
  EXPECT_EQ(after.loads, before.loads);
  EXPECT_EQ(after.prefetch_misses, before.prefetch_misses);

  // A row pinned later brings its block back and keeps it.
  c->Pin(40);
  ASSERT_OK(c->Flush());
  for (int32_t l = 0; l < g.layers; ++l) CheckScan(c, o.codec, g, ref, l, 1, g.rows - 1, &calls);
  ASSERT_OK(c->Flush());
  const KvCacheStats mid = c->Stats();
  for (int32_t l = 0; l < g.layers; ++l) CheckScan(c, o.codec, g, ref, l, 40, 41, &calls);
  EXPECT_EQ(c->Stats().loads, mid.loads);
}

TEST(TieredKvCache, PrefetchThenScanHitsAndScanWithoutPrefetchMisses) {
  const Geometry g;
  const Reference ref = MakeReference(g, 5);
  for (bool remote_tier : {false, true}) {
    SCOPED_TRACE(remote_tier ? "remote" : "host only");
    KvCacheOptions o;
    o.block_tokens = g.block_tokens;
    o.codec = Codec::kInt8;
    // Room for the persistent set and one whole layer (half the budget may be prefetched), not
    // for all three layers.
    o.device_budget = 44 * g.device_block_bytes();
    if (remote_tier) o.host_budget = 4 * g.encoded_block_bytes(o.codec);
    auto remote = remote_tier ? std::make_shared<MemoryRemoteTier>(uint64_t{1} << 30) : nullptr;
    auto cache = TieredKvCache::Create(o, g.layers, g.kv_heads, g.head_dim, 2, remote);
    ASSERT_OK(cache);
    TieredKvCache* c = cache->get();
    ASSERT_OK(c->SetPersistent(kPersistent, kWindow));
    ASSERT_OK(AppendRange(c, g, ref, 0, g.rows));
    ASSERT_OK(c->Flush());
    const KvCacheStats s0 = c->Stats();
    EXPECT_GT(s0.demotions, 0u);

    c->Prefetch(0, 0, g.rows);  // layer 0 was appended first: the most demoted
    ASSERT_OK(c->Flush());
    const KvCacheStats s1 = c->Stats();
    EXPECT_GT(s1.loads, s0.loads);
    Calls calls;
    CheckScan(c, o.codec, g, ref, 0, 0, g.rows, &calls);
    const KvCacheStats s2 = c->Stats();
    EXPECT_EQ(s2.prefetch_misses, s0.prefetch_misses) << "every demoted block was prefetched";
    EXPECT_EQ(s2.prefetch_hits - s0.prefetch_hits, s1.loads - s0.loads);
    EXPECT_EQ(s2.loads, s1.loads);

    // Layer 1 without a prefetch: its demoted blocks are misses, loaded by Scan itself.
    CheckScan(c, o.codec, g, ref, 1, 0, g.rows, &calls);
    const KvCacheStats s3 = c->Stats();
    EXPECT_EQ(s3.prefetch_hits, s2.prefetch_hits);
    EXPECT_GT(s3.prefetch_misses, s2.prefetch_misses);
    EXPECT_EQ(s3.loads - s2.loads, s3.prefetch_misses - s2.prefetch_misses);
    EXPECT_GE(s3.stall_seconds, s2.stall_seconds);
    ExpectWithinBudgets(s3, o);
  }
}

TEST(TieredKvCache, TruncateThenAppend) {
  const Geometry g;
  const Reference ref = MakeReference(g, 9);
  const Reference other = MakeReference(g, 10);
  for (int64_t cut : {int64_t{100}, int64_t{96}, int64_t{0}, int64_t{324}}) {
    for (Codec codec : {Codec::kF32, Codec::kInt8}) {
      SCOPED_TRACE(fmt::format("cut {} codec {}", cut, CodecName(codec)));
      KvCacheOptions o;
      o.block_tokens = g.block_tokens;
      o.codec = codec;
      o.device_budget = TinyDeviceBudget(g);
      o.host_budget = 3 * g.encoded_block_bytes(codec);
      auto remote = std::make_shared<MemoryRemoteTier>(uint64_t{1} << 30);
      auto cache = TieredKvCache::Create(o, g.layers, g.kv_heads, g.head_dim, 4, remote);
      ASSERT_OK(cache);
      TieredKvCache* c = cache->get();
      ASSERT_OK(c->SetPersistent(kPersistent, kWindow));
      ASSERT_OK(AppendRange(c, g, ref, 0, g.rows));
      ASSERT_OK(c->Flush());
      ASSERT_OK(c->Truncate(cut));
      ASSERT_OK(c->Truncate(g.rows + 5));  // beyond the end: nothing to drop
      // The expected content: ref's rows below the cut, then other's rows.
      Reference want = ref;
      for (int32_t l = 0; l < g.layers; ++l) {
        EXPECT_EQ(c->rows(l), cut);
        const size_t off = size_t(cut * g.row());
        std::copy(other.k[size_t(l)].begin() + off, other.k[size_t(l)].end(), want.k[size_t(l)].begin() + off);
        std::copy(other.v[size_t(l)].begin() + off, other.v[size_t(l)].end(), want.v[size_t(l)].begin() + off);
      }
      ASSERT_OK(AppendRange(c, g, other, cut, g.rows));
      ASSERT_OK(c->Flush());
      Calls calls;
      for (int32_t l = 0; l < g.layers; ++l) {
        EXPECT_EQ(c->rows(l), g.rows);
        CheckScan(c, codec, g, want, l, 0, g.rows, &calls);
        CheckGather(c, codec, g, want, l, 99);
      }
      ASSERT_OK(c->Flush());
      const KvCacheStats st = c->Stats();
      ExpectWithinBudgets(st, o);
      // The remote tier holds exactly the blocks the cache thinks it placed there.
      EXPECT_EQ(remote->Stats().used_bytes, st.remote.bytes);
      EXPECT_EQ(remote->Stats().blocks, st.remote.blocks);
    }
  }
}

TEST(TieredKvCache, CorruptRemoteBlockIsDataLossNamingTheBlock) {
  const Geometry g;
  const Reference ref = MakeReference(g, 13);
  KvCacheOptions o;
  o.block_tokens = g.block_tokens;
  o.codec = Codec::kBF16;
  o.device_budget = TinyDeviceBudget(g);
  o.host_budget = 2 * g.encoded_block_bytes(o.codec);
  auto remote = std::make_shared<MemoryRemoteTier>(uint64_t{1} << 30);
  auto cache = TieredKvCache::Create(o, g.layers, g.kv_heads, g.head_dim, 77, remote);
  ASSERT_OK(cache);
  TieredKvCache* c = cache->get();
  ASSERT_OK(c->SetPersistent(kPersistent, kWindow));
  ASSERT_OK(AppendRange(c, g, ref, 0, g.rows));
  ASSERT_OK(c->Flush());
  // The first block of layer 0 that sits in the remote tier.
  BlockKey bad{77, 0, 0};
  bool found = false;
  for (uint64_t b = 0; b < 21 && !found; ++b) {
    bad.block = b;
    found = remote->CorruptForTest(bad, 100).ok();
  }
  ASSERT_TRUE(found);
  int64_t visited_after = -1;
  Status s = c->Scan(0, 0, g.rows, [&](int64_t first, int64_t, const float*, const float*) {
    visited_after = first;
    return Status::Ok();
  });
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  EXPECT_NE(s.message().find(bad.ToString()), std::string::npos) << s.ToString();
  EXPECT_LT(visited_after, int64_t(bad.block) * g.block_tokens) << "no callback past the bad block";
  // Other layers still read correctly.
  Calls calls;
  CheckScan(c, o.codec, g, ref, 1, 0, g.rows, &calls);
}

// Random interleavings of every call (appends of any size to any layer, truncates, pins,
// prefetches, scans, gathers, flushes) under small budgets, checked against the reference after
// every read, with the tiers checked against their budgets at every flush.
TEST(TieredKvCache, RandomOperationsMatchTheReference) {
  uint64_t demotions = 0, loads = 0, hits = 0, remote_peak = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    // Not int8 here: a truncate into a demoted int8 block re-quantizes its kept rows with the new
    // block's scales (bf16/f16 values re-encode exactly), beyond the single-step bound checked.
    const Codec codec = seed % 3 == 0 ? Codec::kBF16 : Codec::kF32;
    const bool with_remote = seed % 2 == 0;
    SCOPED_TRACE(fmt::format("seed {} codec {} remote {}", seed, CodecName(codec), with_remote));
    std::mt19937_64 rng(seed);
    Geometry g;
    g.rows = 700;  // the most rows a layer reaches
    const Reference src = MakeReference(g, seed + 100);
    KvCacheOptions o;
    o.block_tokens = g.block_tokens;
    o.codec = codec;
    // Persistent set: kPersistent, up to 3 more pinned rows, the window; plus 2 blocks.
    o.device_budget = TinyDeviceBudget(g) + uint64_t(3 * g.layers + int(seed % 4) * 5) * g.device_block_bytes();
    if (with_remote) o.host_budget = (2 + seed % 5) * g.encoded_block_bytes(codec);
    auto remote = with_remote ? std::make_shared<MemoryRemoteTier>(uint64_t{1} << 30) : nullptr;
    auto cache = TieredKvCache::Create(o, g.layers, g.kv_heads, g.head_dim, seed, remote);
    ASSERT_OK(cache);
    TieredKvCache* c = cache->get();
    ASSERT_OK(c->SetPersistent(kPersistent, kWindow));
    // want: what each layer must hold (its rows come from src at a rotating offset, so a
    // re-append after a truncate brings different values than the first time).
    Reference want;
    want.k.resize(size_t(g.layers));
    want.v.resize(size_t(g.layers));
    int pins = 0;
    for (int step = 0; step < 150; ++step) {
      const int32_t l = int32_t(rng() % uint64_t(g.layers));
      const int64_t have = int64_t(want.k[size_t(l)].size()) / g.row();
      switch (rng() % 8) {
        case 0:
        case 1: {  // append
          const int64_t n = std::min<int64_t>(int64_t(rng() % 70), g.rows - have);
          const int64_t from = int64_t(rng() % uint64_t(g.rows - n + 1));
          const float* k = src.k[size_t(l)].data() + from * g.row();
          const float* v = src.v[size_t(l)].data() + from * g.row();
          Status s = c->Append(l, k, v, n);
          ASSERT_OK(s);
          want.k[size_t(l)].insert(want.k[size_t(l)].end(), k, k + n * g.row());
          want.v[size_t(l)].insert(want.v[size_t(l)].end(), v, v + n * g.row());
          break;
        }
        case 2: {  // truncate every layer
          if (rng() % 3 != 0) break;
          const int64_t to = int64_t(rng() % uint64_t(g.rows));
          ASSERT_OK(c->Truncate(to));
          for (int32_t m = 0; m < g.layers; ++m) {
            const size_t keep = std::min(want.k[size_t(m)].size(), size_t(to * g.row()));
            want.k[size_t(m)].resize(keep);
            want.v[size_t(m)].resize(keep);
          }
          break;
        }
        case 3:
          if (pins < 3) {
            c->Pin(int64_t(rng() % uint64_t(g.rows)));
            ++pins;
          }
          break;
        case 4: {
          const int64_t b = int64_t(rng() % uint64_t(have + 1));
          c->Prefetch(l, b, b + int64_t(rng() % 300));
          break;
        }
        case 5:
        case 6: {  // scan a random range
          ASSERT_EQ(c->rows(l), have);
          const int64_t b = int64_t(rng() % uint64_t(have + 1));
          const int64_t e = b + int64_t(rng() % uint64_t(have - b + 1));
          Calls calls;
          CheckScan(c, codec, g, want, l, b, e, &calls);
          break;
        }
        case 7:
          if (rng() % 2) {
            CheckGather(c, codec, g, want, l, rng());
          } else {
            ASSERT_OK(c->Flush());
            ExpectWithinBudgets(c->Stats(), o);
          }
          break;
      }
      if (HasFatalFailure() || HasFailure()) return;
    }
    ASSERT_OK(c->Flush());
    ExpectWithinBudgets(c->Stats(), o);
    if (remote) {
      EXPECT_EQ(remote->Stats().used_bytes, c->Stats().remote.bytes);
    }
    demotions += c->Stats().demotions;
    loads += c->Stats().loads;
    hits += c->Stats().prefetch_hits;
    remote_peak = std::max(remote_peak, c->Stats().remote.peak_bytes);
  }
  // The budgets were small enough for every path to run.
  EXPECT_GT(demotions, 100u);
  EXPECT_GT(loads, 100u);
  EXPECT_GT(hits, 0u);
  EXPECT_GT(remote_peak, 0u);
  std::printf("[ metric   ] random operations: %llu demotions, %llu loads, %llu prefetch hits\n",
              static_cast<unsigned long long>(demotions), static_cast<unsigned long long>(loads),
              static_cast<unsigned long long>(hits));
}

// A remote tier whose store process "dies" after `healthy_puts` puts: every later call is
// kUnavailable (what the UCX store returns for a lost peer).
class DyingRemoteTier final : public RemoteTier {
 public:
  explicit DyingRemoteTier(int healthy_puts) : left_(healthy_puts), inner_(uint64_t{1} << 30) {}
  Status Put(const BlockKey& key, std::span<const std::byte> encoded) override {
    if (left_.fetch_sub(1) <= 0) return Unavailable("store process gone (put {})", key.ToString());
    return inner_.Put(key, encoded);
  }
  Result<std::vector<std::byte>> Get(const BlockKey& key) override {
    if (left_.load() <= 0) return Unavailable("store process gone: {} has no holder", key.ToString());
    return inner_.Get(key);
  }
  Status Erase(const BlockKey& key) override { return inner_.Erase(key); }
  RemoteTierStats Stats() const override { return inner_.Stats(); }

 private:
  std::atomic<int> left_;
  MemoryRemoteTier inner_;
};

TEST(TieredKvCache, LostRemoteTierIsAnErrorNamingTheBlockNeverAHang) {
  const Geometry g;
  const Reference ref = MakeReference(g, 19);
  KvCacheOptions o;
  o.block_tokens = g.block_tokens;
  o.device_budget = TinyDeviceBudget(g);
  o.host_budget = 2 * g.encoded_block_bytes(o.codec);
  auto remote = std::make_shared<DyingRemoteTier>(5);
  auto cache = TieredKvCache::Create(o, g.layers, g.kv_heads, g.head_dim, 3, remote);
  ASSERT_OK(cache);
  TieredKvCache* c = cache->get();
  ASSERT_OK(c->SetPersistent(kPersistent, kWindow));
  const auto t0 = Clock::now();
  Status s = AppendRange(c, g, ref, 0, g.rows);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("seq 3 layer"), std::string::npos) << s.ToString();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 20.0);
  // Layer 0's blocks in the dead store cannot be read back: an error naming one, not garbage.
  s = c->Scan(0, 0, c->rows(0), [](int64_t, int64_t, const float*, const float*) { return Status::Ok(); });
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("seq 3 layer 0 block"), std::string::npos) << s.ToString();
}

// An impossible budget ends the call that needs it, quickly, naming the flag to raise.
void ExpectExhausted(const KvCacheOptions& o, std::shared_ptr<RemoteTier> remote, int64_t window,
                     const char* flag) {
  const Geometry g;
  const Reference ref = MakeReference(g, 17);
  const auto t0 = Clock::now();
  auto cache = TieredKvCache::Create(o, g.layers, g.kv_heads, g.head_dim, 8, remote);
  Status s = cache.status();
  if (cache.ok()) {
    TieredKvCache* c = cache->get();
    EXPECT_OK(c->SetPersistent(kPersistent, window));
    s = AppendRange(c, g, ref, 0, g.rows);
    if (s.ok()) {
      Calls calls;
      s = c->Scan(0, 0, g.rows, [](int64_t, int64_t, const float*, const float*) { return Status::Ok(); });
    }
  }
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_NE(s.message().find(flag), std::string::npos) << s.ToString();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 20.0);
}

TEST(TieredKvCache, ImpossibleBudgetsAreResourceExhaustedNamingTheFlag) {
  const Geometry g;
  KvCacheOptions o;
  o.block_tokens = g.block_tokens;
  o.codec = Codec::kF16;
  {
    SCOPED_TRACE("device below two blocks");
    KvCacheOptions t = o;
    t.device_budget = g.device_block_bytes() + 1;
    ExpectExhausted(t, nullptr, kWindow, "--kv-device-budget");
  }
  {
    SCOPED_TRACE("device below the persistent set");
    KvCacheOptions t = o;
    t.device_budget = 6 * g.device_block_bytes();
    ExpectExhausted(t, nullptr, 200, "--kv-device-budget");
  }
  {
    SCOPED_TRACE("host full, no remote tier");
    KvCacheOptions t = o;
    t.device_budget = TinyDeviceBudget(g);
    t.host_budget = 3 * g.encoded_block_bytes(t.codec);
    ExpectExhausted(t, nullptr, kWindow, "--kv-host-budget");
  }
  {
    SCOPED_TRACE("host and remote budgets full");
    KvCacheOptions t = o;
    t.device_budget = TinyDeviceBudget(g);
    t.host_budget = 2 * g.encoded_block_bytes(t.codec);
    t.remote_budget = 3 * g.encoded_block_bytes(t.codec);
    ExpectExhausted(t, std::make_shared<MemoryRemoteTier>(uint64_t{1} << 30), kWindow,
                    "--kv-remote-budget");
  }
  {
    SCOPED_TRACE("the remote store itself full");
    KvCacheOptions t = o;
    t.device_budget = TinyDeviceBudget(g);
    t.host_budget = 2 * g.encoded_block_bytes(t.codec);
    ExpectExhausted(t, std::make_shared<MemoryRemoteTier>(3 * g.encoded_block_bytes(t.codec)),
                    kWindow, "--kv-remote-budget");
  }
}

TEST(TieredKvCache, BadArgumentsAreErrors) {
  const Geometry g;
  KvCacheOptions o;
  o.block_tokens = 0;
  EXPECT_EQ(TieredKvCache::Create(o, 1, 1, 1, 0, nullptr).status().code(), StatusCode::kInvalidArgument);
  o.block_tokens = 16;
  EXPECT_EQ(TieredKvCache::Create(o, 0, 1, 1, 0, nullptr).status().code(), StatusCode::kInvalidArgument);
  auto cache = TieredKvCache::Create(o, 2, g.kv_heads, g.head_dim, 0, nullptr);
  ASSERT_OK(cache);
  TieredKvCache* c = cache->get();
  std::vector<float> k(size_t(g.row()) * 4, 1.0f), v(k);
  EXPECT_EQ(c->Append(2, k.data(), v.data(), 4).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c->Append(0, k.data(), v.data(), -1).code(), StatusCode::kInvalidArgument);
  k[5] = std::nanf("");
  EXPECT_EQ(c->Append(0, k.data(), v.data(), 4).code(), StatusCode::kInvalidArgument);
  k[5] = 1.0f;
  ASSERT_OK(c->Append(0, k.data(), v.data(), 4));
  auto noop = [](int64_t, int64_t, const float*, const float*) { return Status::Ok(); };
  EXPECT_EQ(c->Scan(0, 0, 5, noop).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c->Scan(0, 3, 2, noop).code(), StatusCode::kOutOfRange);
  const std::vector<int64_t> unsorted = {2, 1};
  EXPECT_EQ(c->Gather(0, unsorted, k.data(), v.data()).code(), StatusCode::kInvalidArgument);
  const std::vector<int64_t> beyond = {4};
  EXPECT_EQ(c->Gather(0, beyond, k.data(), v.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Truncate(-1).code(), StatusCode::kInvalidArgument);
  const std::vector<int64_t> negative = {-3};
  EXPECT_EQ(c->SetPersistent(negative, 4).code(), StatusCode::kInvalidArgument);
  // A callback's error ends the scan with that error.
  EXPECT_EQ(c->Scan(0, 0, 4, [](int64_t, int64_t, const float*, const float*) {
              return NotFound("stop");
            }).code(), StatusCode::kNotFound);
  c->Prefetch(7, 0, 100);  // out of range: ignored
  EXPECT_OK(c->Flush());
}

TEST(TieredKvCache, DestructionWithWorkInFlightIsCleanAndErasesRemoteBlocks) {
  Geometry g;
  g.rows = 1000;
  const Reference ref = MakeReference(g, 21);
  auto remote = std::make_shared<MemoryRemoteTier>(uint64_t{1} << 30);
  for (int round = 0; round < 5; ++round) {
    KvCacheOptions o;
    o.block_tokens = g.block_tokens;
    o.codec = round % 2 ? Codec::kInt8 : Codec::kF32;
    o.device_budget = TinyDeviceBudget(g) + uint64_t(round) * g.device_block_bytes();
    o.host_budget = 2 * g.encoded_block_bytes(o.codec);
    auto cache = TieredKvCache::Create(o, g.layers, g.kv_heads, g.head_dim, uint64_t(round), remote);
    ASSERT_OK(cache);
    TieredKvCache* c = cache->get();
    ASSERT_OK(c->SetPersistent(kPersistent, kWindow));
    ASSERT_OK(AppendRange(c, g, ref, 0, g.rows));
    for (int32_t l = 0; l < g.layers; ++l) c->Prefetch(l, 0, g.rows);
    // Destroyed with demotions and prefetches still queued or running.
    cache->reset();
    EXPECT_EQ(remote->Stats().used_bytes, 0u);
    EXPECT_EQ(remote->Stats().blocks, 0u);
  }
}

// The metric of the int8 accuracy checks: max |o_int8 - o_f32| / max |o_f32| over every output
// element of hybrid attention (window 64, causal, 7 global tokens), with K/V read back from a
// cache whose device budget forces nearly every block through the int8 codec.
double Int8AttentionError(bool outlier_channels) {
  Geometry g;
  g.layers = 1;
  g.kv_heads = 2;
  g.head_dim = 32;
  g.rows = 600;
  const int64_t heads = 4;
  std::vector<float> k, v, q(size_t(g.rows * heads * g.head_dim));
  std::mt19937_64 rng(4);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  if (outlier_channels) {
    FillRows(g, 3, g.rows, &k, &v);
  } else {
    k.resize(size_t(g.rows * g.row()));
    v.resize(k.size());
    for (float& x : k) x = nd(rng);
    for (float& x : v) x = nd(rng);
  }
  for (float& x : q) x = nd(rng);

  KvCacheOptions o;
  o.block_tokens = g.block_tokens;
  o.codec = Codec::kInt8;
  o.device_budget = 4 * g.device_block_bytes();  // nearly every block goes through int8
  auto cache = TieredKvCache::Create(o, 1, g.kv_heads, g.head_dim, 0, nullptr);
  EXPECT_OK(cache);
  if (!cache.ok()) return 1.0;
  TieredKvCache* c = cache->get();
  EXPECT_OK(c->SetPersistent({}, 0));
  EXPECT_OK(c->Append(0, k.data(), v.data(), g.rows));
  EXPECT_OK(c->Flush());
  std::vector<float> k8, v8;
  EXPECT_TRUE(c->Scan(0, 0, g.rows, [&](int64_t, int64_t n, const float* kk, const float* vv) {
                 k8.insert(k8.end(), kk, kk + n * g.row());
                 v8.insert(v8.end(), vv, vv + n * g.row());
                 return Status::Ok();
               }).ok());
  EXPECT_GT(c->Stats().demotions, 30u);
  EXPECT_NE(k8, k) << "the int8 codec should have changed K";
  if (k8.size() != k.size()) return 1.0;

  const std::vector<int64_t> globals = {0, 1, 2, 3, 77, 300, 599};
  attention::AttentionSpec spec;
  spec.window = 64;
  auto attend = [&](const std::vector<float>& kk, const std::vector<float>& vv) {
    std::vector<float> out(q.size());
    Status s = attention::ReferenceAttention(
        attention::TokenView::Dense(q.data(), DType::kF32, g.rows, heads, g.head_dim),
        attention::TokenView::Dense(kk.data(), DType::kF32, g.rows, g.kv_heads, g.head_dim),
        attention::TokenView::Dense(vv.data(), DType::kF32, g.rows, g.kv_heads, g.head_dim), globals,
        spec, out.data(), nullptr);
    EXPECT_OK(s);
    return out;
  };
  const std::vector<float> o32 = attend(k, v), o8 = attend(k8, v8);
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < o32.size(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(o8[i] - o32[i])));
    max_ref = std::max(max_ref, double(std::fabs(o32[i])));
  }
  const double rel = max_diff / max_ref;
  std::printf("[ metric   ] int8 attention (%s K/V): max|o_int8 - o_f32| / max|o_f32| = %.3g\n",
              outlier_channels ? "outlier-channel" : "N(0,1)", rel);
  return rel;
}

TEST(TieredKvCacheAccuracy, Int8AttentionWithinOnePercentOfF32) {
  const double rel = Int8AttentionError(false);
  EXPECT_LT(rel, 1e-2);
  EXPECT_GT(rel, 0.0);
}

TEST(TieredKvCacheAccuracy, Int8AttentionWithOutlierKeyChannels) {
  const double rel = Int8AttentionError(true);
  EXPECT_LT(rel, 2e-2);
  EXPECT_GT(rel, 0.0);
}

// Demotion throughput (blocks/s), printed for the record: block_tokens 64, kv_heads 2, head dim
// 16 and 64, f32 and int8, a device budget of a few blocks so nearly every appended block is
// encoded into the host tier by the background thread.
TEST(TieredKvCacheThroughput, DemotionBlocksPerSecond) {
  for (int32_t hd : {16, 64}) {
    for (Codec codec : {Codec::kF32, Codec::kInt8}) {
      Geometry g;
      g.layers = 1;
      g.kv_heads = 2;
      g.head_dim = hd;
      g.block_tokens = 64;
      g.rows = 64 * 2000;
      std::vector<float> k, v;
      const int64_t pool = 64 * 50;  // distinct rows, appended over and over
      FillRows(g, 1, pool, &k, &v);
      KvCacheOptions o;
      o.block_tokens = g.block_tokens;
      o.codec = codec;
      o.device_budget = 8 * g.device_block_bytes();
      auto cache = TieredKvCache::Create(o, 1, g.kv_heads, g.head_dim, 0, nullptr);
      ASSERT_OK(cache);
      TieredKvCache* c = cache->get();
      ASSERT_OK(c->SetPersistent({}, 64));
      const auto t0 = Clock::now();
      for (int64_t r = 0; r < g.rows; r += 64) {
        const int64_t off = r % pool * g.row();
        ASSERT_OK(c->Append(0, k.data() + off, v.data() + off, 64));
      }
      ASSERT_OK(c->Flush());
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      const KvCacheStats st = c->Stats();
      EXPECT_GE(st.demotions, 2000u - 10u);
      std::printf("[ metric   ] demotion head_dim %d %s: %llu blocks in %.3f s = %.0f blocks/s\n",
                  hd, std::string(CodecName(codec)).c_str(),
                  static_cast<unsigned long long>(st.demotions), s, double(st.demotions) / s);
    }
  }
}

}  // namespace
}  // namespace longctx::cache
