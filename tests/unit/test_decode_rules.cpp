// Which generated tokens join the globals (DESIGN.md §1: a generated token that ends a sentence
// or a paragraph is global, so each sentence of an answer re-reads the whole context).
#include "longctx/worker/decode.h"

#include <gtest/gtest.h>

namespace longctx::worker {
namespace {

TEST(DecodeRules, GeneratedTokenIsGlobal) {
  const std::vector<int32_t> none;
  for (int32_t t : {'.', '!', '?'}) EXPECT_TRUE(GeneratedTokenIsGlobal(t, none)) << char(t);
  for (int32_t t : {',', ';', ':', 'a', ' '}) EXPECT_FALSE(GeneratedTokenIsGlobal(t, none)) << char(t);
  EXPECT_FALSE(GeneratedTokenIsGlobal('\n', {'a'}));
  EXPECT_TRUE(GeneratedTokenIsGlobal('\n', {'a', '\n'})) << "a blank line ends a paragraph";
  EXPECT_TRUE(GeneratedTokenIsGlobal(0x82, {0xE3, 0x80})) << "。";
  EXPECT_TRUE(GeneratedTokenIsGlobal(0x81, {0xEF, 0xBC})) << "！";
  EXPECT_TRUE(GeneratedTokenIsGlobal(0x9F, {0xEF, 0xBC})) << "？";
  EXPECT_FALSE(GeneratedTokenIsGlobal(0x8C, {0xEF, 0xBC})) << "， is punctuation, not an end";
  EXPECT_FALSE(GeneratedTokenIsGlobal(0x82, {0x80})) << "a lone continuation byte";
}

}  // namespace
}  // namespace longctx::worker
