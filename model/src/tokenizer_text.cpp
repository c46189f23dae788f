#include "tokenizer_text.h"

#include <thread>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>

#include "longctx/model/tokenizer.h"

namespace longctx::model {

bool IsValidUtf8(std::string_view s) {
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const auto c = uint8_t(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    uint8_t lo = 0x80, hi = 0xBF;
    int len;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c == 0xEE || c == 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else return false;
    if (i + size_t(len) > n) return false;
    const auto c1 = uint8_t(s[i + 1]);
    if (c1 < lo || c1 > hi) return false;
    for (int k = 2; k < len; ++k) {
      if ((uint8_t(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += size_t(len);
  }
  return true;
}

std::string ToValidUtf8(std::string_view s) {
  if (IsValidUtf8(s)) return std::string(s);
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(s.size() + 16);
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const auto c = uint8_t(s[i]);
    if (c < 0x80) {
      out.push_back(char(c));
      ++i;
      continue;
    }
    uint8_t lo = 0x80, hi = 0xBF;
    int len = 0;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c == 0xEE || c == 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    if (len == 0) {  // not a lead byte: one replacement for this byte
      out += kReplacement;
      ++i;
      continue;
    }
    // The maximal subpart: the longest prefix of a well-formed sequence.
    size_t j = i + 1;
    bool ok = true;
    for (int k = 1; k < len; ++k, ++j) {
      if (j >= n) {
        ok = false;
        break;
      }
      const auto b = uint8_t(s[j]);
      const uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (b < l || b > h) {
        ok = false;
        break;
      }
    }
    if (ok) out.append(s.substr(i, size_t(len)));
    else out += kReplacement;
    i = j;
  }
  return out;
}

namespace internal {

bool IsWhitespace(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return u_isUWhiteSpace(UChar32(cp));
}

bool IsNumeric(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  const int8_t t = u_charType(UChar32(cp));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool IsAlphanumeric(char32_t cp) {
  if (cp < 0x80) return (cp | 0x20) - 'a' < 26 || cp - '0' < 10;
  return u_hasBinaryProperty(UChar32(cp), UCHAR_ALPHABETIC) || IsNumeric(cp);
}

namespace {

// Oniguruma's \s (the library's regex engine) is Unicode White_Space, which includes U+0085;
// PCRE2's \s in UCP mode does not. Rewrites \s / \S to say so explicitly.
std::string OnigToPcre2(const std::string& p) {
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char d = p[i + 1];
      if (d == 's') out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
      else if (d == 'S' && !in_class) out += "[^\\s\\x{85}]";
      else out += p.substr(i, 2);
      ++i;
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out.push_back(c);
      // A ']' (or '^]') right after '[' is a literal member.
      if (i + 1 < p.size() && p[i + 1] == '^') out.push_back(p[++i]);
      if (i + 1 < p.size() && p[i + 1] == ']') out.push_back(p[++i]);
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out.push_back(c);
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<Regex>> Regex::Compile(const std::string& pattern) {
  const std::string p = OnigToPcre2(pattern);
  int err = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    return InvalidArgument("regex '{}': {} at offset {}", pattern, reinterpret_cast<char*>(buf),
                           offset);
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is absent
  std::unique_ptr<Regex> r(new Regex());
  r->code_ = code;
  // Forward-only: no lookbehind, \b \B \G \K \A \z \Z, no ^ or $ outside a class.
  bool fwd = p.find("(?<") == std::string::npos;
  bool in_class = false;
  for (size_t i = 0; fwd && i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      if (std::string_view("bBGKAzZ").find(p[i + 1]) != std::string_view::npos) fwd = false;
      ++i;
    } else if (c == '[' && !in_class) {
      in_class = true;
      if (i + 1 < p.size() && p[i + 1] == '^') ++i;
      if (i + 1 < p.size() && p[i + 1] == ']') ++i;
    } else if (c == ']' && in_class) {
      in_class = false;
    } else if ((c == '^' || c == '$') && !in_class) {
      fwd = false;
    }
  }
  r->forward_only_ = fwd;
  return r;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* out) const {
  out->clear();
  Scan(text, 0, std::string_view::npos, out);
}

void Regex::Scan(std::string_view text, size_t pos, size_t stop,
                 std::vector<std::pair<size_t, size_t>>* out) const {
  auto* code = static_cast<pcre2_code*>(code_);
  thread_local struct MatchData {
    pcre2_match_data* md = nullptr;
    ~MatchData() { pcre2_match_data_free(md); }
  } tl;
  if (tl.md == nullptr) tl.md = pcre2_match_data_create(4, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  while (pos <= text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, tl.md, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(tl.md);
    const size_t s = ov[0], e = ov[1];
    if (s >= stop) break;
    if (e == s) {  // empty match: skip it, move on by one character
      if (s >= text.size()) break;
      pos = s + size_t(Utf8Len(uint8_t(text[s])));
      continue;
    }
    out->emplace_back(s, e);
    pos = e;
  }
}

// Thread k scans from cut c_k (a character boundary) to the first match starting at or after
// c_k+1. Merging left to right, with `e` the end of the last match kept so far:
//  - e <= c_k: the scan that produced the kept matches found no match starting in [e, c_k)
//    (it stopped at a match starting at or after c_k, or at the end), so the whole-text scan
//    continues with the first match at or after c_k: thread k's list, in sync;
//  - e > c_k (a match crossed the cut): thread k's first match starting at or after e is the
//    next one if thread k's scan did not jump over e (its previous match ends at or before e);
//    otherwise chunk k is rescanned from e.
// This needs forward-only patterns: a match at a position depends only on the text after it.
void Regex::FindAllParallel(std::string_view text, int threads,
                            std::vector<std::pair<size_t, size_t>>* out) const {
  const size_t n = text.size();
  if (threads <= 1 || !forward_only_ || n < (size_t(1) << 16)) {
    FindAll(text, out);
    return;
  }
  const auto k_parts = size_t(threads);
  std::vector<size_t> cut(k_parts + 1);
  for (size_t k = 0; k <= k_parts; ++k) {
    size_t c = n * k / k_parts;
    while (c < n && (uint8_t(text[c]) & 0xC0) == 0x80) ++c;
    cut[k] = c;
  }
  std::vector<std::vector<std::pair<size_t, size_t>>> parts(k_parts);
  std::vector<std::thread> pool;
  for (size_t k = 1; k < k_parts; ++k) {
    pool.emplace_back([&, k] { Scan(text, cut[k], cut[k + 1], &parts[k]); });
  }
  Scan(text, 0, cut[1], &parts[0]);
  for (auto& t : pool) t.join();
  out->clear();
  out->insert(out->end(), parts[0].begin(), parts[0].end());
  for (size_t k = 1; k < k_parts; ++k) {
    const size_t e = out->empty() ? 0 : out->back().second;
    const auto& p = parts[k];
    if (e <= cut[k]) {
      out->insert(out->end(), p.begin(), p.end());
      continue;
    }
    size_t idx = 0;
    while (idx < p.size() && p[idx].first < e) ++idx;
    const bool in_sync = idx < p.size() && (idx == 0 ? cut[k] <= e : p[idx - 1].second <= e);
    if (in_sync) out->insert(out->end(), p.begin() + long(idx), p.end());
    else if (e < n) Scan(text, e, cut[k + 1], out);
  }
}

Status Normalize(NormForm form, std::string* text) {
  UErrorCode ec = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case NormForm::kNFC: n = icu::Normalizer2::getNFCInstance(ec); break;
    case NormForm::kNFD: n = icu::Normalizer2::getNFDInstance(ec); break;
    case NormForm::kNFKC: n = icu::Normalizer2::getNFKCInstance(ec); break;
    case NormForm::kNFKD: n = icu::Normalizer2::getNFKDInstance(ec); break;
  }
  if (U_FAILURE(ec)) return Internal("ICU normalizer: {}", u_errorName(ec));
  // Fast path: already normalized (most text is NFC).
  if (n->isNormalizedUTF8(*text, ec) && U_SUCCESS(ec)) return Status::Ok();
  ec = U_ZERO_ERROR;
  std::string out;
  out.reserve(text->size());
  icu::StringByteSink<std::string> sink(&out);
  n->normalizeUTF8(0, *text, sink, nullptr, ec);
  if (U_FAILURE(ec)) return Internal("ICU normalization: {}", u_errorName(ec));
  *text = std::move(out);
  return Status::Ok();
}

std::string LowercaseChars(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    int len;
    const char32_t cp = DecodeUtf8(text, i, &len);
    i += size_t(len);
    if (cp < 0x80) {
      out.push_back(char(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
      continue;
    }
    // The full (possibly multi-character) lowercase mapping of this code point alone.
    UChar src[2];
    int32_t sl = 0;
    U16_APPEND_UNSAFE(src, sl, UChar32(cp));
    UChar dst[8];
    UErrorCode ec = U_ZERO_ERROR;
    const int32_t dl = u_strToLower(dst, 8, src, sl, "", &ec);
    if (U_FAILURE(ec)) {
      AppendUtf8(cp, &out);
      continue;
    }
    for (int32_t k = 0; k < dl;) {
      UChar32 c;
      U16_NEXT_UNSAFE(dst, k, c);
      AppendUtf8(char32_t(c), &out);
    }
  }
  return out;
}

}  // namespace internal
}  // namespace longctx::model
