// Text helpers private to the tokenizers (model/src/tokenizer*.cpp): UTF-8 walking, a PCRE2
// regex with Oniguruma-like Unicode classes (the `tokenizers` library's Split patterns), ICU
// normalization and the Rust `char` predicates the library's components use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "longctx/core/status.h"
#include "longctx/core/utf8.h"

namespace longctx::model::internal {

// Length of the UTF-8 sequence starting with lead byte `b` (1 for a stray byte).
inline int Utf8Len(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xF0) return 4;
  if (b >= 0xE0) return 3;
  if (b >= 0xC0) return 2;
  return 1;
}
// Decodes the code point at s[i] of valid UTF-8; *len gets its length in bytes.
inline char32_t DecodeUtf8(std::string_view s, size_t i, int* len) {
  const auto b = uint8_t(s[i]);
  const int n = Utf8Len(b);
  *len = n;
  if (n == 1) return b;
  char32_t cp = b & (0x7F >> n);
  for (int k = 1; k < n && i + size_t(k) < s.size(); ++k) cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
  return cp;
}
using ::longctx::AppendUtf8;  // core/utf8.h

// Rust's char::is_whitespace (White_Space), is_alphanumeric (Alphabetic or N*), is_numeric (N*).
bool IsWhitespace(char32_t cp);
bool IsAlphanumeric(char32_t cp);
bool IsNumeric(char32_t cp);

// A compiled PCRE2 pattern (UTF, UCP, JIT when available). Thread-safe: each call uses its own
// match data.
class Regex {
 public:
  static Result<std::unique_ptr<Regex>> Compile(const std::string& pattern);
  ~Regex();
  // Non-overlapping matches [start, end) in `text` (valid UTF-8), left to right; an empty match
  // advances by one character.
  void FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* out) const;
  // The same scan started at `pos` of `text`, ended by the first match that starts at or after
  // `stop` (not included); appends to `out`.
  void Scan(std::string_view text, size_t pos, size_t stop,
            std::vector<std::pair<size_t, size_t>>* out) const;
  // FindAll on `threads` threads, equal to FindAll: each scans from a cut; a cut that a match
  // crosses is resynchronized (see the .cpp). Only for forward_only() patterns.
  void FindAllParallel(std::string_view text, int threads,
                       std::vector<std::pair<size_t, size_t>>* out) const;
  // No lookbehind, anchors, \b/\B, \G or \K: the matches of a scan started at an offset depend
  // only on the text from there on (lookahead may read past it).
  bool forward_only() const { return forward_only_; }

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8
  bool forward_only_ = false;
};

// Unicode normalization forms through ICU.
enum class NormForm { kNFC, kNFD, kNFKC, kNFKD };
Status Normalize(NormForm form, std::string* text);
// Lowercase as Rust's char::to_lowercase, one code point at a time (no context rules).
std::string LowercaseChars(std::string_view text);

}  // namespace longctx::model::internal
