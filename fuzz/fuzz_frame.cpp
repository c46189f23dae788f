// libFuzzer target for what the coordinator does with untrusted bytes before acting on them:
// FrameDecoder (fed in pieces whose sizes come from the input), ParseEnvelope, the per-message
// validation, and a re-encode round trip. Built by fuzz/CMakeLists.txt (-DLONGCTX_FUZZ=ON) and run
// for a bounded time by tests/fuzz/run_fuzzers.sh (clang, ASan + UBSan).
// Invariants checked (a violation traps, which libFuzzer reports as a crash):
//  - the decoder never holds more than one frame's limit beyond what it was fed;
//  - bytes out (frames + headers + partial) never exceed bytes in;
//  - a parsed envelope re-encodes and parses back to the same bytes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "longctx/coordinator/frame.h"

namespace co = longctx::coordinator;

namespace {
constexpr size_t kMaxFrame = 64 * 1024;

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void Exercise(const longctx::control::Envelope& env) {
  using E = longctx::control::Envelope;
  switch (env.body_case()) {
    case E::kSubmit:
      (void)co::ValidateSubmitChunk(env.submit(), 1 << 20);
      break;
    case E::kQuery:
      (void)co::ValidateQuery(env.query());
      break;
    case E::kEvent:
      (void)co::ValidateEvent(env.event());
      break;
    case E::kHello:
      for (const std::string& d : env.hello().documents()) {
        (void)co::ValidateDocId(d);
        (void)co::ValidateScopedDocId(d);
        (void)co::ValidateClientName(d);
      }
      (void)co::ConstantTimeEquals(env.hello().token(), "fuzz-token");
      break;
    default:
      break;
  }
  longctx::Result<std::string> again = co::EncodeEnvelope(env, kMaxFrame * 2);
  Check(again.ok());
  co::FrameDecoder d(kMaxFrame * 2);
  Check(d.Feed(again->data(), again->size()).ok());
  Check(d.has_frame());
  longctx::Result<longctx::control::Envelope> back = co::ParseEnvelope(d.Pop());
  Check(back.ok());
  Check(back->SerializeAsString() == env.SerializeAsString());
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t piece = 1 + data[0] % 64;  // how the stream is split into reads
  ++data;
  --size;
  co::FrameDecoder decoder(kMaxFrame);
  size_t fed = 0, out = 0;
  for (size_t off = 0; off < size; off += piece) {
    const size_t n = std::min(piece, size - off);
    if (!decoder.Feed(reinterpret_cast<const char*>(data + off), n).ok()) return 0;
    fed += n;
    while (decoder.has_frame()) {
      const std::string payload = decoder.Pop();
      Check(payload.size() <= kMaxFrame);
      out += co::kFrameHeaderBytes + payload.size();
      Check(out <= fed);
      longctx::Result<longctx::control::Envelope> env = co::ParseEnvelope(payload);
      if (env.ok()) Exercise(*env);
    }
  }
  return 0;
}
