#include "longctx/attention/global_selection.h"

#include <algorithm>
#include <cmath>

namespace longctx::attention {
namespace {

// UTF-8 of the full-width marks: 。(E3 80 82) ！(EF BC 81) ？(EF BC 9F) ，(EF BC 8C)
// ；(EF BC 9B) ：(EF BC 9A). Returns the class of the mark ending at byte i, if any.
TokenClass WideMarkEndingAt(std::string_view t, size_t i) {
  if (i < 2) return TokenClass::kOther;
  const auto b0 = uint8_t(t[i - 2]), b1 = uint8_t(t[i - 1]), b2 = uint8_t(t[i]);
  if (b0 == 0xE3 && b1 == 0x80 && b2 == 0x82) return TokenClass::kSentenceEnd;
  if (b0 == 0xEF && b1 == 0xBC) {
    if (b2 == 0x81 || b2 == 0x9F) return TokenClass::kSentenceEnd;
    if (b2 == 0x8C || b2 == 0x9B || b2 == 0x9A) return TokenClass::kPunctuation;
  }
  return TokenClass::kOther;
}

}  // namespace

std::vector<TokenClass> ClassifyBytes(std::string_view text) {
  const size_t n = text.size();
  std::vector<TokenClass> cls(n, TokenClass::kOther);
  for (size_t i = 0; i < n; ++i) {
    const char c = text[i];
    if (c == '.' || c == '!' || c == '?') {
      cls[i] = TokenClass::kSentenceEnd;
    } else if (c == ',' || c == ';' || c == ':') {
      cls[i] = TokenClass::kPunctuation;
    } else {
      const TokenClass wide = WideMarkEndingAt(text, i);
      if (wide != TokenClass::kOther) cls[i] = wide;
    }
  }
  // Paragraph boundaries: around every run of >= 2 newlines.
  size_t i = 0;
  while (i < n) {
    if (text[i] != '\n') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < n && text[j] == '\n') ++j;
    if (j - i >= 2) {
      if (i > 0) cls[i - 1] = TokenClass::kParagraph;  // ends the paragraph before
      if (j < n) cls[j] = TokenClass::kParagraph;      // starts the one after
    }
    i = j;
  }
  return cls;
}

std::vector<TokenClass> ClassifyByteIds(std::span<const int32_t> ids) {
  std::string bytes(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    bytes[i] = ids[i] >= 0 && ids[i] < 256 ? char(ids[i]) : '\x01';
  }
  return ClassifyBytes(bytes);
}

std::vector<TokenClass> ClassifyTokenTexts(std::span<const std::string> texts) {
  std::string all;
  size_t total = 0;
  for (const std::string& t : texts) total += t.size();
  all.reserve(total);
  for (const std::string& t : texts) all += t;
  const std::vector<TokenClass> bytes = ClassifyBytes(all);
  std::vector<TokenClass> cls(texts.size(), TokenClass::kOther);
  size_t pos = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    for (size_t k = pos; k < pos + texts[i].size(); ++k) cls[i] = std::max(cls[i], bytes[k]);
    pos += texts[i].size();
  }
  return cls;
}

int64_t GlobalBudget(int64_t n, const SelectionConfig& config) {
  if (n <= 0) return 0;
  const int64_t by_ratio = int64_t(std::ceil(config.global_ratio * double(n) - 1e-9));
  const int64_t gmax = config.global_max >= 0
                           ? config.global_max
                           : 16 * int64_t(std::ceil(std::log2(double(std::max<int64_t>(n, 2)))));
  return std::clamp<int64_t>(std::min(by_ratio, gmax), 0, n);
}

Result<std::vector<int64_t>> SelectGlobals(std::span<const TokenClass> classes,
                                           const SelectionConfig& config,
                                           std::span<const int64_t> marked) {
  const int64_t n = int64_t(classes.size());
  if (!(config.global_ratio >= 0.0 && config.global_ratio <= 1.0)) {
    return InvalidArgument("global ratio must be in [0, 1], got {}", config.global_ratio);
  }
  if (config.sinks < 0) return InvalidArgument("sinks must be >= 0, got {}", config.sinks);
  for (int64_t m : marked) {
    if (m < 0 || m >= n) return InvalidArgument("marked position {} outside [0, {})", m, n);
  }
  int64_t left = GlobalBudget(n, config);
  std::vector<char> chosen(size_t(n), 0);
  // Sinks first.
  for (int64_t i = 0; i < std::min({config.sinks, n, left}); ++i) chosen[size_t(i)] = 1;
  left -= std::min({config.sinks, n, left});
  // Then each class, highest priority first; evenly spaced when it does not fit.
  for (TokenClass c : {TokenClass::kParagraph, TokenClass::kSentenceEnd, TokenClass::kPunctuation}) {
    if (left <= 0) break;
    std::vector<int64_t> cand;
    for (int64_t i = 0; i < n; ++i) {
      if (classes[size_t(i)] == c && !chosen[size_t(i)]) cand.push_back(i);
    }
    const int64_t m = int64_t(cand.size());
    if (m <= left) {
      for (int64_t i : cand) chosen[size_t(i)] = 1;
      left -= m;
      continue;
    }
    // `left` of m candidates, evenly spaced: the one at the middle of each of `left` equal runs.
    for (int64_t k = 0; k < left; ++k) chosen[size_t(cand[size_t((2 * k + 1) * m / (2 * left))])] = 1;
    left = 0;
  }
  for (int64_t mpos : marked) chosen[size_t(mpos)] = 1;  // outside the budget
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) {
    if (chosen[size_t(i)]) out.push_back(i);
  }
  return out;
}

}  // namespace longctx::attention
