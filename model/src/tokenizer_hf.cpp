// HfTokenizer: a Hugging Face tokenizer.json, encoded and decoded as the `tokenizers` library
// (v0.2x) does. The pipeline of one Encode, as the library's TokenizerImpl::encode_single_sequence:
//   1. added tokens that are not `normalized` are found in the raw text (leftmost-longest, their
//      lstrip / rstrip / single_word flags honoured); the text between them is
//   2. normalized, then searched for the `normalized` added tokens;
//   3. every remaining piece is pre-tokenized (Split, ByteLevel, Metaspace, Digits ...) into
//      words, and each word goes through the BPE model;
//   4. the post-processor adds its special tokens (TemplateProcessing's BOS ...).
// Offsets are not tracked: only ids are returned. Each stage here cites the library function it
// mirrors, because exactness against it is the contract (tests/tokenizer/).
#include <algorithm>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <queue>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "file_util.h"
#include "json_util.h"
#include "longctx/model/tokenizer.h"
#include "tokenizer_text.h"

namespace longctx::model {

using nlohmann::json;
using internal::DecodeUtf8;
using internal::Regex;

namespace {

// A non-owning callable reference (the pre-tokenizers' per-piece callbacks sit on the hot path).
template <typename Sig>
class FnRef;
template <typename R, typename... A>
class FnRef<R(A...)> {
 public:
  template <typename F>
  FnRef(F& f) : obj_(&f), call_([](void* o, A... a) -> R { return (*static_cast<F*>(o))(a...); }) {}
  R operator()(A... a) const { return call_(obj_, a...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};
// A piece of text and whether it begins at offset 0 of the original input (Metaspace "first").
using Emit = FnRef<void(std::string_view, bool)>;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// (left id, right id) -> (rank, merged id): open addressing, the hot lookup of BPE.
class MergeMap {
 public:
  void Reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    keys_.assign(cap, kEmpty);
    vals_.assign(cap, {0, 0});
    mask_ = cap - 1;
  }
  void Put(int32_t a, int32_t b, int32_t rank, int32_t id) {
    const uint64_t k = Key(a, b);
    size_t i = Hash(k);
    while (keys_[i] != kEmpty && keys_[i] != k) i = (i + 1) & mask_;
    keys_[i] = k;
    vals_[i] = {rank, id};
  }
  // False when the pair has no merge.
  bool Get(int32_t a, int32_t b, int32_t* rank, int32_t* id) const {
    if (keys_.empty()) return false;
    const uint64_t k = Key(a, b);
    size_t i = Hash(k);
    while (true) {
      const uint64_t x = keys_[i];
      if (x == k) {
        *rank = vals_[i].first;
        *id = vals_[i].second;
        return true;
      }
      if (x == kEmpty) return false;
      i = (i + 1) & mask_;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  static uint64_t Key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  size_t Hash(uint64_t k) const { return size_t((k * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
  std::vector<uint64_t> keys_;
  std::vector<std::pair<int32_t, int32_t>> vals_;
  size_t mask_ = 0;
};

// ---- normalizers (tokenizers/src/normalizers) -------------------------------------------------

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual Status Apply(std::string* s) const = 0;
};

// A Split / Replace pattern: {"String": "..."} or {"Regex": "..."}.
struct Pattern {
  std::string literal;
  std::unique_ptr<Regex> regex;
  // Non-overlapping matches, left to right.
  void Find(std::string_view s, std::vector<std::pair<size_t, size_t>>* out) const {
    if (regex) {
      regex->FindAll(s, out);
      return;
    }
    out->clear();
    if (literal.empty()) return;
    size_t pos = 0;
    while ((pos = s.find(literal, pos)) != std::string_view::npos) {
      out->emplace_back(pos, pos + literal.size());
      pos += literal.size();
    }
  }
};

Result<Pattern> ParsePattern(const json& j, std::string_view where) {
  Pattern p;
  if (j.is_object() && j.contains("String") && j["String"].is_string()) {
    p.literal = j["String"].get<std::string>();
  } else if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) {
    ASSIGN_OR_RETURN(p.regex, Regex::Compile(j["Regex"].get<std::string>()));
  } else {
    return InvalidArgument("{}: pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}, got {}",
                           where, internal::Repr(j));
  }
  return p;
}

struct NormalizerSequence final : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> parts;
  Status Apply(std::string* s) const override {
    for (const auto& p : parts) RETURN_IF_ERROR(p->Apply(s));
    return Status::Ok();
  }
};
struct UnicodeNormalizer final : Normalizer {
  internal::NormForm form;
  explicit UnicodeNormalizer(internal::NormForm f) : form(f) {}
  Status Apply(std::string* s) const override { return internal::Normalize(form, s); }
};
struct PrependNormalizer final : Normalizer {
  std::string prepend;
  Status Apply(std::string* s) const override {
    if (!s->empty()) s->insert(0, prepend);
    return Status::Ok();
  }
};
struct ReplaceNormalizer final : Normalizer {
  Pattern pattern;
  std::string content;
  Status Apply(std::string* s) const override {
    thread_local std::vector<std::pair<size_t, size_t>> m;
    pattern.Find(*s, &m);
    if (m.empty()) return Status::Ok();
    std::string out;
    out.reserve(s->size() + m.size() * content.size());
    size_t prev = 0;
    for (auto [a, b] : m) {
      out.append(*s, prev, a - prev);
      out += content;
      prev = b;
    }
    out.append(*s, prev, std::string::npos);
    *s = std::move(out);
    return Status::Ok();
  }
};
struct LowercaseNormalizer final : Normalizer {
  Status Apply(std::string* s) const override {
    *s = internal::LowercaseChars(*s);
    return Status::Ok();
  }
};
struct StripNormalizer final : Normalizer {
  bool left = true, right = true;
  Status Apply(std::string* s) const override {
    size_t a = 0, b = s->size();
    while (left && a < b) {
      int len;
      const char32_t cp = DecodeUtf8(*s, a, &len);
      if (!internal::IsWhitespace(cp)) break;
      a += size_t(len);
    }
    while (right && b > a) {
      size_t k = b - 1;
      while (k > a && (uint8_t((*s)[k]) & 0xC0) == 0x80) --k;
      int len;
      const char32_t cp = DecodeUtf8(*s, k, &len);
      if (!internal::IsWhitespace(cp)) break;
      b = k;
    }
    *s = s->substr(a, b - a);
    return Status::Ok();
  }
};

Result<std::unique_ptr<Normalizer>> ParseNormalizer(const json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return InvalidArgument("normalizer without a \"type\": {}", internal::Repr(j));
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    auto seq = std::make_unique<NormalizerSequence>();
    for (const json& x : j.value("normalizers", json::array())) {
      ASSIGN_OR_RETURN(auto p, ParseNormalizer(x));
      seq->parts.push_back(std::move(p));
    }
    return std::unique_ptr<Normalizer>(std::move(seq));
  }
  if (type == "NFC") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(internal::NormForm::kNFC));
  if (type == "NFD") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(internal::NormForm::kNFD));
  if (type == "NFKC") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(internal::NormForm::kNFKC));
  if (type == "NFKD") return std::unique_ptr<Normalizer>(new UnicodeNormalizer(internal::NormForm::kNFKD));
  if (type == "Prepend") {
    auto p = std::make_unique<PrependNormalizer>();
    p->prepend = j.value("prepend", std::string());
    return std::unique_ptr<Normalizer>(std::move(p));
  }
  if (type == "Replace") {
    auto p = std::make_unique<ReplaceNormalizer>();
    ASSIGN_OR_RETURN(p->pattern, ParsePattern(j.value("pattern", json()), "Replace normalizer"));
    p->content = j.value("content", std::string());
    return std::unique_ptr<Normalizer>(std::move(p));
  }
  if (type == "Lowercase") return std::unique_ptr<Normalizer>(new LowercaseNormalizer());
  if (type == "Strip") {
    auto p = std::make_unique<StripNormalizer>();
    p->left = j.value("strip_left", true);
    p->right = j.value("strip_right", true);
    return std::unique_ptr<Normalizer>(std::move(p));
  }
  return Unimplemented("unsupported normalizer type '{}'", type);
}

// ---- pre-tokenizers (tokenizers/src/pre_tokenizers) -------------------------------------------

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Result<SplitBehavior> ParseBehavior(const json& j) {
  const std::string b = j.is_string() ? j.get<std::string>() : std::string();
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return InvalidArgument("unsupported split behavior {}", internal::Repr(j));
}

struct Span {
  size_t a, b;
  bool match;
};

// NormalizedString::split: `m` are the (sorted, non-overlapping) matches in s; emits the pieces
// the behaviour keeps, non-empty ones only (PreTokenizedString::split drops empty splits).
void SplitByMatches(std::string_view s, bool at_start,
                    const std::vector<std::pair<size_t, size_t>>& m, SplitBehavior behavior,
                    bool invert, Emit emit) {
  thread_local std::vector<Span> spans_tl;
  std::vector<Span> spans;
  spans.swap(spans_tl);  // reuse the buffer; a nested call gets an empty one
  spans.clear();
  size_t prev = 0;
  for (auto [a, b] : m) {
    if (prev != a) spans.push_back({prev, a, invert});
    spans.push_back({a, b, !invert});
    prev = b;
  }
  if (prev != s.size()) spans.push_back({prev, s.size(), invert});
  if (s.empty()) spans.push_back({0, 0, false});
  std::vector<Span> out;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      out = spans;
      break;
    case SplitBehavior::kRemoved:
      for (const Span& x : spans) {
        if (!x.match) out.push_back(x);
      }
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const Span& x : spans) {
        if (x.match && !prev_match && !out.empty()) out.back().b = x.b;
        else out.push_back(x);
        prev_match = x.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev_match = false;
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& x = spans[k];
        if (x.match && !prev_match && !out.empty()) out.back().a = x.a;
        else out.push_back(x);
        prev_match = x.match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool prev_match = false;
      for (const Span& x : spans) {
        if (x.match == prev_match && !out.empty()) out.back().b = x.b;
        else out.push_back(x);
        prev_match = x.match;
      }
      break;
    }
  }
  spans.swap(spans_tl);
  for (const Span& x : out) {
    if (x.b > x.a) emit(s.substr(x.a, x.b - x.a), at_start && x.a == 0);
  }
}

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void Apply(std::string_view s, bool at_start, Emit emit) const = 0;
};

struct PreTokenizerSequence final : PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void Run(size_t k, std::string_view s, bool at_start, Emit emit) const {
    if (k == parts.size()) {
      emit(s, at_start);
      return;
    }
    auto next = [&](std::string_view piece, bool st) { Run(k + 1, piece, st, emit); };
    parts[k]->Apply(s, at_start, Emit(next));
  }
  void Apply(std::string_view s, bool at_start, Emit emit) const override {
    Run(0, s, at_start, emit);
  }
};

struct SplitPreTokenizer final : PreTokenizer {
  Pattern pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  void Apply(std::string_view s, bool at_start, Emit emit) const override {
    std::vector<std::pair<size_t, size_t>> m;
    pattern.Find(s, &m);
    SplitByMatches(s, at_start, m, behavior, invert, emit);
  }
};

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to U+0100 onwards.
struct ByteLevelTables {
  std::string byte_to_utf8[256];
  int16_t char_to_byte[0x200];  // code point (< 0x200) -> byte, -1 when not a byte char
  ByteLevelTables() {
    std::fill(std::begin(char_to_byte), std::end(char_to_byte), int16_t(-1));
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp = printable ? char32_t(b) : char32_t(256 + n++);
      internal::AppendUtf8(cp, &byte_to_utf8[b]);
      char_to_byte[cp] = int16_t(b);
    }
  }
};
const ByteLevelTables& ByteTables() {
  static const ByteLevelTables t;
  return t;
}

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct ByteLevelPreTokenizer final : PreTokenizer {
  bool add_prefix_space = false;
  std::unique_ptr<Regex> regex;  // set when use_regex
  void Apply(std::string_view s, bool at_start, Emit emit) const override {
    std::string prefixed;
    if (add_prefix_space && (s.empty() || s[0] != ' ')) {
      prefixed = " ";
      prefixed += s;
      s = prefixed;
    }
    auto map = [&](std::string_view piece, bool st) {
      const ByteLevelTables& t = ByteTables();
      std::string mapped;
      mapped.reserve(piece.size() * 2);
      for (char c : piece) mapped += t.byte_to_utf8[uint8_t(c)];
      emit(mapped, st);
    };
    if (regex) {
      std::vector<std::pair<size_t, size_t>> m;
      regex->FindAll(s, &m);
      SplitByMatches(s, at_start, m, SplitBehavior::kIsolated, false, Emit(map));
    } else {
      map(s, at_start);
    }
  }
};

enum class PrependScheme { kAlways, kFirst, kNever };

struct MetaspacePreTokenizer final : PreTokenizer {
  std::string replacement = "\xE2\x96\x81";  // ▁
  PrependScheme scheme = PrependScheme::kAlways;
  bool split = true;
  void Apply(std::string_view s, bool at_start, Emit emit) const override {
    std::string r;
    r.reserve(s.size() + 8);
    for (char c : s) {
      if (c == ' ') r += replacement;
      else r.push_back(c);
    }
    const bool starts = r.compare(0, replacement.size(), replacement) == 0;
    if (!starts && (scheme == PrependScheme::kAlways || (scheme == PrependScheme::kFirst && at_start))) {
      r.insert(0, replacement);
    }
    if (!split) {
      emit(r, at_start);
      return;
    }
    std::vector<std::pair<size_t, size_t>> m;
    for (size_t pos = 0; (pos = r.find(replacement, pos)) != std::string::npos;
         pos += replacement.size()) {
      m.emplace_back(pos, pos + replacement.size());
    }
    SplitByMatches(r, at_start, m, SplitBehavior::kMergedWithNext, false, emit);
  }
};

struct DigitsPreTokenizer final : PreTokenizer {
  bool individual = false;
  void Apply(std::string_view s, bool at_start, Emit emit) const override {
    std::vector<std::pair<size_t, size_t>> m;
    for (size_t i = 0; i < s.size();) {
      int len;
      const char32_t cp = DecodeUtf8(s, i, &len);
      if (internal::IsNumeric(cp)) m.emplace_back(i, i + size_t(len));
      i += size_t(len);
    }
    SplitByMatches(s, at_start, m,
                   individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false, emit);
  }
};

// WhitespaceSplit: split on whitespace, removing it.
struct WhitespaceSplitPreTokenizer final : PreTokenizer {
  void Apply(std::string_view s, bool at_start, Emit emit) const override {
    std::vector<std::pair<size_t, size_t>> m;
    for (size_t i = 0; i < s.size();) {
      int len;
      const char32_t cp = DecodeUtf8(s, i, &len);
      if (internal::IsWhitespace(cp)) m.emplace_back(i, i + size_t(len));
      i += size_t(len);
    }
    SplitByMatches(s, at_start, m, SplitBehavior::kRemoved, false, emit);
  }
};

Result<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return InvalidArgument("pre_tokenizer without a \"type\": {}", internal::Repr(j));
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    auto seq = std::make_unique<PreTokenizerSequence>();
    for (const json& x : j.value("pretokenizers", json::array())) {
      ASSIGN_OR_RETURN(auto p, ParsePreTokenizer(x));
      seq->parts.push_back(std::move(p));
    }
    return std::unique_ptr<PreTokenizer>(std::move(seq));
  }
  if (type == "Split") {
    auto p = std::make_unique<SplitPreTokenizer>();
    ASSIGN_OR_RETURN(p->pattern, ParsePattern(j.value("pattern", json()), "Split pre-tokenizer"));
    ASSIGN_OR_RETURN(p->behavior, ParseBehavior(j.value("behavior", json())));
    p->invert = j.value("invert", false);
    return std::unique_ptr<PreTokenizer>(std::move(p));
  }
  if (type == "ByteLevel") {
    auto p = std::make_unique<ByteLevelPreTokenizer>();
    p->add_prefix_space = j.value("add_prefix_space", true);
    if (j.value("use_regex", true)) {
      ASSIGN_OR_RETURN(p->regex, Regex::Compile(kGpt2Pattern));
    }
    return std::unique_ptr<PreTokenizer>(std::move(p));
  }
  if (type == "Metaspace") {
    auto p = std::make_unique<MetaspacePreTokenizer>();
    p->replacement = j.value("replacement", std::string("\xE2\x96\x81"));
    p->split = j.value("split", true);
    const std::string scheme = j.value("prepend_scheme", std::string());
    if (scheme == "always") p->scheme = PrependScheme::kAlways;
    else if (scheme == "first") p->scheme = PrependScheme::kFirst;
    else if (scheme == "never") p->scheme = PrependScheme::kNever;
    else if (scheme.empty()) p->scheme = j.value("add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
    else return InvalidArgument("Metaspace: unknown prepend_scheme '{}'", scheme);
    return std::unique_ptr<PreTokenizer>(std::move(p));
  }
  if (type == "Digits") {
    auto p = std::make_unique<DigitsPreTokenizer>();
    p->individual = j.value("individual_digits", false);
    return std::unique_ptr<PreTokenizer>(std::move(p));
  }
  if (type == "WhitespaceSplit") return std::unique_ptr<PreTokenizer>(new WhitespaceSplitPreTokenizer());
  return Unimplemented("unsupported pre_tokenizer type '{}'", type);
}

// ---- decoders (tokenizers/src/decoders) -------------------------------------------------------

struct Decoder {
  virtual ~Decoder() = default;
  virtual void Apply(std::vector<std::string>* tokens) const = 0;  // decode_chain
};

struct DecoderSequence final : Decoder {
  std::vector<std::unique_ptr<Decoder>> parts;
  void Apply(std::vector<std::string>* t) const override {
    for (const auto& p : parts) p->Apply(t);
  }
};
struct ByteLevelDecoder final : Decoder {
  void Apply(std::vector<std::string>* t) const override {
    const ByteLevelTables& tab = ByteTables();
    std::string bytes;
    for (const std::string& tok : *t) {
      const size_t mark = bytes.size();
      bool all = true;
      for (size_t i = 0; i < tok.size();) {
        int len;
        const char32_t cp = DecodeUtf8(tok, i, &len);
        i += size_t(len);
        if (cp >= 0x200 || tab.char_to_byte[cp] < 0) {
          all = false;
          break;
        }
        bytes.push_back(char(tab.char_to_byte[cp]));
      }
      if (!all) {  // a token with a char outside the byte map passes as its own bytes
        bytes.resize(mark);
        bytes += tok;
      }
    }
    t->assign(1, ToValidUtf8(bytes));  // String::from_utf8_lossy
  }
};
struct ByteFallbackDecoder final : Decoder {
  void Apply(std::vector<std::string>* t) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (IsValidUtf8(pending)) out.push_back(pending);
      else for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      pending.clear();
    };
    for (std::string& tok : *t) {
      int byte = -1;
      if (tok.size() == 6 && tok.compare(0, 3, "<0x") == 0 && tok[5] == '>') {
        auto hex = [](char c) {
          if (c >= '0' && c <= '9') return c - '0';
          if (c >= 'A' && c <= 'F') return c - 'A' + 10;
          if (c >= 'a' && c <= 'f') return c - 'a' + 10;
          return -1;
        };
        const int h = hex(tok[3]), l = hex(tok[4]);
        if (h >= 0 && l >= 0) byte = h * 16 + l;
      }
      if (byte >= 0) {
        pending.push_back(char(byte));
      } else {
        flush();
        out.push_back(std::move(tok));
      }
    }
    flush();
    *t = std::move(out);
  }
};
struct FuseDecoder final : Decoder {
  void Apply(std::vector<std::string>* t) const override {
    std::string all;
    for (const std::string& s : *t) all += s;
    t->assign(1, std::move(all));
  }
};
struct StripDecoder final : Decoder {
  char32_t content = ' ';
  size_t start = 0, stop = 0;
  void Apply(std::vector<std::string>* t) const override {
    for (std::string& tok : *t) {
      std::vector<std::pair<char32_t, size_t>> chars;  // (code point, byte offset)
      for (size_t i = 0; i < tok.size();) {
        int len;
        chars.emplace_back(DecodeUtf8(tok, i, &len), i);
        i += size_t(len);
      }
      size_t a = 0;
      for (size_t i = 0; i < std::min(start, chars.size()); ++i) {
        if (chars[i].first == content) a = i + 1;
        else break;
      }
      size_t b = chars.size();
      for (size_t i = 0; i < stop && i < chars.size(); ++i) {
        const size_t idx = chars.size() - i - 1;
        if (chars[idx].first == content) b = idx;
        else break;
      }
      if (b <= a) {
        tok.clear();
        continue;
      }
      const size_t ba = a < chars.size() ? chars[a].second : tok.size();
      const size_t bb = b < chars.size() ? chars[b].second : tok.size();
      tok = tok.substr(ba, bb - ba);
    }
  }
};
struct ReplaceDecoder final : Decoder {
  ReplaceNormalizer replace;
  void Apply(std::vector<std::string>* t) const override {
    for (std::string& tok : *t) (void)replace.Apply(&tok);
  }
};
struct MetaspaceDecoder final : Decoder {
  std::string replacement = "\xE2\x96\x81";
  bool prepend = true;  // prepend_scheme != never
  void Apply(std::vector<std::string>* t) const override {
    for (size_t i = 0; i < t->size(); ++i) {
      std::string& tok = (*t)[i];
      std::string out;
      for (size_t pos = 0; pos < tok.size();) {
        if (tok.compare(pos, replacement.size(), replacement) == 0) {
          if (!(i == 0 && prepend)) out.push_back(' ');
          pos += replacement.size();
        } else {
          out.push_back(tok[pos++]);
        }
      }
      tok = std::move(out);
    }
  }
};

Result<std::unique_ptr<Decoder>> ParseDecoder(const json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return InvalidArgument("decoder without a \"type\": {}", internal::Repr(j));
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    auto seq = std::make_unique<DecoderSequence>();
    for (const json& x : j.value("decoders", json::array())) {
      ASSIGN_OR_RETURN(auto p, ParseDecoder(x));
      seq->parts.push_back(std::move(p));
    }
    return std::unique_ptr<Decoder>(std::move(seq));
  }
  if (type == "ByteLevel") return std::unique_ptr<Decoder>(new ByteLevelDecoder());
  if (type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
  if (type == "Fuse") return std::unique_ptr<Decoder>(new FuseDecoder());
  if (type == "Strip") {
    auto p = std::make_unique<StripDecoder>();
    const std::string c = j.value("content", std::string(" "));
    int len = 0;
    p->content = c.empty() ? U' ' : DecodeUtf8(c, 0, &len);
    p->start = j.value("start", size_t(0));
    p->stop = j.value("stop", size_t(0));
    return std::unique_ptr<Decoder>(std::move(p));
  }
  if (type == "Replace") {
    auto p = std::make_unique<ReplaceDecoder>();
    ASSIGN_OR_RETURN(p->replace.pattern, ParsePattern(j.value("pattern", json()), "Replace decoder"));
    p->replace.content = j.value("content", std::string());
    return std::unique_ptr<Decoder>(std::move(p));
  }
  if (type == "Metaspace") {
    auto p = std::make_unique<MetaspaceDecoder>();
    p->replacement = j.value("replacement", std::string("\xE2\x96\x81"));
    const std::string scheme = j.value("prepend_scheme", std::string());
    p->prepend = scheme.empty() ? j.value("add_prefix_space", true) : scheme != "never";
    return std::unique_ptr<Decoder>(std::move(p));
  }
  return Unimplemented("unsupported decoder type '{}'", type);
}

// ---- added tokens: a byte trie, leftmost-longest as the library's aho-corasick -----------------

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, normalized = false, lstrip = false, rstrip = false, single_word = false;
};

class AddedTrie {
 public:
  AddedTrie() { nodes_.emplace_back(); }
  void Insert(std::string_view s, int32_t token_index) {
    if (s.empty()) return;
    int32_t n = 0;
    for (char c : s) {
      const auto b = uint8_t(c);
      int32_t next = Child(n, b);
      if (next < 0) {
        next = int32_t(nodes_.size());
        nodes_[size_t(n)].kids.emplace_back(b, next);
        nodes_.emplace_back();
      }
      n = next;
    }
    if (nodes_[size_t(n)].token < 0) nodes_[size_t(n)].token = token_index;
    first_[uint8_t(s[0])] = true;
    empty_ = false;
  }
  bool empty() const { return empty_; }
  // Leftmost-longest non-overlapping matches (start, end, token index).
  void FindAll(std::string_view s, std::vector<std::tuple<size_t, size_t, int32_t>>* out) const {
    out->clear();
    if (empty_) return;
    size_t i = 0;
    while (i < s.size()) {
      if (!first_[uint8_t(s[i])]) {
        ++i;
        continue;
      }
      int32_t n = 0, best = -1;
      size_t best_end = 0;
      for (size_t k = i; k < s.size(); ++k) {
        n = Child(n, uint8_t(s[k]));
        if (n < 0) break;
        if (nodes_[size_t(n)].token >= 0) {
          best = nodes_[size_t(n)].token;
          best_end = k + 1;
        }
      }
      if (best >= 0) {
        out->emplace_back(i, best_end, best);
        i = best_end;
      } else {
        ++i;
      }
    }
  }

 private:
  struct Node {
    int32_t token = -1;
    std::vector<std::pair<uint8_t, int32_t>> kids;
  };
  int32_t Child(int32_t n, uint8_t b) const {
    for (const auto& [c, k] : nodes_[size_t(n)].kids) {
      if (c == b) return k;
    }
    return -1;
  }
  std::vector<Node> nodes_;
  bool first_[256] = {};
  bool empty_ = true;
};

// Rust's helpers in added_vocabulary.rs.
bool EndsWithWord(std::string_view s) {
  if (s.empty()) return false;
  size_t k = s.size() - 1;
  while (k > 0 && (uint8_t(s[k]) & 0xC0) == 0x80) --k;
  int len;
  return internal::IsAlphanumeric(DecodeUtf8(s, k, &len));
}
bool StartsWithWord(std::string_view s) {
  if (s.empty()) return false;
  int len;
  return internal::IsAlphanumeric(DecodeUtf8(s, 0, &len));
}
// Byte offset where the trailing whitespace of s begins.
size_t SpaceLeftmostAtEnd(std::string_view s) {
  size_t b = s.size();
  while (b > 0) {
    size_t k = b - 1;
    while (k > 0 && (uint8_t(s[k]) & 0xC0) == 0x80) --k;
    int len;
    if (!internal::IsWhitespace(DecodeUtf8(s, k, &len))) break;
    b = k;
  }
  return b;
}
// Byte length of the leading whitespace of s.
size_t SpaceRightmostAtStart(std::string_view s) {
  size_t a = 0;
  while (a < s.size()) {
    int len;
    if (!internal::IsWhitespace(DecodeUtf8(s, a, &len))) break;
    a += size_t(len);
  }
  return a;
}

// The post-processor: ids added around the sequence when add_special_tokens.
struct PostProcessor {
  std::vector<int32_t> prefix, suffix;  // TemplateProcessing "single", Roberta/Bert cls/sep
};

}  // namespace

// ---- the tokenizer ----------------------------------------------------------------------------

struct HfTokenizer::Impl {
  std::string name;
  // Model (BPE).
  Vocab vocab;
  std::vector<std::string> id_to_token;  // model vocabulary, then added tokens (decode)
  MergeMap merges;
  bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
  int32_t unk_id = -1;
  std::string prefix, suffix;    // continuing_subword_prefix, end_of_word_suffix
  int32_t byte_ids[256];         // <0xXX> tokens (byte_fallback)
  std::vector<int32_t> char_id;  // code point < 0x10000 -> vocabulary id of that one character
  // Long-word segmentation (MergeLongWord): enabled when "▁" is a token and there is no
  // continuing_subword_prefix / end_of_word_suffix; the characters seen before "▁" in a token.
  int32_t cut_char = -1;
  std::vector<uint8_t> cut_forbidden;  // code point < 0x10000
  bool cut_forbidden_high = false;     // some code point >= 0x10000 precedes "▁" in a token
  // Added tokens.
  std::vector<AddedToken> added;
  std::vector<uint8_t> special;  // per id: an added special token (skipped by skip_special)
  std::vector<uint8_t> present;  // per id: names a token (vocabulary or added)
  AddedTrie raw_trie, norm_trie;
  // Pipeline.
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<Decoder> decoder;
  PostProcessor post;
  int32_t bos = -1;
  std::vector<int32_t> eos;

  // Per-call memo of word -> ids (the library keeps a similar cache of 10,000 words).
  struct WordCache {
    std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash, std::equal_to<>> map;
    std::vector<int32_t> ids;
  };

  int32_t VocabId(std::string_view s) const {
    auto it = vocab.find(s);
    return it == vocab.end() ? -1 : it->second;
  }

  // BPE::merge_word + Word::merge_all.
  void MergeWord(std::string_view w, std::vector<int32_t>* out) const {
    struct Sym {
      int32_t c, prev, next, len;
    };
    std::vector<Sym> syms;
    syms.reserve(w.size());
    int32_t unk = -1, unk_len = 0;
    auto add = [&](int32_t id, int32_t len) {
      const int32_t n = int32_t(syms.size());
      syms.push_back({id, n - 1, n + 1, len});
    };
    std::string tmp;
    for (size_t i = 0; i < w.size();) {
      int clen;
      const char32_t cp = DecodeUtf8(w, i, &clen);
      const bool first = i == 0, last = i + size_t(clen) >= w.size();
      const std::string_view ch = w.substr(i, size_t(clen));
      int32_t id;
      if ((first || prefix.empty()) && (!last || suffix.empty()) && cp < 0x10000) {
        id = char_id[cp];
      } else {
        tmp.clear();
        if (!first) tmp += prefix;
        tmp += ch;
        if (last) tmp += suffix;
        id = VocabId(tmp);
      }
      i += size_t(clen);
      if (id >= 0) {
        if (unk >= 0) {
          add(unk, unk_len);
          unk = -1;
        }
        add(id, clen);
        continue;
      }
      if (byte_fallback) {
        // The library looks up the (prefixed) piece's bytes; all must exist.
        const std::string_view piece = (first || prefix.empty()) && (!last || suffix.empty())
                                           ? ch : std::string_view(tmp);
        bool all = true;
        for (char b : piece) all = all && byte_ids[uint8_t(b)] >= 0;
        if (all) {
          if (unk >= 0) {  // never reached in the library either: a fallback keeps unk pending
          }
          for (char b : piece) add(byte_ids[uint8_t(b)], 1);
          continue;
        }
      }
      if (unk_id >= 0) {
        if (unk >= 0 && fuse_unk) {
          unk_len += clen;
        } else {
          if (unk >= 0) add(unk, unk_len);
          unk = unk_id;
          unk_len = clen;
        }
      }
    }
    if (unk >= 0) add(unk, unk_len);
    if (syms.empty()) return;
    syms.back().next = -1;
    // Merge queue: lowest rank first, then leftmost position.
    struct M {
      int32_t rank, pos, id;
      bool operator<(const M& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<M> q;
    for (size_t k = 0; k + 1 < syms.size(); ++k) {
      int32_t r, id;
      if (merges.Get(syms[k].c, syms[k + 1].c, &r, &id)) q.push({r, int32_t(k), id});
    }
    const int32_t n = int32_t(syms.size());
    while (!q.empty()) {
      const M top = q.top();
      q.pop();
      Sym& cur = syms[size_t(top.pos)];
      if (cur.len == 0 || cur.next == -1) continue;
      const int32_t np = cur.next;
      const Sym right = syms[size_t(np)];
      int32_t r, id;
      if (!merges.Get(cur.c, right.c, &r, &id) || id != top.id) continue;
      cur.c = top.id;
      cur.len += right.len;
      cur.next = right.next;
      syms[size_t(np)].len = 0;
      if (right.next > -1 && right.next < n) syms[size_t(right.next)].prev = top.pos;
      if (cur.prev >= 0) {
        if (merges.Get(syms[size_t(cur.prev)].c, cur.c, &r, &id)) q.push({r, cur.prev, id});
      }
      if (cur.next >= 0 && cur.next < n) {
        if (merges.Get(cur.c, syms[size_t(cur.next)].c, &r, &id)) q.push({r, top.pos, id});
      }
    }
    for (const Sym& s : syms) {
      if (s.len != 0) out->push_back(s.c);
    }
  }

  // A long word (SentencePiece-style files make the whole text between added tokens one word)
  // merged in segments cut before a "▁" whose left neighbour is neither "▁" nor a character that
  // precedes "▁" inside some vocabulary token: no merge can cross such a cut (every merge yields
  // a vocabulary token), so the segments merge independently and the result is the same.
  void MergeLongWord(std::string_view w, std::vector<int32_t>* out) const {
    static constexpr std::string_view kCut = "\xE2\x96\x81";
    size_t seg = 0, prev_char_start = 0;
    for (size_t i = 0; i < w.size();) {
      const int len = internal::Utf8Len(uint8_t(w[i]));
      if (i - seg >= 256 && w.compare(i, kCut.size(), kCut) == 0) {
        int plen;
        const char32_t prev = DecodeUtf8(w, prev_char_start, &plen);
        if (prev != U'\u2581' && !(prev < cut_forbidden.size() && cut_forbidden[prev]) &&
            !(prev >= cut_forbidden.size() && cut_forbidden_high)) {
          MergeWord(w.substr(seg, i - seg), out);
          seg = i;
        }
      }
      prev_char_start = i;
      i += size_t(len);
    }
    MergeWord(w.substr(seg), out);
  }

  // BPE::tokenize of one pre-tokenized word.
  void TokenizeWord(std::string_view w, WordCache* cache, std::vector<int32_t>* out) const {
    if (w.empty()) return;
    if (ignore_merges) {
      const int32_t id = VocabId(w);
      if (id >= 0) {
        out->push_back(id);
        return;
      }
    }
    const bool cacheable = w.size() <= 64;
    if (cacheable) {
      auto it = cache->map.find(w);
      if (it != cache->map.end()) {
        out->insert(out->end(), cache->ids.begin() + it->second.first,
                    cache->ids.begin() + it->second.first + it->second.second);
        return;
      }
    }
    const size_t mark = out->size();
    if (w.size() > 1024 && cut_char >= 0) {
      MergeLongWord(w, out);
      return;
    }
    MergeWord(w, out);
    if (cacheable && cache->map.size() < (1u << 20)) {
      const auto start = uint32_t(cache->ids.size());
      cache->ids.insert(cache->ids.end(), out->begin() + long(mark), out->end());
      cache->map.emplace(std::string(w), std::make_pair(start, uint32_t(out->size() - mark)));
    }
  }

  // Normalize, split on normalized added tokens, pre-tokenize and tokenize one piece of text
  // found between non-normalized added tokens.
  Status EncodePiece(std::string_view raw, bool at_start, WordCache* cache,
                     std::vector<int32_t>* out) const {
    std::string text(raw);
    if (normalizer) RETURN_IF_ERROR(normalizer->Apply(&text));
    auto model = [&](std::string_view piece, bool st) {
      if (!pre_tokenizer) {
        TokenizeWord(piece, cache, out);
        return;
      }
      auto word = [&](std::string_view w, bool) { TokenizeWord(w, cache, out); };
      pre_tokenizer->Apply(piece, st, Emit(word));
    };
    if (norm_trie.empty()) {
      if (!text.empty()) model(text, at_start);
      return Status::Ok();
    }
    std::vector<std::tuple<size_t, size_t, int32_t>> m;
    norm_trie.FindAll(text, &m);
    MatchAdded(text, m, at_start, [&](std::string_view piece, bool st) { model(piece, st); }, out);
    return Status::Ok();
  }

  // AddedVocabulary::find_matches over `s`: the flags applied to the trie's matches; pieces
  // between them go to `piece`, matched tokens' ids to `out`.
  template <typename F>
  void MatchAdded(std::string_view s, const std::vector<std::tuple<size_t, size_t, int32_t>>& m,
                  bool at_start, F&& piece, std::vector<int32_t>* out) const {
    MatchAdded(s, m, at_start, piece, [out](int32_t id) { out->push_back(id); });
  }
  template <typename F, typename G>
  void MatchAdded(std::string_view s, const std::vector<std::tuple<size_t, size_t, int32_t>>& m,
                  bool at_start, F&& piece, G&& added_id) const {
    size_t start_offset = 0;
    for (auto [a, b, idx] : m) {
      const AddedToken& t = added[size_t(idx)];
      size_t start = a, stop = b;
      if (t.single_word) {
        const bool start_space = start == 0 || !EndsWithWord(s.substr(0, start));
        const bool stop_space = stop == s.size() || !StartsWithWord(s.substr(stop));
        if (!start_space || !stop_space) continue;
      }
      if (t.lstrip) start = std::max(SpaceLeftmostAtEnd(s.substr(0, start)), start_offset);
      if (t.rstrip) stop += SpaceRightmostAtStart(s.substr(stop));
      if (start_offset < start) {
        piece(s.substr(start_offset, start - start_offset), at_start && start_offset == 0);
      }
      added_id(t.id);
      start_offset = stop;
    }
    if (start_offset < s.size()) {
      piece(s.substr(start_offset), at_start && start_offset == 0);
    }
  }

  Status EncodeNoPost(std::string_view text, std::vector<int32_t>* out) const {
    WordCache cache;
    if (raw_trie.empty()) return EncodePiece(text, true, &cache, out);
    std::vector<std::tuple<size_t, size_t, int32_t>> m;
    raw_trie.FindAll(text, &m);
    Status st;
    MatchAdded(text, m, true, [&](std::string_view piece, bool at_start) {
      if (st.ok()) st = EncodePiece(piece, at_start, &cache, out);
    }, out);
    return st;
  }
};

HfTokenizer::HfTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfTokenizer::~HfTokenizer() = default;

namespace {

// The id of {"id": "<s>"} style references in post-processors, or an error naming it.
Result<int32_t> SpecialId(const HfTokenizer::Impl& t, const json& j, std::string_view where) {
  if (j.is_array() && j.size() == 2 && j[1].is_number_integer()) return j[1].get<int32_t>();
  return InvalidArgument("{}: expected [\"token\", id], got {}", where, internal::Repr(j));
  (void)t;
}

Status ParsePostProcessor(const HfTokenizer::Impl& t, const json& j, PostProcessor* p) {
  if (j.is_null()) return Status::Ok();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return InvalidArgument("post_processor without a \"type\": {}", internal::Repr(j));
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "ByteLevel") return Status::Ok();  // offsets only
  if (type == "Sequence") {
    for (const json& x : j.value("processors", json::array())) {
      PostProcessor q;
      RETURN_IF_ERROR(ParsePostProcessor(t, x, &q));
      p->prefix.insert(p->prefix.end(), q.prefix.begin(), q.prefix.end());
      p->suffix.insert(p->suffix.begin(), q.suffix.begin(), q.suffix.end());
    }
    return Status::Ok();
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    ASSIGN_OR_RETURN(int32_t cls, SpecialId(t, j.value("cls", json()), type));
    ASSIGN_OR_RETURN(int32_t sep, SpecialId(t, j.value("sep", json()), type));
    p->prefix = {cls};
    p->suffix = {sep};
    return Status::Ok();
  }
  if (type == "TemplateProcessing") {
    const json& single = j.value("single", json::array());
    const json& specials = j.value("special_tokens", json::object());
    bool seen_a = false;
    for (const json& piece : single) {
      if (piece.contains("Sequence")) {
        seen_a = true;
        continue;
      }
      if (!piece.contains("SpecialToken")) {
        return InvalidArgument("TemplateProcessing: unknown piece {}", internal::Repr(piece));
      }
      const std::string name = piece["SpecialToken"].value("id", std::string());
      if (!specials.contains(name) || !specials[name].contains("ids")) {
        return InvalidArgument("TemplateProcessing: special token '{}' is not defined", name);
      }
      for (const json& id : specials[name]["ids"]) {
        (seen_a ? p->suffix : p->prefix).push_back(id.get<int32_t>());
      }
    }
    return Status::Ok();
  }
  return Unimplemented("unsupported post_processor type '{}'", type);
}

// BOS/EOS from a tokenizer_config.json next to the file: "bos_token": "<s>" or {"content": ...}.
void ReadSpecialNames(const HfTokenizer& tok, const std::string& json_path, int32_t* bos,
                      std::vector<int32_t>* eos) {
  const auto cfg = std::filesystem::path(json_path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(cfg, ec)) return;
  auto text = internal::ReadSmallFile(cfg.string(), 64u << 20);
  if (!text.ok()) return;
  const json j = json::parse(*text, nullptr, false);
  if (!j.is_object()) return;
  auto name_of = [&](const char* key) -> std::string {
    if (!j.contains(key)) return {};
    const json& v = j[key];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"];
    return {};
  };
  const int32_t b = tok.TokenToId(name_of("bos_token"));
  if (b >= 0) *bos = b;
  const int32_t e = tok.TokenToId(name_of("eos_token"));
  if (e >= 0) eos->assign(1, e);
}

// The model's config.json next to the file: "eos_token_id" (a number or a list) joins the EOS
// ids (Llama-3 instruct models stop at <|eot_id|> as well as <|end_of_text|>).
void ReadConfigEos(const std::string& json_path, std::vector<int32_t>* eos) {
  const auto cfg = std::filesystem::path(json_path).parent_path() / "config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(cfg, ec)) return;
  auto text = internal::ReadSmallFile(cfg.string(), 64u << 20);
  if (!text.ok()) return;
  const json j = json::parse(*text, nullptr, false);
  if (!j.is_object() || !j.contains("eos_token_id")) return;
  const json& v = j["eos_token_id"];
  auto add = [&](const json& x) {
    if (!x.is_number_integer()) return;
    const auto id = x.get<int32_t>();
    if (std::find(eos->begin(), eos->end(), id) == eos->end()) eos->push_back(id);
  };
  if (v.is_array()) {
    for (const json& x : v) add(x);
  } else {
    add(v);
  }
}

Status ParseModel(const json& m, HfTokenizer::Impl* t) {
  if (!m.is_object()) return InvalidArgument("\"model\" must be an object");
  const std::string type = m.value("type", std::string(m.contains("merges") ? "BPE" : ""));
  if (type != "BPE") {
    return Unimplemented("unsupported model type '{}' (only BPE is supported)",
                         type.empty() ? std::string("(none)") : type);
  }
  if (m.contains("dropout") && m["dropout"].is_number() && m["dropout"].get<double>() != 0.0) {
    return Unimplemented("BPE dropout is not supported (it makes encoding random)");
  }
  const json& vocab = m.value("vocab", json());
  if (!vocab.is_object()) return InvalidArgument("model.vocab must be an object");
  t->vocab.reserve(vocab.size());
  int32_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX) {
      return InvalidArgument("model.vocab: token '{}' has id {}", it.key(), internal::Repr(it.value()));
    }
    const auto id = it.value().get<int32_t>();
    t->vocab[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  t->id_to_token.assign(size_t(max_id) + 1, std::string());
  for (const auto& [s, id] : t->vocab) t->id_to_token[size_t(id)] = s;

  auto str_or_empty = [&](const char* k) {
    return m.contains(k) && m[k].is_string() ? m[k].get<std::string>() : std::string();
  };
  t->prefix = str_or_empty("continuing_subword_prefix");
  t->suffix = str_or_empty("end_of_word_suffix");
  t->byte_fallback = m.value("byte_fallback", false);
  t->fuse_unk = m.value("fuse_unk", false);
  t->ignore_merges = m.value("ignore_merges", false);
  const std::string unk = str_or_empty("unk_token");
  if (!unk.empty()) {
    t->unk_id = t->VocabId(unk);
    if (t->unk_id < 0) return InvalidArgument("model.unk_token '{}' is not in the vocabulary", unk);
  }
  for (int b = 0; b < 256; ++b) t->byte_ids[b] = t->VocabId(fmt::format("<0x{:02X}>", b));
  t->char_id.assign(0x10000, -1);
  std::string ch;
  for (char32_t cp = 0; cp < 0x10000; ++cp) {
    if (cp >= 0xD800 && cp < 0xE000) continue;
    ch.clear();
    internal::AppendUtf8(cp, &ch);
    t->char_id[cp] = t->VocabId(ch);
  }

  if (t->prefix.empty() && t->suffix.empty()) {
    t->cut_char = t->VocabId("\xE2\x96\x81");
    t->cut_forbidden.assign(0x10000, 0);
    for (const auto& [s, id] : t->vocab) {
      for (size_t i = 0, prev = std::string::npos; i < s.size();) {
        int len;
        const char32_t cp = DecodeUtf8(s, i, &len);
        if (cp == U'\u2581' && prev != std::string::npos) {
          int pl;
          const char32_t pc = DecodeUtf8(s, prev, &pl);
          if (pc != U'\u2581') {
            if (pc < 0x10000) t->cut_forbidden[pc] = 1;
            else t->cut_forbidden_high = true;
          }
        }
        prev = i;
        i += size_t(len);
      }
    }
  }
  const json& merges = m.value("merges", json::array());
  if (!merges.is_array()) return InvalidArgument("model.merges must be an array");
  t->merges.Reserve(merges.size());
  std::string merged;
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& x = merges[r];
    std::string a, b;
    if (x.is_string()) {
      const std::string& s = x.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos) {
        return InvalidArgument("model.merges[{}]: '{}' is not two tokens separated by a space", r, s);
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (x.is_array() && x.size() == 2 && x[0].is_string() && x[1].is_string()) {
      a = x[0].get<std::string>();
      b = x[1].get<std::string>();
    } else {
      return InvalidArgument("model.merges[{}]: expected \"a b\" or [a, b], got {}", r, internal::Repr(x));
    }
    const int32_t ia = t->VocabId(a), ib = t->VocabId(b);
    if (ia < 0) return InvalidArgument("model.merges[{}]: token '{}' is not in the vocabulary", r, a);
    if (ib < 0) return InvalidArgument("model.merges[{}]: token '{}' is not in the vocabulary", r, b);
    merged = a;
    merged.append(b, std::min(t->prefix.size(), b.size()), std::string::npos);
    const int32_t im = t->VocabId(merged);
    if (im < 0) {
      return InvalidArgument("model.merges[{}]: the merged token '{}' is not in the vocabulary", r, merged);
    }
    t->merges.Put(ia, ib, int32_t(r), im);
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<HfTokenizer>> HfTokenizer::FromJson(std::string_view text,
                                                           const std::string& name) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return InvalidArgument("{}: not a valid tokenizer.json: {}", name, internal::JsonErrorText(e));
  }
  auto impl = std::make_unique<Impl>();
  impl->name = name;
  Status st = [&]() -> Status {
    if (!j.is_object() || !j.contains("model")) {
      return InvalidArgument("not a tokenizer.json (no \"model\" object)");
    }
    RETURN_IF_ERROR(ParseModel(j["model"], impl.get()));
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      ASSIGN_OR_RETURN(impl->normalizer, ParseNormalizer(j["normalizer"]));
    }
    if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
      ASSIGN_OR_RETURN(impl->pre_tokenizer, ParsePreTokenizer(j["pre_tokenizer"]));
    }
    if (j.contains("decoder") && !j["decoder"].is_null()) {
      ASSIGN_OR_RETURN(impl->decoder, ParseDecoder(j["decoder"]));
    }
    RETURN_IF_ERROR(ParsePostProcessor(*impl, j.value("post_processor", json()), &impl->post));
    // Added tokens, as the library's AddedVocabulary::add_tokens in file order: a token whose
    // content is in the model vocabulary takes that id; any other gets the next id after the
    // model's (the file's "id" is not read, as the library does not). A `normalized` token's
    // content is normalized (what it matches and decodes as). Patterns: special ones first.
    const json& added = j.value("added_tokens", json::array());
    if (!added.is_array()) return InvalidArgument("\"added_tokens\" must be an array");
    std::vector<AddedToken> list;
    const auto model_size = int32_t(impl->vocab.size());
    int32_t max_added = -1;
    std::unordered_map<std::string, size_t> seen;
    for (const json& a : added) {
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string()) {
        return InvalidArgument("added_tokens: entry without a content: {}", internal::Repr(a));
      }
      AddedToken t;
      t.content = a["content"].get<std::string>();
      if (t.content.empty()) continue;
      t.special = a.value("special", false);
      t.normalized = a.value("normalized", !t.special);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.single_word = a.value("single_word", false);
      if (t.normalized && impl->normalizer) RETURN_IF_ERROR(impl->normalizer->Apply(&t.content));
      if (t.content.empty()) continue;
      auto it = seen.find(t.content);
      if (it != seen.end()) {  // the same content again: the later flags win, the id stays
        t.id = list[it->second].id;
        list[it->second] = t;
        continue;
      }
      const int32_t model_id = impl->VocabId(t.content);
      if (model_id >= 0) t.id = model_id;
      else if (max_added < 0) t.id = model_size;
      else t.id = max_added >= model_size ? max_added + 1 : model_size;
      max_added = std::max(max_added, t.id);
      seen[t.content] = list.size();
      list.push_back(std::move(t));
    }
    std::stable_partition(list.begin(), list.end(), [](const AddedToken& t) { return t.special; });
    int32_t max_id = int32_t(impl->id_to_token.size()) - 1;
    for (const AddedToken& t : list) max_id = std::max(max_id, t.id);
    impl->present.assign(impl->id_to_token.size(), 1);
    impl->id_to_token.resize(size_t(max_id) + 1);
    impl->present.resize(size_t(max_id) + 1, 0);
    impl->special.assign(size_t(max_id) + 1, 0);
    for (size_t k = 0; k < list.size(); ++k) {
      const AddedToken& t = list[k];
      impl->id_to_token[size_t(t.id)] = t.content;
      impl->present[size_t(t.id)] = 1;
      if (t.special) impl->special[size_t(t.id)] = 1;
      (t.normalized ? impl->norm_trie : impl->raw_trie).Insert(t.content, int32_t(k));
    }
    impl->added = std::move(list);
    // Post-processor ids need not name a token (the library then decodes them as nothing).
    for (const auto* v : {&impl->post.prefix, &impl->post.suffix}) {
      for (int32_t id : *v) {
        if (id < 0) return InvalidArgument("post_processor: negative id {}", id);
        max_id = std::max(max_id, id);
      }
    }
    impl->id_to_token.resize(size_t(max_id) + 1);
    impl->present.resize(size_t(max_id) + 1, 0);
    impl->special.resize(size_t(max_id) + 1, 0);
    if (impl->post.prefix.size() == 1) impl->bos = impl->post.prefix[0];
    return Status::Ok();
  }();
  if (!st.ok()) return Status(st.code(), fmt::format("{}: {}", name, st.message()));
  return std::unique_ptr<HfTokenizer>(new HfTokenizer(std::move(impl)));
}

Result<std::unique_ptr<HfTokenizer>> HfTokenizer::Load(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, internal::ReadSmallFile(path, uint64_t(1) << 31));
  ASSIGN_OR_RETURN(std::unique_ptr<HfTokenizer> tok, FromJson(text, path));
  ReadSpecialNames(*tok, path, &tok->impl_->bos, &tok->impl_->eos);
  ReadConfigEos(path, &tok->impl_->eos);
  return tok;
}

Result<std::vector<int32_t>> HfTokenizer::Encode(std::string_view text,
                                                 bool add_special_tokens) const {
  std::string valid;
  if (!IsValidUtf8(text)) {
    valid = ToValidUtf8(text);
    text = valid;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  if (add_special_tokens) ids = impl_->post.prefix;
  RETURN_IF_ERROR(impl_->EncodeNoPost(text, &ids));
  if (add_special_tokens) ids.insert(ids.end(), impl_->post.suffix.begin(), impl_->post.suffix.end());
  return ids;
}

Result<std::string> HfTokenizer::Decode(std::span<const int32_t> ids,
                                        bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  const int64_t n = int64_t(impl_->id_to_token.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= n) {
      return OutOfRange("token id {} at position {} is outside the vocabulary [0, {})", id, i, n);
    }
    if (!impl_->present[size_t(id)]) continue;  // an id with no token decodes as nothing
    if (skip_special_tokens && impl_->special[size_t(id)]) continue;
    tokens.push_back(impl_->id_to_token[size_t(id)]);
  }
  if (!impl_->decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  impl_->decoder->Apply(&tokens);
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

std::string HfTokenizer::TokenText(int32_t id) const {
  const int32_t one[1] = {id};
  auto r = Decode(one, false);
  return r.ok() ? *r : std::string();
}

int64_t HfTokenizer::vocab_size() const { return int64_t(impl_->id_to_token.size()); }
int32_t HfTokenizer::bos_id() const { return impl_->bos; }
std::vector<int32_t> HfTokenizer::eos_ids() const { return impl_->eos; }
std::string HfTokenizer::Describe() const {
  return fmt::format("{} (BPE, {} tokens, {} added)", impl_->name, vocab_size(),
                     impl_->added.size());
}

int32_t HfTokenizer::TokenToId(std::string_view token) const {
  if (token.empty()) return -1;
  for (const AddedToken& t : impl_->added) {
    if (t.content == token) return t.id;
  }
  return impl_->VocabId(token);
}

Result<std::vector<int32_t>> HfTokenizer::EncodeParallel(std::string_view text,
                                                         bool add_special_tokens,
                                                         int threads) const {
  if (threads <= 1) return Encode(text, add_special_tokens);
  std::string valid;
  if (!IsValidUtf8(text)) {
    valid = ToValidUtf8(text);
    text = valid;
  }
  const Impl& im = *impl_;
  // 1. Sequentially: added tokens and normalization, as EncodeNoPost, into units of work in
  // order: an added token's id, or a piece of normalized text for the pre-tokenizer.
  // 2. A piece whose pre-tokenizer starts with an Isolated regex Split (Llama-3, Qwen, DeepSeek)
  // is cut at that Split's matches (found on several threads, Regex::FindAllParallel); each
  // match and gap then goes through the rest of the pre-tokenizer on its own, as in Encode.
  // 3. The units are shared out in contiguous runs; each thread encodes its run.
  struct Unit {
    std::string_view text;
    bool at_start = false;
    bool split_done = false;  // the first Split stage is already applied
    int32_t added = -1;       // >= 0: an added token's id
  };
  const SplitPreTokenizer* first_split = nullptr;
  const PreTokenizerSequence* seq = nullptr;
  if (auto* sp = dynamic_cast<const SplitPreTokenizer*>(im.pre_tokenizer.get())) {
    first_split = sp;
  } else if (auto* sq = dynamic_cast<const PreTokenizerSequence*>(im.pre_tokenizer.get());
             sq && !sq->parts.empty()) {
    seq = sq;
    first_split = dynamic_cast<const SplitPreTokenizer*>(sq->parts[0].get());
  }
  if (first_split && !(first_split->pattern.regex && first_split->pattern.regex->forward_only() &&
                       first_split->behavior == SplitBehavior::kIsolated && !first_split->invert)) {
    first_split = nullptr;
  }
  std::deque<std::string> normalized;
  std::vector<Unit> units;
  Status st;
  auto add_piece = [&](std::string_view piece, bool at_start) {
    if (!first_split) {
      units.push_back({piece, at_start, false, -1});
      return;
    }
    std::vector<std::pair<size_t, size_t>> m;
    first_split->pattern.regex->FindAllParallel(piece, threads, &m);
    size_t prev = 0;
    auto unit = [&](size_t a, size_t b) {
      if (b > a) units.push_back({piece.substr(a, b - a), at_start && a == 0, true, -1});
    };
    for (auto [a, b] : m) {
      unit(prev, a);
      unit(a, b);
      prev = b;
    }
    unit(prev, piece.size());
  };
  auto raw_piece = [&](std::string_view raw, bool at_start) {
    if (!st.ok()) return;
    std::string& n = normalized.emplace_back(raw);
    if (im.normalizer) {
      st = im.normalizer->Apply(&n);
      if (!st.ok()) return;
    }
    if (im.norm_trie.empty()) {
      if (!n.empty()) add_piece(n, at_start);
      return;
    }
    std::vector<std::tuple<size_t, size_t, int32_t>> m;
    im.norm_trie.FindAll(n, &m);
    im.MatchAdded(n, m, at_start, add_piece, [&](int32_t id) { units.push_back({{}, false, false, id}); });
  };
  {
    std::vector<std::tuple<size_t, size_t, int32_t>> m;
    im.raw_trie.FindAll(text, &m);
    im.MatchAdded(text, m, true, raw_piece, [&](int32_t id) { units.push_back({{}, false, false, id}); });
  }
  RETURN_IF_ERROR(st);

  const size_t parts = size_t(threads);
  std::vector<size_t> bounds{0};
  {
    size_t total = 0;
    for (const Unit& u : units) total += u.text.size() + 1;
    size_t acc = 0;
    for (size_t i = 0; i < units.size(); ++i) {
      acc += units[i].text.size() + 1;
      if (bounds.size() < parts && acc >= total * bounds.size() / parts) bounds.push_back(i + 1);
    }
    bounds.push_back(units.size());
  }
  std::vector<std::vector<int32_t>> out(bounds.size() - 1);
  auto work = [&](size_t k) {
    Impl::WordCache cache;
    std::vector<int32_t>& o = out[k];
    auto word = [&](std::string_view w, bool) { im.TokenizeWord(w, &cache, &o); };
    for (size_t i = bounds[k]; i < bounds[k + 1]; ++i) {
      const Unit& u = units[i];
      if (u.added >= 0) {
        o.push_back(u.added);
      } else if (!im.pre_tokenizer || (u.split_done && !seq)) {
        im.TokenizeWord(u.text, &cache, &o);
      } else if (u.split_done) {
        seq->Run(1, u.text, u.at_start, Emit(word));
      } else {
        im.pre_tokenizer->Apply(u.text, u.at_start, Emit(word));
      }
    }
  };
  std::vector<std::thread> pool;
  for (size_t k = 1; k < out.size(); ++k) pool.emplace_back(work, k);
  if (!out.empty()) work(0);
  for (auto& th : pool) th.join();
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = im.post.prefix;
  for (const auto& o : out) ids.insert(ids.end(), o.begin(), o.end());
  if (add_special_tokens) ids.insert(ids.end(), im.post.suffix.begin(), im.post.suffix.end());
  return ids;
}

Result<std::unique_ptr<HfTokenizer>> LoadHfTokenizer(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (std::filesystem::is_directory(path, ec)) {
    file = (std::filesystem::path(path) / "tokenizer.json").string();
    if (!std::filesystem::is_regular_file(file, ec)) {
      return NotFound("{}: no tokenizer.json in this directory", path);
    }
  }
  return HfTokenizer::Load(file);
}

Result<std::unique_ptr<Tokenizer>> OpenTokenizer(const std::string& spec) {
  if (spec == "bytes") return std::unique_ptr<Tokenizer>(new ByteTokenizer());
  ASSIGN_OR_RETURN(std::unique_ptr<HfTokenizer> t, LoadHfTokenizer(spec));
  return std::unique_ptr<Tokenizer>(std::move(t));
}

}  // namespace longctx::model
