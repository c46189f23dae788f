// RemoteTier: the remote KV tier as the tiered cache sees it (DESIGN.md §3) — encoded blocks
// kept in the host memory of other processes. The UCX store client (store.h) implements it;
// tests may use MemoryRemoteTier (below), an in-process map with the same contract.
//
// Contract:
//   - Put returns only once every replica holds the whole block (the store's acknowledgement);
//     on error nothing is half-stored under the key (a failed put leaves the old state or none).
//   - Get verifies the block (VerifyBlock: checksum, header, key) and, when a replica is bad or
//     unreachable, falls back to the next; with no good copy it returns kDataLoss (corrupt) or
//     kUnavailable (every holder gone) with a message naming the block ("seq S layer L block B").
//   - Every call has a deadline (comm::DefaultTimeout() unless said otherwise); a dead peer is an
//     error, never a hang.
//   - Thread safety: calls may come from the cache's background thread and the caller's thread;
//     an implementation serialises them internally.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <vector>

#include "longctx/cache/kv_block.h"
#include "longctx/core/status.h"

namespace longctx::cache {

struct RemoteTierStats {
  uint64_t capacity_bytes = 0;  // sum of the pools this client may use
  uint64_t used_bytes = 0;      // bytes this client stores (every replica counted)
  uint64_t blocks = 0;          // blocks this client stores (a block with 2 replicas counts 1)
  uint64_t bytes_put = 0, bytes_got = 0;
  uint64_t replica_fallbacks = 0;  // reads served by a second replica after a bad first one
  uint64_t degraded_puts = 0;      // blocks stored with fewer replicas than asked (pools died)
};

class RemoteTier {
 public:
  virtual ~RemoteTier() = default;
  virtual Status Put(const BlockKey& key, std::span<const std::byte> encoded) = 0;
  virtual Result<std::vector<std::byte>> Get(const BlockKey& key) = 0;
  virtual Status Erase(const BlockKey& key) = 0;
  virtual RemoteTierStats Stats() const = 0;
};

// An in-process RemoteTier for tests of the cache policy (no UCX): a map of blocks with a byte
// capacity. Put beyond the capacity is kResourceExhausted.
class MemoryRemoteTier final : public RemoteTier {
 public:
  explicit MemoryRemoteTier(uint64_t capacity_bytes) : capacity_(capacity_bytes) {}
  Status Put(const BlockKey& key, std::span<const std::byte> encoded) override;
  Result<std::vector<std::byte>> Get(const BlockKey& key) override;
  Status Erase(const BlockKey& key) override;
  RemoteTierStats Stats() const override;
  // Test hook: flips one byte of a stored block (a corrupt remote copy).
  Status CorruptForTest(const BlockKey& key, size_t byte);

 private:
  struct Less {
    bool operator()(const BlockKey& a, const BlockKey& b) const {
      if (a.sequence != b.sequence) return a.sequence < b.sequence;
      if (a.layer != b.layer) return a.layer < b.layer;
      return a.block < b.block;
    }
  };
  mutable std::mutex mu_;
  uint64_t capacity_;
  uint64_t used_ = 0, put_ = 0, got_ = 0;
  std::map<BlockKey, std::vector<std::byte>, Less> blocks_;
};

}  // namespace longctx::cache
