#include "longctx/worker/token_rules.h"

#include <string_view>
#include <unordered_map>

namespace longctx::worker {

std::vector<attention::TokenClass> ClassifyTokenIds(const model::Tokenizer& tok,
                                                    std::span<const int32_t> ids) {
  std::unordered_map<int32_t, std::string> text_of;
  std::vector<std::string> texts(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    auto it = text_of.find(ids[i]);
    if (it == text_of.end()) it = text_of.emplace(ids[i], tok.TokenText(ids[i])).first;
    texts[i] = it->second;
  }
  return attention::ClassifyTokenTexts(texts);
}

bool TokenTextEndsSentenceOrParagraph(const std::string& prev, const std::string& text) {
  std::string_view t = text;
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
  for (std::string_view end : {".", "!", "?", "\u3002", "\uFF01", "\uFF1F"}) {
    if (t.size() >= end.size() && t.substr(t.size() - end.size()) == end) return true;
  }
  const std::string both = prev + text;
  const size_t at = both.find("\n\n", prev.empty() ? 0 : prev.size() - 1);
  return at != std::string::npos && text.find('\n') != std::string::npos;
}

}  // namespace longctx::worker
