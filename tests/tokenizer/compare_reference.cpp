// Compares HfTokenizer with the reference outputs of reference.js (the `tokenizers` library):
// ids with and without special tokens, decode with and without skip_special_tokens, and
// decode(encode(x)) == x where the tokenizer promises it. Prints one line per failure and
// "N passed, M failed" last; exits non-zero on a failure or when nothing was checked.
// Usage: compare_reference TOKENIZER.json CORPUS.json REFERENCE.json [NO_ROUNDTRIP]
// NO_ROUNDTRIP: comma-separated corpus flags whose entries this tokenizer does not promise to
// round-trip (specials: added-token strings in the text; metaspace: a literal U+2581, which
// SentencePiece-style files decode as a space; not_nfc: text that an NFC normalizer changes;
// *: none).
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "longctx/model/tokenizer.h"

using nlohmann::json;

namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string FromHex(const std::string& hex) {
  std::string s;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) s.push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return s;
}

std::string Short(const std::string& s) {
  std::string e = json(s).dump(-1, ' ', false, json::error_handler_t::replace);
  return e.size() > 80 ? e.substr(0, 77) + "..." : e;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: compare_reference TOKENIZER.json CORPUS.json REFERENCE.json [FLAGS]\n");
    return 2;
  }
  const std::string no_roundtrip = argc >= 5 ? std::string(",") + argv[4] + "," : std::string();
  auto tok = longctx::model::LoadHfTokenizer(argv[1]);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n0 passed, 1 failed\n", tok.status().message().c_str());
    return 1;
  }
  const json corpus = json::parse(Slurp(argv[2]));
  const json ref = json::parse(Slurp(argv[3]));
  if (corpus.size() != ref.size()) {
    std::fprintf(stderr, "corpus has %zu entries, reference %zu\n0 passed, 1 failed\n",
                 corpus.size(), ref.size());
    return 1;
  }
  int passed = 0, failed = 0;
  auto check = [&](bool ok, size_t i, const std::string& what, const std::string& detail) {
    if (ok) {
      ++passed;
    } else {
      ++failed;
      fmt::print("FAIL {} [{}] {}: {}\n", argv[1], i, what, detail);
    }
  };
  for (size_t i = 0; i < corpus.size(); ++i) {
    const json& c = corpus[i];
    const bool is_hex = c.contains("hex");
    const std::string bytes = is_hex ? FromHex(c["hex"]) : c["text"].get<std::string>();
    for (bool special : {false, true}) {
      const auto ids = (*tok)->Encode(bytes, special);
      const auto want = ref[i][special ? "ids_special" : "ids"].get<std::vector<int32_t>>();
      if (!ids.ok()) {
        check(false, i, "encode", ids.status().message());
        continue;
      }
      check(*ids == want, i, special ? "ids (special tokens on)" : "ids",
            fmt::format("{} got {} want {}", Short(bytes), fmt::join(*ids, ","), fmt::join(want, ",")));
      if (!special) continue;
      const auto dec = (*tok)->Decode(want, false);
      const std::string want_dec = ref[i]["decoded"];
      check(dec.ok() && *dec == want_dec, i, "decode",
            fmt::format("got {} want {}", dec.ok() ? Short(*dec) : dec.status().message(), Short(want_dec)));
      const auto skip = (*tok)->Decode(want, true);
      const std::string want_skip = ref[i]["decoded_skip"];
      check(skip.ok() && *skip == want_skip, i, "decode (skip special)",
            fmt::format("got {} want {}", skip.ok() ? Short(*skip) : skip.status().message(), Short(want_skip)));
    }
    // decode(encode(x)) == x on valid UTF-8, but for the entries NO_ROUNDTRIP names.
    bool roundtrip = !is_hex && no_roundtrip != ",*,";
    for (const json& flag : c.value("flags", json::array())) {
      std::string needle(1, ',');
      needle.append(flag.get<std::string>()).push_back(',');
      if (no_roundtrip.find(needle) != std::string::npos) roundtrip = false;
    }
    if (roundtrip) {
      const auto ids = (*tok)->Encode(bytes, false);
      const auto back = ids.ok() ? (*tok)->Decode(*ids, false) : longctx::Result<std::string>(ids.status());
      check(back.ok() && *back == bytes, i, "decode(encode(x)) == x",
            fmt::format("{} came back as {}", Short(bytes), back.ok() ? Short(*back) : back.status().message()));
    }
  }
  fmt::print("{} passed, {} failed\n", passed, failed);
  return failed == 0 && passed > 0 ? 0 : 1;
}
