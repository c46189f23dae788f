// libFuzzer target for tokenizer.json loading and use (model/src/tokenizer_hf.cpp): the input is
// the JSON text, optionally followed by a NUL byte and a text to encode (else a fixed sample).
// A tokenizer that loads must encode to ids inside its vocabulary, decode them back without an
// error, give the same ids from EncodeParallel, and name every id's text without a crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "fuzz_util.h"
#include "longctx/model/tokenizer.h"

using longctx::fuzz::Check;
namespace model = longctx::model;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view json(reinterpret_cast<const char*>(data), size);
  std::string_view text = "Hello, world! It's 2024: caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac  ok.\n";
  if (const size_t nul = json.find('\0'); nul != std::string_view::npos) {
    text = json.substr(nul + 1);
    json = json.substr(0, nul);
  }
  longctx::Result<std::unique_ptr<model::HfTokenizer>> tok =
      model::HfTokenizer::FromJson(json, "fuzz/tokenizer.json");
  if (!tok.ok()) {
    Check(!tok.status().message().empty());
    return 0;
  }
  const model::HfTokenizer& t = **tok;
  (void)t.Describe();
  (void)t.bos_id();
  (void)t.eos_ids();
  for (bool special : {false, true}) {
    longctx::Result<std::vector<int32_t>> ids = t.Encode(text, special);
    if (!ids.ok()) continue;  // e.g. a character the vocabulary cannot spell, without unk
    for (int32_t id : *ids) {
      Check(id >= 0 && id < t.vocab_size());
      (void)t.TokenText(id);
    }
    longctx::Result<std::string> back = t.Decode(*ids, false);
    Check(back.ok());
    (void)t.Decode(*ids, true);
    longctx::Result<std::vector<int32_t>> parallel = t.EncodeParallel(text, special, 2);
    Check(parallel.ok() && *parallel == *ids);
  }
  (void)t.TokenText(-1);
  (void)t.TokenText(static_cast<int32_t>(t.vocab_size()));
  const int32_t bad = static_cast<int32_t>(t.vocab_size());
  Check(!t.Decode(std::span<const int32_t>(&bad, 1), false).ok());
  return 0;
}
