// The text rules that decide which tokens of a tokenized document or answer are global
// (DESIGN.md §1), for models with a tokenizer: one home for `longctx run`, the worker groups
// and the Python Engine.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "longctx/attention/global_selection.h"
#include "longctx/model/tokenizer.h"

namespace longctx::worker {

// Classes for the global rule from each token's decoded text (one decode per distinct id).
std::vector<attention::TokenClass> ClassifyTokenIds(const model::Tokenizer& tok,
                                                    std::span<const int32_t> ids);

// A generated token joins the globals when its text ends a sentence (. ! ? 。！？, trailing
// spaces aside) or completes a run of two newlines with the token before it (`prev`).
bool TokenTextEndsSentenceOrParagraph(const std::string& prev, const std::string& text);

}  // namespace longctx::worker
