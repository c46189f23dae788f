// MemoryRemoteTier: the in-process RemoteTier of remote_tier.h — a map of encoded blocks under
// one mutex, with a byte capacity. Same contract as the UCX store: a Put is whole or absent, a
// Get verifies the block and names it when it is corrupt or missing.
#include "longctx/cache/remote_tier.h"

#include <utility>

namespace longctx::cache {

Status MemoryRemoteTier::Put(const BlockKey& key, std::span<const std::byte> encoded) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.find(key);
  const uint64_t old_bytes = it == blocks_.end() ? 0 : it->second.size();
  // Replacing a block frees its old bytes first; the old copy stays if the new one does not fit.
  if (used_ - old_bytes + encoded.size() > capacity_) {
    return ResourceExhausted("remote tier: no room for {} ({} bytes): {} of {} bytes used",
                             key.ToString(), encoded.size(), used_, capacity_);
  }
  std::vector<std::byte> copy(encoded.begin(), encoded.end());
  if (it == blocks_.end()) {
    blocks_.emplace(key, std::move(copy));
  } else {
    it->second = std::move(copy);
  }
  used_ = used_ - old_bytes + encoded.size();
  put_ += encoded.size();
  return Status::Ok();
}

Result<std::vector<std::byte>> MemoryRemoteTier::Get(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.find(key);
  if (it == blocks_.end()) {
    return Unavailable("remote tier: block {} is not stored (no holder)", key.ToString());
  }
  RETURN_IF_ERROR(VerifyBlock(it->second, key));
  got_ += it->second.size();
  return it->second;
}

Status MemoryRemoteTier::Erase(const BlockKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.find(key);
  if (it == blocks_.end()) return NotFound("remote tier: block {} is not stored", key.ToString());
  used_ -= it->second.size();
  blocks_.erase(it);
  return Status::Ok();
}

RemoteTierStats MemoryRemoteTier::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  RemoteTierStats s;
  s.capacity_bytes = capacity_;
  s.used_bytes = used_;
  s.blocks = blocks_.size();
  s.bytes_put = put_;
  s.bytes_got = got_;
  return s;
}

Status MemoryRemoteTier::CorruptForTest(const BlockKey& key, size_t byte) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.find(key);
  if (it == blocks_.end()) return NotFound("remote tier: block {} is not stored", key.ToString());
  if (byte >= it->second.size()) {
    return OutOfRange("remote tier: byte {} beyond block {} ({} bytes)", byte, key.ToString(),
                      it->second.size());
  }
  it->second[byte] ^= std::byte{0x5a};
  return Status::Ok();
}

}  // namespace longctx::cache
