// Global token selection, one rule at a time (DESIGN.md §1).
#include "longctx/attention/global_selection.h"
#include "longctx/test/status_matchers.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace longctx::attention {
namespace {

std::vector<int64_t> Select(const std::string& text, SelectionConfig cfg = {},
                            std::vector<int64_t> marked = {}) {
  const auto cls = ClassifyBytes(text);
  auto r = SelectGlobals(cls, cfg, marked);
  EXPECT_OK(r);
  return r.ok() ? *r : std::vector<int64_t>{};
}

TEST(GlobalSelection, BudgetIsMinOfRatioAndLogCap) {
  SelectionConfig cfg;
  EXPECT_EQ(GlobalBudget(0, cfg), 0);
  EXPECT_EQ(GlobalBudget(1, cfg), 1);      // ceil(0.1)
  EXPECT_EQ(GlobalBudget(100, cfg), 10);   // 0.1*100 < 16*7
  EXPECT_EQ(GlobalBudget(1 << 20, cfg), 320);  // 16*20
  EXPECT_EQ(GlobalBudget(1000000, cfg), 320);  // 16*ceil(19.93)
  cfg.global_max = 5;
  EXPECT_EQ(GlobalBudget(1000, cfg), 5);
  cfg.global_ratio = 0.0;
  EXPECT_EQ(GlobalBudget(1000, cfg), 0);
}

TEST(GlobalSelection, ClassifiesBytesIncludingWideMarks) {
  const std::string t = "Hi, you. Ok!\n\nNew? a;b:c 好。好！好？好，好；好：";
  const auto c = ClassifyBytes(t);
  EXPECT_EQ(c[2], TokenClass::kPunctuation);   // ,
  EXPECT_EQ(c[7], TokenClass::kSentenceEnd);   // .
  EXPECT_EQ(c[11], TokenClass::kParagraph);    // '!' ends the paragraph: paragraph wins
  EXPECT_EQ(c[14], TokenClass::kParagraph);    // 'N' starts the next one
  EXPECT_EQ(c[17], TokenClass::kSentenceEnd);  // ?
  EXPECT_EQ(c[20], TokenClass::kPunctuation);  // ;
  const size_t wide = t.find("。");
  EXPECT_EQ(c[wide + 2], TokenClass::kSentenceEnd);  // classed at its last byte
  EXPECT_EQ(c[wide], TokenClass::kOther);
  EXPECT_EQ(c[t.find("！") + 2], TokenClass::kSentenceEnd);
  EXPECT_EQ(c[t.find("？") + 2], TokenClass::kSentenceEnd);
  EXPECT_EQ(c[t.find("，") + 2], TokenClass::kPunctuation);
  EXPECT_EQ(c[t.find("；") + 2], TokenClass::kPunctuation);
  EXPECT_EQ(c[t.find("：") + 2], TokenClass::kPunctuation);
  EXPECT_EQ(ClassifyBytes("a\nb")[1], TokenClass::kOther) << "a single newline is no paragraph";
}

TEST(GlobalSelection, SinksComeFirst) {
  std::string text(200, 'x');
  text[50] = '.';
  SelectionConfig cfg;
  cfg.global_max = 4;
  EXPECT_EQ(Select(text, cfg), (std::vector<int64_t>{0, 1, 2, 3}));
  cfg.global_max = 5;
  EXPECT_EQ(Select(text, cfg), (std::vector<int64_t>{0, 1, 2, 3, 50}));
}

TEST(GlobalSelection, PriorityParagraphThenSentenceThenPunctuation) {
  // 300 bytes: budget 30 by ratio, cap 16*9 = 144.
  std::string text(300, 'x');
  text[100] = ',';
  text[150] = '.';
  text[200] = '\n';
  text[201] = '\n';  // paragraph: 199 ends one, 202 starts the next
  SelectionConfig cfg;
  cfg.sinks = 0;
  cfg.global_max = 1;  // 2 paragraph candidates into 1: the middle of the run, index 1
  EXPECT_EQ(Select(text, cfg), (std::vector<int64_t>{202}));
  cfg.global_max = 2;
  EXPECT_EQ(Select(text, cfg), (std::vector<int64_t>{199, 202}));
  cfg.global_max = 3;
  EXPECT_EQ(Select(text, cfg), (std::vector<int64_t>{150, 199, 202}));
  cfg.global_max = 4;
  EXPECT_EQ(Select(text, cfg), (std::vector<int64_t>{100, 150, 199, 202}));
}

TEST(GlobalSelection, EvenlySpacedWhenAClassOverflows) {
  std::string text(1000, 'x');
  for (int i = 9; i < 1000; i += 10) text[size_t(i)] = '.';  // 100 sentence ends
  SelectionConfig cfg;
  cfg.sinks = 0;
  cfg.global_max = 4;
  // 100 candidates into 4: the middle of each run of 25 -> candidates 12, 37, 62, 87.
  EXPECT_EQ(Select(text, cfg), (std::vector<int64_t>{129, 379, 629, 879}));
}

TEST(GlobalSelection, MarkedPositionsAreOutsideTheBudget) {
  std::string text(100, 'x');
  SelectionConfig cfg;
  cfg.global_max = 4;
  const auto g = Select(text, cfg, {99, 50, 2});
  EXPECT_EQ(g, (std::vector<int64_t>{0, 1, 2, 3, 50, 99}));
  const auto cls = ClassifyBytes(text);
  EXPECT_FALSE(SelectGlobals(cls, cfg, std::vector<int64_t>{100}).ok());
  cfg.global_ratio = 1.5;
  EXPECT_FALSE(SelectGlobals(cls, cfg).ok());
}

TEST(GlobalSelection, DeterministicSortedUniqueAndSizedByBudget) {
  std::string text;
  for (int i = 0; i < 20000; ++i) text += (i % 37 == 0) ? ". " : (i % 11 == 0 ? ", " : "ab");
  text += "\n\nend.";
  const auto a = Select(text), b = Select(text);
  EXPECT_EQ(a, b);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::adjacent_find(a.begin(), a.end()), a.end());
  EXPECT_EQ(int64_t(a.size()), GlobalBudget(int64_t(text.size()), {}));
  EXPECT_TRUE(Select("").empty());
  EXPECT_EQ(Select("a"), (std::vector<int64_t>{0}));
  EXPECT_TRUE(GlobalWhenGenerated(TokenClass::kSentenceEnd));
  EXPECT_FALSE(GlobalWhenGenerated(TokenClass::kPunctuation));
}

}  // namespace
}  // namespace longctx::attention
