// The KV store's wire formats (docs/kvstore.md): the bootstrap hello over TCP and the control
// active messages over UCX. Fixed little-endian layouts copied with memcpy; every message starts
// with a magic and the protocol version, and a peer speaking another version is refused.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::cache::wire {

inline constexpr uint32_t kHelloMagic = 0x4C435848;  // "HXCL"
inline constexpr uint32_t kAmMagic = 0x4C43414D;     // "MACL"
inline constexpr uint16_t kVersion = 1;

// Active-message ids (client -> pool: kRequest; pool -> client: kReply).
inline constexpr uint16_t kAmRequest = 0x4c01;
inline constexpr uint16_t kAmReply = 0x4c02;

inline constexpr size_t kHostBytes = 128;

// Fills a fixed host field; compares one with this host's identity.
inline void SetHost(char (&field)[kHostBytes], const std::string& host) {
  std::memset(field, 0, kHostBytes);
  std::memcpy(field, host.data(), std::min(host.size(), kHostBytes - 1));
}
inline bool SameHost(const char (&field)[kHostBytes], const std::string& host) {
  char mine[kHostBytes];
  SetHost(mine, host);
  return std::memcmp(field, mine, kHostBytes) == 0;
}

enum class Op : uint16_t { kAlloc = 1, kFree = 2, kStats = 3 };

// Client -> pool over TCP, followed by the client's UCX worker address (addr_len bytes).
// Hello flags (the `flags` field of both hellos).
inline constexpr uint16_t kFlagSharedMemory = 1;  // this process's UCX_TLS allows shared memory

struct ClientHello {
  uint32_t magic;
  uint16_t version;
  uint16_t flags;  // kFlag*
  uint32_t addr_len;
  uint32_t reserved2;
  char host[kHostBytes];  // HostIdentity(), NUL-padded (truncated if longer)
};
static_assert(sizeof(ClientHello) == 16 + kHostBytes &&
              std::is_trivially_copyable_v<ClientHello>);

// Pool -> client over TCP, followed by the pool's worker address and its packed rkey.
struct PoolHello {
  uint32_t magic;
  uint16_t version;
  uint16_t flags;  // kFlag*
  uint64_t pool_id;     // random per server
  uint64_t client_id;   // this session, echoed in every request
  uint64_t pool_base;   // remote address of the pool's first byte
  uint64_t pool_bytes;  // capacity
  uint32_t addr_len;
  uint32_t rkey_len;
  char host[kHostBytes];  // HostIdentity(), NUL-padded
};
static_assert(sizeof(PoolHello) == 48 + kHostBytes && std::is_trivially_copyable_v<PoolHello>);

// kAmRequest header. kAlloc: arg0 = bytes. kFree: arg0 = offset, arg1 = bytes. kStats: none.
struct Request {
  uint32_t magic;
  uint16_t version;
  uint16_t op;
  uint64_t request_id;
  uint64_t client_id;
  uint64_t arg0;
  uint64_t arg1;
};
static_assert(sizeof(Request) == 40 && std::is_trivially_copyable_v<Request>);

// kAmReply header. status: a StatusCode (0 = OK); on error the AM data is the message text.
struct Reply {
  uint32_t magic;
  uint16_t version;
  uint16_t op;
  uint64_t request_id;
  int32_t status;
  uint32_t reserved;
  uint64_t offset;          // kAlloc: where the block goes (from pool_base)
  uint64_t free_bytes;      // the pool's free bytes after this request
  uint64_t capacity_bytes;  // the pool's capacity
};
static_assert(sizeof(Reply) == 48 && std::is_trivially_copyable_v<Reply>);

template <typename T>
std::span<const std::byte> AsBytes(const T& value) {
  return {reinterpret_cast<const std::byte*>(&value), sizeof(T)};
}

// Reads a T from the front of `bytes` (kDataLoss when too short).
template <typename T>
Result<T> Read(std::span<const std::byte> bytes, const char* what) {
  if (bytes.size() < sizeof(T)) {
    return DataLoss("{}: {} bytes, expected at least {}", what, bytes.size(), sizeof(T));
  }
  T value;
  std::memcpy(&value, bytes.data(), sizeof(T));
  return value;
}

inline void Append(std::vector<std::byte>* out, std::span<const std::byte> bytes) {
  out->insert(out->end(), bytes.begin(), bytes.end());
}

}  // namespace longctx::cache::wire
