// The KV store's wire formats (docs/kvstore.md): the bootstrap hello over TCP and the control
// active messages over UCX. Fixed little-endian layouts copied with memcpy; every message starts
// with a magic and the protocol version, and a peer speaking another version is refused.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "longctx/cache/store.h"
#include "longctx/core/status.h"

namespace longctx::cache::wire {

inline constexpr uint32_t kHelloMagic = 0x4C435848;  // "HXCL"
inline constexpr uint32_t kAmMagic = 0x4C43414D;     // "MACL"
inline constexpr uint32_t kRefusalMagic = 0x4C435852;    // "RXCL"
inline constexpr uint32_t kChallengeMagic = 0x4C435843;  // "CXCL"
// 2: the pool challenges, the hello proves the store token; requests carry the session's key.
inline constexpr uint16_t kVersion = 2;

inline constexpr size_t kTokenBytes = 32;       // a store token (256 bits)
inline constexpr size_t kNonceBytes = 32;       // a pool's challenge
inline constexpr size_t kProofBytes = 32;       // HMAC-SHA256
inline constexpr size_t kSessionKeyBytes = 16;  // a session's key (128 bits, issued by the pool)
// A UCX worker address a pool accepts: tens to a few hundred bytes on tcp/sm (more with many
// devices). Anything outside these bounds is refused before UCX sees it.
inline constexpr size_t kMinWorkerAddressBytes = 9;  // header byte + 64-bit uuid
inline constexpr size_t kMaxWorkerAddressBytes = 2048;
inline constexpr size_t kMaxHelloBytes = 4096;  // the whole client hello frame

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

// Pool -> client, the first frame on every accepted connection: a fresh random nonce. The token
// itself never crosses the wire; the hello proves it by an HMAC of this nonce.
struct Challenge {
  uint32_t magic;  // kChallengeMagic
  uint16_t version;
  uint16_t reserved;
  uint8_t nonce[kNonceBytes];
};
static_assert(sizeof(Challenge) == 8 + kNonceBytes && std::is_trivially_copyable_v<Challenge>);

// HelloProof(token, nonce) = HMAC-SHA256(token, "longctx store hello v2" || nonce)
// (store_token.cpp). A captured hello does not open another connection (another nonce).
std::array<uint8_t, kProofBytes> HelloProof(const StoreToken& token,
                                            const uint8_t (&nonce)[kNonceBytes]);

// The pool checks `proof` (constant time) before it looks at anything else past the version.
struct ClientHello {
  uint32_t magic;
  uint16_t version;
  uint16_t flags;  // kFlag*
  uint32_t addr_len;
  uint32_t reserved2;
  uint8_t proof[kProofBytes];  // HelloProof(token, the challenge's nonce); zero without a token
  char host[kHostBytes];       // HostIdentity(), NUL-padded (truncated if longer)
};
static_assert(sizeof(ClientHello) == 16 + kProofBytes + kHostBytes &&
              std::is_trivially_copyable_v<ClientHello>);

// Pool -> client over TCP, followed by the pool's worker address and its packed rkey. Sent only
// after the token was proven.
struct PoolHello {
  uint32_t magic;
  uint16_t version;
  uint16_t flags;  // kFlag*
  uint64_t pool_id;     // random per server
  uint64_t session_id;  // random per session, echoed in every request
  uint8_t session_key[kSessionKeyBytes];  // random per session: proves a request is this session's
  uint64_t pool_base;   // remote address of the pool's first byte
  uint64_t pool_bytes;  // capacity
  uint64_t quota_bytes; // what this session may hold (<= pool_bytes)
  uint32_t addr_len;
  uint32_t rkey_len;
  char host[kHostBytes];  // HostIdentity(), NUL-padded
};
static_assert(sizeof(PoolHello) == 72 + kHostBytes && std::is_trivially_copyable_v<PoolHello>);

// Pool -> client over TCP instead of a PoolHello: the hello was refused (wrong token, bad
// address, too many sessions, another version). Followed by text_len bytes of one-line reason;
// the pool closes the connection after it.
struct Refusal {
  uint32_t magic;  // kRefusalMagic
  uint16_t version;
  uint16_t reserved;
  uint32_t text_len;
  uint32_t reserved2;
};
static_assert(sizeof(Refusal) == 16 && std::is_trivially_copyable_v<Refusal>);

// kAmRequest header. kAlloc: arg0 = bytes. kFree: arg0 = offset, arg1 = bytes. kStats: none.
// A request whose (session_id, session_key) is not a live session's is dropped unanswered.
struct Request {
  uint32_t magic;
  uint16_t version;
  uint16_t op;
  uint64_t request_id;
  uint64_t session_id;
  uint8_t session_key[kSessionKeyBytes];
  uint64_t arg0;
  uint64_t arg1;
};
static_assert(sizeof(Request) == 56 && std::is_trivially_copyable_v<Request>);

// kAmReply header. status: a StatusCode (0 = OK); on error the AM data is the message text.
struct Reply {
  uint32_t magic;
  uint16_t version;
  uint16_t op;
  uint64_t request_id;
  int32_t status;
  uint32_t reserved;
  uint64_t offset;          // kAlloc: where the block goes (from pool_base)
  uint64_t free_bytes;      // what this session may still allocate: min(pool free, quota left)
  uint64_t capacity_bytes;  // the pool's capacity
};
static_assert(sizeof(Reply) == 48 && std::is_trivially_copyable_v<Reply>);

// The checks a pool can make on a peer's UCX worker address before ucp_ep_create, which trusts
// its input (a malformed address trips UCX assertions and aborts the process): length bounds, and
// the header byte's address version (its low 4 bits, UCX's UCP_ADDRESS_HEADER_VERSION_MASK) equal
// to that of this process's own address (same UCX, same address format). Returns the reason for
// a refusal, or "" when the address passes. What lies past the header is not validated (UCX has
// no API for that): which is why the token is checked first (docs/security.md).
inline std::string CheckWorkerAddress(std::span<const std::byte> peer,
                                      std::span<const std::byte> own) {
  if (peer.size() < kMinWorkerAddressBytes || peer.size() > kMaxWorkerAddressBytes) {
    return "a UCX worker address of " + std::to_string(peer.size()) + " bytes (expected " +
           std::to_string(kMinWorkerAddressBytes) + ".." + std::to_string(kMaxWorkerAddressBytes) +
           ")";
  }
  if (!own.empty() && (std::to_integer<unsigned>(peer[0]) & 0x0F) !=
                          (std::to_integer<unsigned>(own[0]) & 0x0F)) {
    return "a UCX worker address of another format (header byte " +
           std::to_string(std::to_integer<unsigned>(peer[0])) + ")";
  }
  return "";
}

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

// The pool's reading of a client hello: `payload` is the frame after its 4-byte length prefix
// (which the pool bounds to [sizeof(ClientHello), kMaxHelloBytes] first). In order: magic,
// version, then `prove(hello)` (the token: nothing else of the client's is interpreted before it
// passes; it returns "" or the reason), then exactly addr_len address bytes past the header and
// CheckWorkerAddress against `own`. Returns the refusal's reason, or "" with *hello and *address
// (a view into `payload`) set. Pure: fuzzed by fuzz/fuzz_store_hello.cpp.
template <typename Prove>
std::string ReadClientHello(std::span<const std::byte> payload, std::span<const std::byte> own,
                            Prove&& prove, ClientHello* hello,
                            std::span<const std::byte>* address) {
  Result<ClientHello> h = Read<ClientHello>(payload, "client hello");
  if (!h.ok()) return "malformed hello (" + std::to_string(payload.size()) + " bytes)";
  if (h->magic != kHelloMagic) return "not a longctx store hello";
  if (h->version != kVersion) {
    return "protocol version " + std::to_string(h->version) + " (this store speaks " +
           std::to_string(kVersion) + ")";
  }
  if (std::string why = prove(*h); !why.empty()) return why;
  if (payload.size() != sizeof(ClientHello) + size_t{h->addr_len}) {
    return "malformed hello (" + std::to_string(payload.size()) + " bytes for a " +
           std::to_string(h->addr_len) + "-byte address)";
  }
  const std::span<const std::byte> peer = payload.subspan(sizeof(ClientHello));
  if (std::string bad = CheckWorkerAddress(peer, own); !bad.empty()) return bad;
  *hello = *h;
  *address = peer;
  return "";
}

// The client's reading of the pool's answer to its hello: a Refusal (kFailedPrecondition
// "refused: <reason>", the reason on one line) or a PoolHello followed by exactly addr_len bytes
// of worker address and rkey_len bytes of packed rkey (views into `answer`). Another magic or a
// wrong size is kDataLoss, another version kFailedPrecondition. Pure: fuzzed as above.
struct PoolAnswer {
  PoolHello hello;
  std::span<const std::byte> address;
  std::span<const std::byte> rkey;
};
inline Result<PoolAnswer> ReadPoolAnswer(std::span<const std::byte> answer) {
  if (Result<Refusal> r = Read<Refusal>(answer, "refusal"); r.ok() && r->magic == kRefusalMagic) {
    const size_t n = std::min<size_t>(r->text_len, answer.size() - sizeof(Refusal));
    std::string why(reinterpret_cast<const char*>(answer.data()) + sizeof(Refusal), n);
    for (char& c : why) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    return FailedPrecondition("refused: {}", why);
  }
  ASSIGN_OR_RETURN(PoolHello h, Read<PoolHello>(answer, "pool hello"));
  if (h.magic != kHelloMagic) return DataLoss("not a longctx store (bad magic)");
  if (h.version != kVersion) {
    return FailedPrecondition("protocol version {} (this build speaks {})", h.version, kVersion);
  }
  if (answer.size() != sizeof(PoolHello) + size_t{h.addr_len} + h.rkey_len) {
    return DataLoss("a malformed hello ({} bytes)", answer.size());
  }
  const std::span<const std::byte> rest = answer.subspan(sizeof(PoolHello));
  return PoolAnswer{h, rest.subspan(0, h.addr_len), rest.subspan(h.addr_len, h.rkey_len)};
}

// An active message's header of type T (Request or Reply) with this protocol's magic and
// version, or std::nullopt (the caller drops it).
template <typename T>
std::optional<T> ReadAmHeader(std::span<const std::byte> header) {
  Result<T> m = Read<T>(header, "store message");
  if (!m.ok() || m->magic != kAmMagic || m->version != kVersion) return std::nullopt;
  return *m;
}

inline void Append(std::vector<std::byte>* out, std::span<const std::byte> bytes) {
  out->insert(out->end(), bytes.begin(), bytes.end());
}

}  // namespace longctx::cache::wire
