// Global token selection (DESIGN.md §1): which positions of a document become global tokens.
// A pure function of the tokens' classes and n — the same input gives the same set whatever
// the number of ranks — so every rank (or the coordinator alone) can compute it.
//   budget g = min(ceil(global_ratio * n), global_max), global_max default 16*ceil(log2 n);
//   classes, highest priority first: the first `sinks` tokens, paragraph boundaries, sentence
//   ends, other punctuation; a class with more candidates than the budget left contributes
//   evenly spaced ones; positions the caller marks (a question's tokens) are always global and
//   do not count against the budget.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::attention {

enum class TokenClass : uint8_t {
  kOther = 0,
  kPunctuation = 1,  // , ; : ，；：
  kSentenceEnd = 2,  // . ! ? 。！？
  kParagraph = 3,    // starts or ends a paragraph (text around a blank line, "\n\n")
};

struct SelectionConfig {
  double global_ratio = 0.1;
  int64_t global_max = -1;  // -1: 16 * ceil(log2 n)
  int64_t sinks = 4;
};

// Classes of byte-level tokens (token i = byte i of `text`). A multi-byte UTF-8 punctuation mark
// (。！？，；：) is classed at its last byte. Paragraph boundaries: the last token before a run
// of two or more '\n' (it ends a paragraph) and the first token after it (it starts one).
std::vector<TokenClass> ClassifyBytes(std::string_view text);

// Classes of byte-level token ids (an id below 256 stands for that byte; any other id, or a
// negative one, is an ordinary token): ClassifyBytes of the bytes the ids stand for. What
// `longctx run --input-ids` and the trainer use for models without a tokenizer.json.
std::vector<TokenClass> ClassifyByteIds(std::span<const int32_t> ids);

// Classes of tokens from each token's decoded text (a tokenizer.json model, DESIGN.md §5): a
// token takes the highest class that ClassifyBytes gives the bytes of its text within the
// concatenation of all texts (kOther for an empty text). One-byte texts give ClassifyBytes.
std::vector<TokenClass> ClassifyTokenTexts(std::span<const std::string> texts);

// The budget g of the rules above for n tokens.
int64_t GlobalBudget(int64_t n, const SelectionConfig& config);

// Sorted, unique global positions in [0, n). `marked`: positions that are always global
// (need not be sorted; must be in [0, n)).
Result<std::vector<int64_t>> SelectGlobals(std::span<const TokenClass> classes,
                                           const SelectionConfig& config,
                                           std::span<const int64_t> marked = {});

// True when a generated token of this class joins the globals during decoding (it ends a
// sentence or a paragraph, so its query re-reads the whole context).
inline bool GlobalWhenGenerated(TokenClass c) {
  return c == TokenClass::kSentenceEnd || c == TokenClass::kParagraph;
}

}  // namespace longctx::attention
