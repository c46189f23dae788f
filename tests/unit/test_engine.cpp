// worker::Engine: a kept document answers any number of questions, each as if it were the only
// one (the cache is restored after every Answer), and an answer equals one forward pass over
// document + question + answer (the greedy tokens of the whole sequence).
#include "longctx/worker/engine.h"
#include "longctx/test/status_matchers.h"

#include <gtest/gtest.h>

#include <string>

namespace longctx::worker {
namespace {

std::vector<int32_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

struct Fixture {
  std::shared_ptr<comm::Communicator> world = comm::WorldCommunicator("self").value();
  std::unique_ptr<Engine> engine;
  explicit Fixture(cache::KvCacheOptions kv = {}) {
    EngineOptions o;
    o.threads = 1;
    o.kv = kv;
    o.overrides.window = std::vector<int64_t>{8};
    o.overrides.global_max = 6;
    engine = Engine::Open(*world, o).value();
  }
  void Prefill(const std::string& id, const std::string& text, DocumentInfo* info = nullptr,
               std::vector<float>* hidden = nullptr) {
    const std::vector<int32_t> ids = Bytes(text);
    const auto classes = attention::ClassifyBytes(text);
    ASSERT_OK(engine->Prefill(id, ids, classes, {}, info, hidden));
  }
};

const char* kDoc =
    "The buyer pays within thirty days. The seller ships the goods; notice is due!\n\n"
    "Clause two: the agent inspects the lot. Is the seal intact? It is.";

TEST(Engine, QuestionsOnAKeptDocumentAreIndependent) {
  Fixture f;
  f.Prefill("doc", kDoc);
  AnswerResult a, b, c;
  ASSERT_OK(f.engine->Answer("doc", "Who pays? ", 12, {}, &a));
  ASSERT_OK(f.engine->Answer("doc", "Is it sealed? ", 5, {}, &b));
  ASSERT_OK(f.engine->Answer("doc", "Who pays? ", 12, {}, &c));
  EXPECT_EQ(a.generated, c.generated);
  EXPECT_EQ(a.appended_hidden, c.appended_hidden) << "the second question must not see the first";
  EXPECT_EQ(a.generated.size(), 12u);
  EXPECT_GE(a.first_token_seconds, 0.0);
  ASSERT_OK(f.engine->CacheStats("doc"));
}

TEST(Engine, TokensStreamAsTheyAreGenerated) {
  // (That the tokens equal the argmax of one forward pass over document + question + answer is
  // checked against torch in tests/python/test_model_reference.py.)
  Fixture f;
  f.Prefill("doc", kDoc);
  AnswerResult a;
  std::vector<int32_t> streamed;
  ASSERT_TRUE(f.engine
                  ->Answer("doc", "Who pays? ", 8,
                           [&](int32_t t, int64_t i) {
                             EXPECT_EQ(i, int64_t(streamed.size()));
                             streamed.push_back(t);
                           },
                           &a)
                  .ok());
  EXPECT_EQ(std::string(streamed.begin(), streamed.end()), a.generated);
  EXPECT_EQ(a.appended.size(), 10u + 8u);
  EXPECT_EQ(a.appended_hidden.size(), a.appended.size() * size_t(f.engine->config().hidden_size));
}

TEST(Engine, SpilledCacheAnswersBitwiseTheSame) {
  cache::KvCacheOptions kv;
  kv.block_tokens = 16;
  kv.device_budget = 96 * 1024;  // 24 blocks: most of the document leaves for the host tier
  Fixture spilled(kv);
  cache::KvCacheOptions kv16;
  kv16.block_tokens = 16;
  Fixture same_blocks(kv16);
  std::string text;
  for (int i = 0; i < 12; ++i) text += kDoc;
  same_blocks.Prefill("doc", text);
  spilled.Prefill("doc", text);
  AnswerResult a, b;
  ASSERT_OK(same_blocks.engine->Answer("doc", "Who pays? ", 6, {}, &a));
  ASSERT_OK(spilled.engine->Answer("doc", "Who pays? ", 6, {}, &b));
  EXPECT_EQ(a.generated, b.generated);
  EXPECT_EQ(a.appended_hidden, b.appended_hidden);
  const cache::KvCacheStats st = spilled.engine->CacheStats("doc").value();
  EXPECT_GT(st.demotions, 0u);
  EXPECT_GT(st.loads, 0u);
  EXPECT_LE(st.device.peak_bytes, kv.device_budget);
}

TEST(Engine, ErrorsAreClear) {
  Fixture f;
  AnswerResult a;
  Status st = f.engine->Answer("nope", "Q?", 1, {}, &a);
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("nope"), std::string::npos);
  f.Prefill("doc", kDoc);
  EXPECT_EQ(f.engine->Answer("doc", "Q?", -1, {}, &a).code(), StatusCode::kInvalidArgument);
  EXPECT_OK(f.engine->Drop("doc"));
  EXPECT_EQ(f.engine->Drop("doc").code(), StatusCode::kNotFound);
  const std::vector<int32_t> bad = {1, 2, 999};
  const std::vector<attention::TokenClass> cls(3, attention::TokenClass::kOther);
  EXPECT_EQ(f.engine->Prefill("x", bad, cls, {}, nullptr).code(), StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace longctx::worker
