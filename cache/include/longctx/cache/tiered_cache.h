// TieredKvCache: one rank's K/V of one sequence, every layer, in blocks of `block_tokens` rows
// kept across three tiers (DESIGN.md §3), each with a byte budget:
//   device — fp32 blocks in the worker's working set (GPU memory on GPU builds; here, the
//            process's compute memory): what attention reads;
//   host   — encoded blocks (the codec) in a pool of this process;
//   remote — encoded blocks in other processes' pools, through a RemoteTier (the UCX store).
//
// Rows are indices local to this cache (0 = the rank's first row). Block b of layer l holds rows
// [b*block_tokens, (b+1)*block_tokens); only the last block of a layer may be partial.
//
// Placement: the *persistent* set — blocks holding a persistent row (global tokens), the blocks
// of the last `window_rows` rows of each layer, and the tail block being appended to — stays in
// the device tier. Every other block is demoted in LRU order by a background thread that encodes
// it and stores it in the host tier, or in the remote tier when the host budget is full (host
// blocks are themselves demoted to remote in LRU order to make room). Sealed blocks are
// immutable; a block read back keeps its lower-tier copy, so evicting it again is free.
//
// Budgets are hard: no tier ever holds more bytes than its budget (device: 4 bytes x 2 x rows x
// kv_heads x head_dim per resident block; host/remote: encoded bytes). A caller that needs device
// room waits for the background thread to free it; when nothing can be freed (the persistent set
// plus two streaming blocks do not fit, or every tier is full) the call fails with
// kResourceExhausted naming the budget to raise — it never blocks forever.
//
// Prefetch: Prefetch(l, begin, end) queues the non-resident blocks of that range for loading in
// the background, in row order, as far as device room allows; Scan then finds them resident (a
// hit) or loads/waits for them (a miss; the wait counts as stall time). Reads verify each block's
// checksum; a corrupt or lost block is an error naming it.
//
// Thread safety: one caller thread (the worker) plus the cache's own background thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "longctx/cache/kv_block.h"
#include "longctx/cache/remote_tier.h"
#include "longctx/core/status.h"

namespace longctx::cache {

inline constexpr uint64_t kUnlimitedBudget = ~uint64_t{0};

struct KvCacheOptions {
  int32_t block_tokens = 64;
  Codec codec = Codec::kF32;                  // of host and remote copies
  uint64_t device_budget = kUnlimitedBudget;  // bytes
  uint64_t host_budget = kUnlimitedBudget;    // bytes
  uint64_t remote_budget = kUnlimitedBudget;  // bytes this cache may place in the remote tier
};

struct KvTierStats {
  uint64_t bytes = 0, blocks = 0;
  uint64_t peak_bytes = 0;  // the most this tier held at any time
};

struct KvCacheStats {
  KvTierStats device, host, remote;
  uint64_t demotions = 0;       // block copies moved down a tier (device->host, ->remote)
  uint64_t loads = 0;           // blocks read back into the device tier
  uint64_t prefetch_hits = 0;   // Scan found a demoted block already loaded by Prefetch
  uint64_t prefetch_misses = 0; // Scan had to load (or wait for) a demoted block itself
  double stall_seconds = 0.0;   // time Scan/Gather waited for blocks
};

class TieredKvCache {
 public:
  // sequence: the BlockKey sequence of every block (unique per rank and document across the
  // job, since remote pools are shared). remote may be null (no remote tier).
  static Result<std::unique_ptr<TieredKvCache>> Create(const KvCacheOptions& options,
                                                       int32_t layers, int32_t kv_heads,
                                                       int32_t head_dim, uint64_t sequence,
                                                       std::shared_ptr<RemoteTier> remote);
  virtual ~TieredKvCache() = default;  // stops the background thread; erases its remote blocks

  // The persistent rows (sorted, e.g. the rank's global tokens) and the window kept resident at
  // the end of every layer. May be called again (rows appended later are added with Pin).
  virtual Status SetPersistent(std::span<const int64_t> rows, int64_t window_rows) = 0;
  virtual void Pin(int64_t row) = 0;

  // Appends `rows` rows to `layer`: k and v are [rows][kv_heads*head_dim] fp32.
  virtual Status Append(int32_t layer, const float* k, const float* v, int64_t rows) = 0;
  // Drops rows >= `rows` from every layer (e.g. the tokens a previous question appended).
  virtual Status Truncate(int64_t rows) = 0;
  virtual int64_t rows(int32_t layer) const = 0;

  // Visits rows [begin, end) of `layer` block by block in row order: fn(first_row, count, k, v)
  // with k, v [count][kv_heads*head_dim] fp32, valid during the call only. The blocks visited are
  // the same for any budgets, so a computation over them is bitwise the same spilled or not.
  using BlockFn = std::function<Status(int64_t first_row, int64_t count, const float* k,
                                       const float* v)>;
  virtual Status Scan(int32_t layer, int64_t begin, int64_t end, const BlockFn& fn) = 0;
  // Copies the given rows (sorted, distinct) of `layer` into k and v ([rows.size()][row]).
  virtual Status Gather(int32_t layer, std::span<const int64_t> rows, float* k, float* v) = 0;
  // Starts loading the non-resident blocks of rows [begin, end) of `layer` in the background.
  virtual void Prefetch(int32_t layer, int64_t begin, int64_t end) = 0;

  // Waits until the background thread is idle; returns its first error, if any.
  virtual Status Flush() = 0;
  virtual KvCacheStats Stats() const = 0;
};

}  // namespace longctx::cache
