// Tokenizers (model/tokenizer.h): the byte tokenizer, invalid UTF-8, bad tokenizer.json files
// (one clear error naming the problem), and small tokenizer.json files (tests/tokenizer/tiny)
// whose expected ids come from the `tokenizers` library (npm binding 0.23.2); the five real
// files are checked against the library itself by tests/tokenizer/test_tokenizer_reference.sh.
#include "longctx/model/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "longctx/attention/global_selection.h"
#include "longctx/test/temp_dir.h"
#include "longctx/test/status_matchers.h"

namespace longctx::model {
namespace {

using Ids = std::vector<int32_t>;

// From the source directory CMake names (__FILE__ is relative to the build directory when ccache
// rewrites paths under its base_dir, and ctest runs the tests from elsewhere).
std::string TinyPath(const std::string& name) {
  return (std::filesystem::path(LONGCTX_SOURCE_DIR) / "tests" / "tokenizer" / "tiny" / name)
      .string();
}

std::unique_ptr<HfTokenizer> Tiny(const std::string& name) {
  auto t = LoadHfTokenizer(TinyPath(name));
  EXPECT_OK(t);
  return t.ok() ? std::move(*t) : nullptr;
}

Ids Enc(const Tokenizer& t, std::string_view s, bool special = false) {
  auto r = t.Encode(s, special);
  EXPECT_OK(r);
  return r.ok() ? *r : Ids{};
}

std::string Dec(const Tokenizer& t, const Ids& ids, bool skip = false) {
  auto r = t.Decode(ids, skip);
  EXPECT_OK(r);
  return r.ok() ? *r : std::string();
}

// Concatenation by append (GCC 12's -Wrestrict misfires on "{" + s + "}" at -O3).
std::string Cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out.append(p);
  return out;
}

// The error message of FromJson(json), "" when it loads.
std::string LoadError(const std::string& json) {
  auto t = HfTokenizer::FromJson(json, "test.json");
  return t.ok() ? std::string() : t.status().message();
}

TEST(ByteTokenizer, IdIsByte) {
  ByteTokenizer t;
  const std::string s("a\xff\n\0b", 5);
  const Ids ids = Enc(t, s);
  EXPECT_EQ(ids, (Ids{97, 255, 10, 0, 98}));
  EXPECT_EQ(Dec(t, ids), s);
  EXPECT_EQ(t.TokenText(46), ".");
  EXPECT_TRUE(t.is_byte_level());
  const Ids bad{97, 256};
  auto r = t.Decode(bad, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
}

TEST(Utf8, MaximalSubpartReplacement) {
  EXPECT_TRUE(IsValidUtf8("h\xC3\xA9llo \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));
  // One U+FFFD per maximal ill-formed subsequence (as Node, Python and Rust's from_utf8_lossy).
  EXPECT_EQ(ToValidUtf8("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(ToValidUtf8("\xE6\x97" "x"), "\xEF\xBF\xBD" "x");                      // truncated
  EXPECT_EQ(ToValidUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong
  EXPECT_EQ(ToValidUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(ToValidUtf8("\xF4\x90\x80\x80"),  // above U+10FFFF
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(ToValidUtf8("\xE2\x82"), "\xEF\xBF\xBD");  // a lead and one continuation at the end
}

TEST(HfTokenizer, ByteLevelWithAddedTokenFlags) {
  auto t = Tiny("t1.json");  // NFC + Lowercase, ByteLevel, added <|bos|> [X](lstrip, rstrip) word(single_word)
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(Enc(*t, "the cat and the hat", true),
            (Ids{300, 116, 257, 32, 99, 97, 116, 262, 258, 32, 104, 97, 116}));
  EXPECT_EQ(Enc(*t, "<|bos|>in  [X]  word words sword word."),
            (Ids{263, 259, 264, 265, 32, 119, 111, 114, 100, 115, 32, 115, 119, 111, 114, 100, 32,
                 265, 46}));
  // A normalized added token matches the normalized text; it decodes as its normalized content.
  EXPECT_EQ(Enc(*t, "\xC3\x85LPHA \xC3\xA5lpha \xC3\x85lpha"), (Ids{266, 32, 266, 32, 266}));
  EXPECT_EQ(Enc(*t, "\xEF\xBC\xA8\xEF\xBD\x85"), (Ids{239, 189, 136, 239, 189, 133}));  // Ｈｅ -> ｈｅ
  EXPECT_EQ(Dec(*t, {300, 263, 259, 264, 265}), "<|bos|>in[X]word");  // 300 names no token
  EXPECT_EQ(Dec(*t, {263, 259}, /*skip=*/true), "in");
  EXPECT_EQ(t->TokenToId("word"), 265);
  EXPECT_EQ(t->TokenText(116), "t");
}

TEST(HfTokenizer, SentencePieceStyleByteFallback) {
  auto t = Tiny("t2.json");  // Prepend + Replace, byte_fallback, fuse_unk, merges as pairs
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(Enc(*t, "ab a", true), (Ids{1, 265, 263}));
  EXPECT_EQ(Enc(*t, "a\xC3\xA9"), (Ids{263, 198, 172}));  // é -> <0xC3> <0xA9>
  EXPECT_EQ(Enc(*t, "<s>ab"), (Ids{1, 265}));
  EXPECT_EQ(Enc(*t, "  b  c"), (Ids{266, 259, 261, 266, 262}));
  EXPECT_EQ(Dec(*t, {1, 265, 263}), "<s> ab a");
  EXPECT_EQ(Dec(*t, {1, 265, 263}, true), "ab a");
  EXPECT_EQ(Dec(*t, {263, 198, 172}), "a\xC3\xA9");
  EXPECT_EQ(Dec(*t, {263, 198}), "a\xEF\xBF\xBD");  // a lone byte: U+FFFD, as the library
  EXPECT_EQ(t->bos_id(), 1);
}

TEST(HfTokenizer, MetaspaceAndFusedUnknown) {
  auto t = Tiny("t3.json");  // Metaspace (prepend first), no byte fallback: unknown -> <unk>
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(Enc(*t, "a\xC3\xA9z b"), (Ids{263, 0, 259, 261}));
  EXPECT_EQ(Enc(*t, " ab"), (Ids{265}));
  EXPECT_EQ(Enc(*t, "a  b"), (Ids{263, 259, 259, 261}));
  EXPECT_EQ(Dec(*t, {1, 263, 0, 259, 261}), "<s> a<unk> b");
}

TEST(HfTokenizer, DigitsSplitAndNfkc) {
  auto t = Tiny("t4.json");  // NFKC; Digits(individual), Split(\s+, MergedWithNext), ByteLevel
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(Enc(*t, "x12 34  y"), (Ids{32, 120, 32, 49, 32, 50, 32, 32, 51, 32, 52, 32, 32, 121}));
  EXPECT_EQ(Enc(*t, "\xEF\xAC\x81 \xEF\xBC\x92"), (Ids{32, 102, 105, 32, 32, 50}));  // ﬁ ２
}

TEST(HfTokenizer, InvalidUtf8IsReplaced) {
  auto t = Tiny("t1.json");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(Enc(*t, "a\xFF" "b"), Enc(*t, "a\xEF\xBF\xBD" "b"));
}

TEST(HfTokenizer, EncodeParallelEqualsEncode) {
  auto t = Tiny("t1.json");
  ASSERT_NE(t, nullptr);
  std::string text;
  for (int i = 0; i < 400; ++i) text += "the cat <|bos|> and [X] the hat word\n";
  auto one = t->Encode(text, true);
  auto four = t->EncodeParallel(text, true, 4);
  ASSERT_TRUE(one.ok() && four.ok());
  EXPECT_EQ(*one, *four);
}

TEST(HfTokenizer, DecodeRejectsIdsOutsideTheVocabulary) {
  auto t = Tiny("t2.json");
  ASSERT_NE(t, nullptr);
  auto r = t->Decode(Ids{1, int32_t(t->vocab_size())}, false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(r.status().message().find("outside the vocabulary"), std::string::npos);
}

TEST(HfTokenizer, LoadsFromADirectory) {
  const test::TempDir tmp("longctx_tok_dir_test");
  const auto dir = tmp.path() / "tokenizer";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(TinyPath("t2.json"), dir / "tokenizer.json",
                             std::filesystem::copy_options::overwrite_existing);
  std::ofstream(dir / "tokenizer_config.json") << R"({"bos_token": "<s>", "eos_token": {"content": "</s>"}})";
  auto t = LoadHfTokenizer(dir.string());
  ASSERT_OK(t);
  EXPECT_EQ((*t)->bos_id(), 1);
  EXPECT_EQ((*t)->eos_ids(), (Ids{2}));
  std::filesystem::remove_all(dir);
  auto missing = LoadHfTokenizer(dir.string());
  EXPECT_FALSE(missing.ok());
}

TEST(HfTokenizerErrors, OneClearLineNamingTheProblem) {
  const std::string bpe = R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  EXPECT_EQ(LoadError(Cat({"{", bpe, "}"})), "");
  EXPECT_NE(LoadError("not json").find("not a valid tokenizer.json"), std::string::npos);
  EXPECT_NE(LoadError(Cat({"{", bpe.substr(0, 40)})).find("not a valid tokenizer.json"), std::string::npos);
  EXPECT_NE(LoadError("{}").find("no \"model\""), std::string::npos);
  EXPECT_NE(LoadError(R"({"model": {"type": "WordPiece", "vocab": {}}})").find("'WordPiece'"),
            std::string::npos);
  EXPECT_NE(LoadError(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a c"]}})")
                .find("token 'c' is not in the vocabulary"),
            std::string::npos);
  EXPECT_NE(LoadError(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "a"]]}})")
                .find("merged token 'aa'"),
            std::string::npos);
  EXPECT_NE(LoadError(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["aa"]}})")
                .find("not two tokens"),
            std::string::npos);
  EXPECT_NE(LoadError(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}})")
                .find("unk_token '<unk>'"),
            std::string::npos);
  EXPECT_NE(LoadError(Cat({"{", bpe, R"(, "normalizer": {"type": "BertNormalizer"}})"})).find("normalizer type 'BertNormalizer'"),
            std::string::npos);
  EXPECT_NE(LoadError(Cat({"{", bpe, R"(, "pre_tokenizer": {"type": "Bogus"}})"})).find("pre_tokenizer type 'Bogus'"),
            std::string::npos);
  EXPECT_NE(LoadError(Cat({"{", bpe, R"(, "decoder": {"type": "WordPiece"}})"})).find("decoder type 'WordPiece'"),
            std::string::npos);
  EXPECT_NE(LoadError(Cat({"{", bpe, R"(, "post_processor": {"type": "Custom"}})"})).find("post_processor type 'Custom'"),
            std::string::npos);
  EXPECT_NE(LoadError(Cat({"{", bpe, R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(["}, "behavior": "Isolated"}})"}))
                .find("regex '(['"),
            std::string::npos);
  // Every message is one line and starts with the file's name.
  const std::string e = LoadError(R"({"model": {"type": "Unigram"}})");
  EXPECT_EQ(e.rfind("test.json: ", 0), 0u) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  EXPECT_FALSE(LoadHfTokenizer("/nonexistent/tokenizer.json").ok());
}

TEST(ClassifyTokenTexts, OneByteTextsGiveTheByteClasses) {
  const std::string text = "Hi, there. New\n\nParagraph! \xE3\x80\x82 end";
  std::vector<std::string> one;
  for (char c : text) one.emplace_back(1, c);
  EXPECT_EQ(attention::ClassifyTokenTexts(one), attention::ClassifyBytes(text));
}

TEST(ClassifyTokenTexts, ATokenTakesItsHighestByteClass) {
  using attention::TokenClass;
  const std::vector<std::string> texts = {"Hello", ",", " world", ".\n\n", "Next", " one", "\xE3\x80\x82", ""};
  const auto c = attention::ClassifyTokenTexts(texts);
  ASSERT_EQ(c.size(), texts.size());
  EXPECT_EQ(c[0], TokenClass::kOther);
  EXPECT_EQ(c[1], TokenClass::kPunctuation);
  EXPECT_EQ(c[3], TokenClass::kParagraph);  // ends the paragraph (its '.' is before "\n\n")
  EXPECT_EQ(c[4], TokenClass::kParagraph);  // starts the next one
  EXPECT_EQ(c[5], TokenClass::kOther);
  EXPECT_EQ(c[6], TokenClass::kSentenceEnd);  // 。 in one token
  EXPECT_EQ(c[7], TokenClass::kOther);        // an empty text
}

}  // namespace
}  // namespace longctx::model
