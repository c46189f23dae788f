// libFuzzer target for the KV store's wire parsing (cache/src/store_wire.h), the bytes a pool and
// a client take from the network before UCX sees anything: the pool's reading of a client hello
// (ReadClientHello, with the worker-address checks), the client's reading of the pool's answer
// (ReadPoolAnswer: a refusal or a pool hello with its address and rkey), and the active-message
// headers (ReadAmHeader). Byte 0 of the input picks which; the rest is the message. No UCX
// context is needed: these functions are pure. Invariants: an accepted hello's address lies
// inside the payload and passed the checks; a refusal's reason is one line.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "fuzz_util.h"
#include "store_wire.h"

using longctx::fuzz::Check;
namespace wire = longctx::cache::wire;

namespace {
// A stand-in for this pool's own worker address: header byte 0x02 (address version 2), 40 bytes.
std::span<const std::byte> OwnAddress() {
  static const auto own = [] {
    std::array<std::byte, 40> a{};
    a[0] = std::byte{0x02};
    return a;
  }();
  return own;
}

void ClientHello(std::span<const std::byte> payload) {
  // The "token": a proof of 32 bytes 0xA5 (the pool compares the real HMAC the same way).
  bool proved = false;
  auto prove = [&](const wire::ClientHello& h) -> std::string {
    proved = true;
    for (uint8_t b : h.proof) {
      if (b != 0xA5) return "wrong or missing store token";
    }
    return "";
  };
  wire::ClientHello hello{};
  std::span<const std::byte> address;
  const std::string why = wire::ReadClientHello(payload, OwnAddress(), prove, &hello, &address);
  if (!why.empty()) return;
  Check(proved);
  Check(hello.magic == wire::kHelloMagic && hello.version == wire::kVersion);
  Check(address.size() == hello.addr_len);
  Check(address.size() >= wire::kMinWorkerAddressBytes &&
        address.size() <= wire::kMaxWorkerAddressBytes);
  Check(address.data() == payload.data() + sizeof(wire::ClientHello));
  Check(wire::CheckWorkerAddress(address, OwnAddress()).empty());
}

void PoolAnswer(std::span<const std::byte> answer) {
  longctx::Result<wire::PoolAnswer> a = wire::ReadPoolAnswer(answer);
  if (!a.ok()) {
    Check(a.status().message().find('\n') == std::string::npos);
    return;
  }
  Check(a->address.size() == a->hello.addr_len && a->rkey.size() == a->hello.rkey_len);
  Check(sizeof(wire::PoolHello) + a->address.size() + a->rkey.size() == answer.size());
  Check(a->rkey.data() + a->rkey.size() == answer.data() + answer.size());
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::span<const std::byte> rest(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  switch (data[0] % 4) {
    case 0:
      ClientHello(rest);
      break;
    case 1:
      PoolAnswer(rest);
      break;
    case 2:
      if (auto r = wire::ReadAmHeader<wire::Request>(rest)) {
        Check(r->magic == wire::kAmMagic && r->version == wire::kVersion);
      }
      break;
    default:
      if (auto r = wire::ReadAmHeader<wire::Reply>(rest)) {
        Check(r->magic == wire::kAmMagic && r->version == wire::kVersion);
      }
      break;
  }
  return 0;
}
