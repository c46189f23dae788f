// config.json parsing (DESIGN.md §5): HF Llama/Mistral keys, defaults, the "longctx" block with
// per-layer windows, window resolution order, CLI overrides, ToJson round trips, and one clear
// line naming the key and the file for every kind of bad input.
#include "longctx/model/config.h"

#include <stdlib.h>

#include <cerrno>
#include <cmath>
#include <numbers>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "longctx/model/builtin.h"
#include "longctx/model/rope.h"
#include "longctx/test/temp_dir.h"
#include "longctx/test/status_matchers.h"

namespace longctx::model {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSrc = "model/config.json";

// A minimal valid Llama config; `extra` is spliced in as more keys ("" for none).
std::string Llama(std::string_view extra = "") {
  std::string s = R"({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 8,
    "num_key_value_heads": 2, "intermediate_size": 128, "num_hidden_layers": 4,
    "vocab_size": 256, "rms_norm_eps": 1e-05)";
  if (!extra.empty()) {
    s += ", ";
    s += extra;
  }
  return s + "}";
}

ModelConfig ParseOk(const std::string& text) {
  auto r = ParseModelConfig(text, kSrc);
  EXPECT_OK(r);
  return r.ok() ? *r : ModelConfig{};
}

// Expects an error whose message is exactly `message` (one line, file first).
void ExpectError(const std::string& text, std::string_view message,
                 StatusCode code = StatusCode::kInvalidArgument) {
  auto r = ParseModelConfig(text, kSrc);
  ASSERT_FALSE(r.ok()) << "accepted: " << text;
  EXPECT_EQ(r.status().code(), code) << r.status().ToString();
  EXPECT_EQ(r.status().message(), message);
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
}

TEST(ModelConfig, ParsesLlamaWithDefaults) {
  const ModelConfig c = ParseOk(Llama());
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 8);  // hidden / heads
  EXPECT_EQ(c.intermediate_size, 128);
  EXPECT_EQ(c.num_hidden_layers, 4);
  EXPECT_EQ(c.vocab_size, 256);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(c.hybrid.window, std::vector<int64_t>(4, kDefaultWindow));
  EXPECT_EQ(c.hybrid.window_source, WindowSource::kDefault);
  EXPECT_DOUBLE_EQ(c.hybrid.global_ratio, 0.1);
  EXPECT_FALSE(c.hybrid.global_max.has_value());
  EXPECT_EQ(c.hybrid.sinks, 4);
  EXPECT_EQ(c.hybrid.fusion, "union");
  EXPECT_FALSE(c.hybrid.fusion_weighted);
  EXPECT_EQ(c.q_dim(), 64);
  EXPECT_EQ(c.kv_dim(), 16);
}

TEST(ModelConfig, KvHeadsDefaultToHeadsAndHeadDimMayDifferFromHiddenOverHeads) {
  const ModelConfig c = ParseOk(R"({"hidden_size": 64, "num_attention_heads": 4,
    "head_dim": 32, "intermediate_size": 128, "num_hidden_layers": 1, "vocab_size": 300,
    "rope_theta": 500000.0, "tie_word_embeddings": true, "max_position_embeddings": 8192,
    "torch_dtype": "bfloat16", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu",
    "bos_token_id": 1, "some_future_key": {"x": 1}})");
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 32);  // Llama 3 style: head_dim * heads != hidden
  EXPECT_EQ(c.q_dim(), 128);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);  // HF default
}

TEST(ModelConfig, WindowResolutionOrder) {
  // default
  EXPECT_EQ(ParseOk(Llama()).hybrid.window, std::vector<int64_t>(4, 64));
  // Mistral's sliding_window beats the default
  ModelConfig c = ParseOk(Llama(R"("sliding_window": 4096)"));
  EXPECT_EQ(c.hybrid.window, std::vector<int64_t>(4, 4096));
  EXPECT_EQ(c.hybrid.window_source, WindowSource::kSlidingWindow);
  // null sliding_window is allowed and means none
  c = ParseOk(Llama(R"("sliding_window": null)"));
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(c.hybrid.window_source, WindowSource::kDefault);
  // longctx.window beats sliding_window
  c = ParseOk(Llama(R"("sliding_window": 4096, "longctx": {"window": 128})"));
  EXPECT_EQ(c.hybrid.window, std::vector<int64_t>(4, 128));
  EXPECT_EQ(c.hybrid.window_source, WindowSource::kLongctx);
  EXPECT_EQ(c.sliding_window, 4096);
}

TEST(ModelConfig, MistralWithoutSlidingWindowKeyGetsHfDefault) {
  std::string text = Llama();
  text.replace(text.find("\"llama\""), 7, "\"mistral\"");
  const ModelConfig c = ParseOk(text);
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.hybrid.window, std::vector<int64_t>(4, 4096));
}

TEST(ModelConfig, PerLayerWindowArray) {
  const ModelConfig c = ParseOk(Llama(R"("longctx": {"window": [64, 256, 64, 1024]})"));
  EXPECT_EQ(c.hybrid.window, (std::vector<int64_t>{64, 256, 64, 1024}));
  EXPECT_EQ(c.Window(3), 1024);
  ExpectError(Llama(R"("longctx": {"window": [64, 256, 64]})"),
              "model/config.json: longctx.window has 3 entries but num_hidden_layers = 4");
  ExpectError(Llama(R"("longctx": {"window": []})"),
              "model/config.json: longctx.window has 0 entries but num_hidden_layers = 4");
  ExpectError(Llama(R"("longctx": {"window": [64, 0, 64, 64]})"),
              "model/config.json: longctx.window[1] = 0 must be positive");
  ExpectError(Llama(R"("longctx": {"window": [64, "x", 64, 64]})"),
              "model/config.json: longctx.window[1] = \"x\" is not an integer");
}

TEST(ModelConfig, LongctxBlock) {
  const ModelConfig c = ParseOk(Llama(
      R"("longctx": {"window": 32, "global_ratio": 0.25, "global_max": 100, "sinks": 2,
         "fusion": "weighted:0.7"})"));
  EXPECT_EQ(c.hybrid.window, std::vector<int64_t>(4, 32));
  EXPECT_DOUBLE_EQ(c.hybrid.global_ratio, 0.25);
  EXPECT_EQ(c.hybrid.global_max, 100);
  EXPECT_EQ(c.hybrid.sinks, 2);
  EXPECT_EQ(c.hybrid.fusion, "weighted:0.7");
  EXPECT_TRUE(c.hybrid.fusion_weighted);
  EXPECT_DOUBLE_EQ(c.hybrid.fusion_alpha, 0.7);
  // null global_max = the DESIGN default rule
  EXPECT_FALSE(ParseOk(Llama(R"("longctx": {"global_max": null})")).hybrid.global_max);
  EXPECT_EQ(ParseOk(Llama(R"("longctx": {"global_ratio": 0, "sinks": 0})")).hybrid.sinks, 0);
  EXPECT_TRUE(ParseOk(Llama(R"("longctx": {"fusion": "weighted:1"})")).hybrid.fusion_weighted);
}

TEST(ModelConfig, EveryValidationError) {
  const std::string base = R"("intermediate_size": 128, "num_hidden_layers": 4, "vocab_size": 256)";
  auto cfg = [&](std::string_view head) { return "{" + std::string(head) + ", " + base + "}"; };
  // kv heads do not divide heads
  ExpectError(cfg(R"("hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 3)"),
              "model/config.json: num_key_value_heads = 3 does not divide num_attention_heads = 8");
  // missing required key
  ExpectError(R"({"hidden_size": 64, "num_attention_heads": 8, "num_hidden_layers": 4,
                  "vocab_size": 256})",
              "model/config.json: intermediate_size is missing (required)");
  ExpectError(cfg(R"("hidden_size": null, "num_attention_heads": 8)"),
              "model/config.json: hidden_size is null (an integer is required)");
  // types
  ExpectError(cfg(R"("hidden_size": "64", "num_attention_heads": 8)"),
              "model/config.json: hidden_size = \"64\" is not an integer");
  ExpectError(cfg(R"("hidden_size": 64.5, "num_attention_heads": 8)"),
              "model/config.json: hidden_size = 64.5 is not an integer");
  ExpectError(cfg(R"("hidden_size": true, "num_attention_heads": 8)"),
              "model/config.json: hidden_size = true is not an integer");
  ExpectError(cfg(R"("hidden_size": 64, "num_attention_heads": 8, "rms_norm_eps": "x")"),
              "model/config.json: rms_norm_eps = \"x\" is not a number");
  ExpectError(cfg(R"("hidden_size": 64, "num_attention_heads": 8, "tie_word_embeddings": 1)"),
              "model/config.json: tie_word_embeddings = 1 is not true or false");
  // positivity and ranges
  ExpectError(cfg(R"("hidden_size": 0, "num_attention_heads": 8)"),
              "model/config.json: hidden_size = 0 must be positive");
  ExpectError(cfg(R"("hidden_size": 64, "num_attention_heads": -8)"),
              "model/config.json: num_attention_heads = -8 must be positive");
  ExpectError(cfg(R"("hidden_size": 18446744073709551615, "num_attention_heads": 8)"),
              "model/config.json: hidden_size = 18446744073709551615 is out of range [1, "
              "67108864]");
  ExpectError(cfg(R"("hidden_size": 64, "num_attention_heads": 8, "rms_norm_eps": 0)"),
              "model/config.json: rms_norm_eps = 0 must be positive");
  ExpectError(cfg(R"("hidden_size": 64, "num_attention_heads": 8, "rope_theta": -1)"),
              "model/config.json: rope_theta = -1 must be positive");
  ExpectError(cfg(R"("hidden_size": 64, "num_attention_heads": 8, "sliding_window": 0)"),
              "model/config.json: sliding_window = 0 must be positive");
  // head_dim
  ExpectError(cfg(R"("hidden_size": 60, "num_attention_heads": 8)"),
              "model/config.json: head_dim is absent and hidden_size = 60 is not a multiple of "
              "num_attention_heads = 8");
  ExpectError(cfg(R"("hidden_size": 64, "num_attention_heads": 8, "head_dim": 7)"),
              "model/config.json: head_dim = 7 must be even (RoPE rotates pairs of halves)");
  // vocab
  ExpectError(R"({"hidden_size": 64, "num_attention_heads": 8, "intermediate_size": 128,
                  "num_hidden_layers": 4, "vocab_size": 255})",
              "model/config.json: vocab_size = 255 is below 256, the byte-level tokenizer's "
              "vocabulary");
  // unsupported architecture features
  ExpectError(cfg(R"("hidden_size": 64, "num_attention_heads": 8, "model_type": "gemma3")"),
              "model/config.json: model_type = \"gemma3\" is not supported (llama, mistral, "
              "qwen2, qwen3)");
  ExpectError(cfg(R"("hidden_size": 64, "num_attention_heads": 8, "hidden_act": "gelu")"),
              "model/config.json: hidden_act = \"gelu\" is not supported (silu)");
  ExpectError(cfg(R"("hidden_size": 64, "num_attention_heads": 8, "attention_bias": true)"),
              "model/config.json: attention_bias = true is not supported (biases only on "
              "qwen2's q/k/v)",
              StatusCode::kUnimplemented);
  ExpectError(cfg(R"("hidden_size": 64, "num_attention_heads": 8,
                     "rope_scaling": {"rope_type": "longrope", "factor": 2})"),
              "model/config.json: rope_scaling.rope_type = \"longrope\" is not supported "
              "(default, linear, dynamic, llama3, yarn)",
              StatusCode::kUnimplemented);
  // top level
  ExpectError("[1, 2]", "model/config.json: top level is array, expected a JSON object");
}

TEST(ModelConfig, LongctxBlockErrors) {
  ExpectError(Llama(R"("longctx": 5)"), "model/config.json: longctx = 5 is not an object");
  ExpectError(Llama(R"("longctx": {"windw": 5})"),
              "model/config.json: longctx.windw is not a known key (window, global_ratio, "
              "global_max, sinks, fusion, query_globals, logn_base)");
  ExpectError(Llama(R"("longctx": {"window": 0})"),
              "model/config.json: longctx.window = 0 must be positive");
  ExpectError(Llama(R"("longctx": {"window": 1.5})"),
              "model/config.json: longctx.window = 1.5 is not an integer");
  ExpectError(Llama(R"("longctx": {"global_ratio": 1.5})"),
              "model/config.json: longctx.global_ratio = 1.5 is not in [0, 1]");
  ExpectError(Llama(R"("longctx": {"global_ratio": -0.1})"),
              "model/config.json: longctx.global_ratio = -0.1 is not in [0, 1]");
  ExpectError(Llama(R"("longctx": {"global_ratio": "a lot"})"),
              "model/config.json: longctx.global_ratio = \"a lot\" is not a number");
  ExpectError(Llama(R"("longctx": {"global_max": -1})"),
              "model/config.json: longctx.global_max = -1 is out of range [0, "
              "9223372036854775807]");
  ExpectError(Llama(R"("longctx": {"sinks": -2})"),
              "model/config.json: longctx.sinks = -2 is out of range [0, 9223372036854775807]");
  ExpectError(Llama(R"("longctx": {"fusion": "mean"})"),
              "model/config.json: longctx.fusion = \"mean\" is not \"union\" or \"weighted:A\" "
              "with A in [0, 1]");
  ExpectError(Llama(R"("longctx": {"fusion": "weighted:1.5"})"),
              "model/config.json: longctx.fusion = \"weighted:1.5\": A in weighted:A must be a "
              "number in [0, 1]");
  ExpectError(Llama(R"("longctx": {"fusion": "weighted:"})"),
              "model/config.json: longctx.fusion = \"weighted:\": A in weighted:A must be a "
              "number in [0, 1]");
  ExpectError(Llama(R"("longctx": {"fusion": "weighted:0.5x"})"),
              "model/config.json: longctx.fusion = \"weighted:0.5x\": A in weighted:A must be a "
              "number in [0, 1]");
  ExpectError(Llama(R"("longctx": {"fusion": 3})"),
              "model/config.json: longctx.fusion = 3 is not a string");
}

TEST(ModelConfig, MalformedJsonReportsPosition) {
  auto r = ParseModelConfig("{\"hidden_size\": 64,\n \"vocab_size\": }", kSrc);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  const std::string& m = r.status().message();
  EXPECT_EQ(m.rfind("model/config.json: not valid JSON: parse error at line 2, column ", 0), 0u)
      << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  EXPECT_EQ(m.find("[json.exception"), std::string::npos) << m;

  r = ParseModelConfig("", kSrc);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not valid JSON"), std::string::npos);
  r = ParseModelConfig("{} trailing", kSrc);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not valid JSON"), std::string::npos);
}

TEST(ModelConfig, ToJsonRoundTrips) {
  for (const std::string& text :
       {Llama(), Llama(R"("sliding_window": 512)"), Llama(R"("sliding_window": null)"),
        Llama(R"("longctx": {"window": [64, 256, 64, 1024], "global_ratio": 0.05,
                  "global_max": 77, "sinks": 1, "fusion": "weighted:0.3"})"),
        Llama(R"("longctx": {"global_max": 0, "sinks": 0, "query_globals": false})"),
        Llama(R"("head_dim": 32, "tie_word_embeddings": true, "rope_theta": 1e6,
                  "rms_norm_eps": 1.234567890123e-7, "max_position_embeddings": 131072)")}) {
    const ModelConfig c = ParseOk(text);
    const std::string json = ToJson(c);
    auto back = ParseModelConfig(json, "roundtrip");
    ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << json;
    EXPECT_EQ(*back, c) << json;
    EXPECT_EQ(ToJson(*back), json);
  }
  // A Mistral config without a sliding window must stay without one (HF would default to 4096).
  std::string mistral = Llama(R"("sliding_window": null)");
  mistral.replace(mistral.find("\"llama\""), 7, "\"mistral\"");
  const ModelConfig m = ParseOk(mistral);
  EXPECT_FALSE(m.sliding_window.has_value());
  EXPECT_EQ(ParseOk(ToJson(m)), m);

  // HF keys a transformers loader needs.
  const std::string json = ToJson(ParseOk(Llama()));
  EXPECT_NE(json.find("\"architectures\": [\n    \"LlamaForCausalLM\"\n  ]"), std::string::npos)
      << json;
  EXPECT_NE(json.find("\"model_type\": \"llama\""), std::string::npos);
  EXPECT_NE(json.find("\"hidden_act\": \"silu\""), std::string::npos);
  EXPECT_EQ(json.back(), '\n');
}

TEST(ModelConfig, PresetsAreValidAndRoundTrip) {
  for (const ModelConfig& c : {TinyConfig(), SmallConfig(), HybridTinyConfig()}) {
    EXPECT_OK(ValidateModelConfig(c, "preset"));
    auto back = ParseModelConfig(ToJson(c), "preset");
    ASSERT_OK(back);
    EXPECT_EQ(*back, c);
  }
  EXPECT_EQ(SmallConfig().hybrid.window, (std::vector<int64_t>{64, 256, 64, 256}));
  EXPECT_FALSE(PresetConfig("huge").ok());
  EXPECT_EQ(PresetConfig("hybrid-tiny")->num_hidden_layers, 4);
  for (std::string_view family : {"llama3", "qwen2", "qwen3", "mistral"}) {
    auto c = PresetConfig(family);
    ASSERT_TRUE(c.ok()) << family;
    EXPECT_TRUE(ValidateModelConfig(*c, "preset").ok()) << family;
    auto back = ParseModelConfig(ToJson(*c), "preset");
    ASSERT_OK(back);
    EXPECT_EQ(*back, *c) << family;
  }
}

TEST(ModelConfig, QueryGlobals) {
  // On by default and then not written; off is written and read back.
  EXPECT_TRUE(ParseOk(Llama()).hybrid.query_globals);
  EXPECT_EQ(ToJson(ParseOk(Llama())).find("query_globals"), std::string::npos);
  const ModelConfig off = ParseOk(Llama(R"("longctx": {"query_globals": false})"));
  EXPECT_FALSE(off.hybrid.query_globals);
  EXPECT_NE(ToJson(off).find("\"query_globals\": false"), std::string::npos);
  ExpectError(Llama(R"("longctx": {"query_globals": 1})"),
              "model/config.json: longctx.query_globals = 1 is not true or false");
  ModelConfig c = ParseOk(Llama());
  HybridOverrides o;
  o.query_globals = false;
  ASSERT_OK(ApplyOverrides(o, &c));
  EXPECT_FALSE(c.hybrid.query_globals);
}

TEST(ModelConfig, LognBase) {
  // Off (0) by default and then not written; a base is written and read back; 1 and negative
  // values are refused in the file and on the command line.
  EXPECT_EQ(ParseOk(Llama()).hybrid.logn_base, 0);
  EXPECT_EQ(ToJson(ParseOk(Llama())).find("logn_base"), std::string::npos);
  const ModelConfig on = ParseOk(Llama(R"("longctx": {"logn_base": 2048})"));
  EXPECT_EQ(on.hybrid.logn_base, 2048);
  EXPECT_EQ(ParseOk(ToJson(on)).hybrid.logn_base, 2048);
  ExpectError(Llama(R"("longctx": {"logn_base": 1})"),
              "model/config.json: longctx.logn_base = 1 is not 0 (off) or >= 2");
  ExpectError(Llama(R"("longctx": {"logn_base": -5})"),
              "model/config.json: longctx.logn_base = -5 is out of range [0, 9223372036854775807]");
  ModelConfig c = ParseOk(Llama());
  HybridOverrides o;
  o.logn_base = 1;
  const Status st = ApplyOverrides(o, &c);
  EXPECT_EQ(st.message(), "--logn-base: 1 is not 0 (off) or >= 2");
  EXPECT_EQ(c.hybrid.logn_base, 0);
  o.logn_base = 64;
  ASSERT_OK(ApplyOverrides(o, &c));
  EXPECT_EQ(c.hybrid.logn_base, 64);
}

TEST(ModelConfig, OverridesReplaceTheBlock) {
  ModelConfig c = ParseOk(Llama(R"("sliding_window": 4096)"));
  HybridOverrides o;
  o.window = std::vector<int64_t>{32};
  o.global_ratio = 0.5;
  o.global_max = 10;
  o.sinks = 0;
  o.fusion = "weighted:0.25";
  ASSERT_OK(ApplyOverrides(o, &c));
  EXPECT_EQ(c.hybrid.window, std::vector<int64_t>(4, 32));
  EXPECT_EQ(c.hybrid.window_source, WindowSource::kOverride);
  EXPECT_DOUBLE_EQ(c.hybrid.global_ratio, 0.5);
  EXPECT_EQ(c.hybrid.global_max, 10);
  EXPECT_EQ(c.hybrid.sinks, 0);
  EXPECT_TRUE(c.hybrid.fusion_weighted);
  EXPECT_DOUBLE_EQ(c.hybrid.fusion_alpha, 0.25);
  EXPECT_OK(ValidateModelConfig(c, "x"));
  // Overridden windows are written to the block, so they survive a round trip.
  EXPECT_EQ(ParseOk(ToJson(c)).hybrid.window, std::vector<int64_t>(4, 32));

  HybridOverrides per_layer;
  per_layer.window = std::vector<int64_t>{1, 2, 3, 4};
  ASSERT_OK(ApplyOverrides(per_layer, &c));
  EXPECT_EQ(c.hybrid.window, (std::vector<int64_t>{1, 2, 3, 4}));

  // A bad override leaves the config unchanged.
  const ModelConfig before = c;
  auto fails = [&](HybridOverrides bad, std::string_view message) {
    const Status st = ApplyOverrides(bad, &c);
    EXPECT_FALSE(st.ok());
    EXPECT_EQ(st.message(), message);
    EXPECT_EQ(c, before);
  };
  HybridOverrides bad;
  bad.window = std::vector<int64_t>{1, 2, 3};
  fails(bad, "--window: 3 values given but the model has 4 layers (give one, or one per layer)");
  bad = {};
  bad.window = std::vector<int64_t>{0};
  fails(bad, "--window: 0 must be positive");
  bad = {};
  bad.global_ratio = 2.0;
  fails(bad, "--global-ratio: 2 is not in [0, 1]");
  bad = {};
  bad.global_max = -1;
  fails(bad, "--global-max: -1 must be >= 0");
  bad = {};
  bad.sinks = -1;
  fails(bad, "--sinks: -1 must be >= 0");
  bad = {};
  bad.sinks = 3;
  bad.fusion = "avg";
  fails(bad, "--fusion: fusion = \"avg\" is not \"union\" or \"weighted:A\" with A in [0, 1]");
}

class ModelConfigFile : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.empty()) << "no temporary directory"; }
  test::TempDir tmp_{"config_test"};
  const fs::path dir_ = tmp_.path();
};

TEST_F(ModelConfigFile, LoadsFromDirectoryAndNamesThePath) {
  auto missing = LoadModelConfig(dir_.string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find((dir_ / "config.json").string()), std::string::npos);

  ASSERT_OK(WriteModelConfig((dir_ / "config.json").string(), TinyConfig()));
  auto loaded = LoadModelConfig(dir_.string());
  ASSERT_OK(loaded);
  EXPECT_EQ(*loaded, TinyConfig());
  // No temporary file is left behind.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++files;
  EXPECT_EQ(files, 1);

  std::ofstream(dir_ / "config.json") << Llama(R"("num_key_value_heads": 3)");
  auto bad = LoadModelConfig(dir_.string());
  ASSERT_FALSE(bad.ok());
  // The duplicate key keeps the last value (as Python's json does): 3.
  EXPECT_EQ(bad.status().message(),
            (dir_ / "config.json").string() +
                ": num_key_value_heads = 3 does not divide num_attention_heads = 8");
}

// The families and RoPE scaling of DESIGN.md §7: what each spelling parses to, and one clear
// line naming the key for everything refused.
TEST(ModelConfig, FamiliesAndRopeScaling) {
  ModelConfig c = ParseOk(Llama(R"("rope_theta": 500000.0, "max_position_embeddings": 131072,
      "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192, "rope_type": "llama3"},
      "eos_token_id": [128001, 128008, 128009], "dtype": "bfloat16")"));
  EXPECT_EQ(c.rope.type, RopeType::kLlama3);
  EXPECT_EQ(c.rope.factor, 8.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(ParseOk(ToJson(c)), c);  // round trip, list and all

  // The newer spelling: rope_theta inside; "type" as the legacy key of the type.
  c = ParseOk(Llama(R"("max_position_embeddings": 4096, "rope_parameters": {"rope_type": "yarn",
      "rope_theta": 1000000.0, "factor": 4.0, "original_max_position_embeddings": 1024,
      "attention_factor": 1.2, "beta_fast": 0})"));
  EXPECT_EQ(c.rope.type, RopeType::kYarn);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope.beta_fast, 32.0);  // HF: `beta_fast or 32`
  EXPECT_EQ(c.rope.attention_factor, 1.2);
  EXPECT_TRUE(c.rope.rope_parameters_spelling);
  EXPECT_EQ(ParseOk(ToJson(c)), c);
  c = ParseOk(Llama(R"("max_position_embeddings": 2048,
      "rope_scaling": {"type": "dynamic", "factor": 2.0})"));
  EXPECT_EQ(c.rope.type, RopeType::kDynamic);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 2048);  // max_position_embeddings
  c = ParseOk(Llama(R"("rope_parameters": {"rope_type": "default", "rope_theta": 5e5})"));
  EXPECT_EQ(c.rope.type, RopeType::kDefault);
  EXPECT_EQ(c.rope_theta, 5e5);

  // Qwen2: q/k/v biases; its sliding_window is ignored unless use_sliding_window.
  c = ParseOk(Llama(R"("model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": false,
      "max_window_layers": 21, "tie_word_embeddings": true, "eos_token_id": 151643)"));
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(c.hybrid.window_source, WindowSource::kDefault);
  // Qwen3: q/k norm; head_dim defaults to 128 (HF's Qwen3Config), not hidden / heads.
  c = ParseOk(Llama(R"("model_type": "qwen3", "layer_types": ["full_attention", "full_attention",
      "full_attention", "full_attention"])"));
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(ParseOk(ToJson(c)), c);

  ExpectError(Llama(R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
      "beta_fast": 32})"),
              "model/config.json: rope_scaling.beta_fast is not supported with rope_type "
              "\"llama3\"",
              StatusCode::kUnimplemented);
  ExpectError(Llama(R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0})"),
              "model/config.json: rope_scaling.original_max_position_embeddings is missing "
              "(required by llama3)");
  ExpectError(Llama(R"("rope_scaling": {"factor": 2.0})"),
              "model/config.json: rope_scaling.rope_type is missing (required in rope_scaling)");
  ExpectError(Llama(R"("rope_scaling": {"type": "linear"})"),
              "model/config.json: rope_scaling.factor is missing (required)");
  ExpectError(Llama(R"("rope_scaling": {"type": "dynamic", "factor": 2.0})"),
              "model/config.json: rope_scaling.original_max_position_embeddings is missing and "
              "so is max_position_embeddings (rope_type dynamic needs one)");
  ExpectError(Llama(R"("rope_scaling": {"type": "linear", "factor": 2.0},
      "rope_parameters": {"rope_type": "default"})"),
              "model/config.json: both rope_scaling and rope_parameters are given (give one)");
  ExpectError(Llama(R"("rope_theta": 10000.0, "rope_parameters": {"rope_type": "default",
      "rope_theta": 500000.0})"),
              "model/config.json: rope_theta = 10000 and rope_parameters.rope_theta = 500000 "
              "disagree");
  ExpectError(Llama(R"("rope_parameters": {"full_attention": {"rope_type": "default"},
      "sliding_attention": {"rope_type": "default"}})"),
              "model/config.json: rope_parameters per layer type (full_attention) is not "
              "supported",
              StatusCode::kUnimplemented);
  ExpectError(Llama(R"("partial_rotary_factor": 0.5)"),
              "model/config.json: partial_rotary_factor = 0.5 is not supported (1 only)",
              StatusCode::kUnimplemented);
  ExpectError(Llama(R"("model_type": "qwen2", "use_sliding_window": true)"),
              "model/config.json: use_sliding_window = true is not supported (Qwen's per-layer "
              "sliding windows; set longctx.window instead)",
              StatusCode::kUnimplemented);
  ExpectError(Llama(R"("layer_types": ["full_attention", "sliding_attention", "full_attention",
      "full_attention"])"),
              "model/config.json: layer_types[1] = \"sliding_attention\" is not supported "
              "(full_attention only)",
              StatusCode::kUnimplemented);
  ExpectError(Llama(R"("eos_token_id": [2, "x"])"),
              "model/config.json: eos_token_id[1] = \"x\" is not an integer");
}

// RoPE frequencies against values worked out by hand from the formulas (model/rope.h).
TEST(Rope, ScalingFormulas) {
  ModelConfig c = ParseOk(Llama(R"("head_dim": 8, "rope_theta": 10000.0)"));
  RopeFrequencies f = ComputeRopeFrequencies(c, 1);
  ASSERT_EQ(f.inv_freq.size(), 4u);
  EXPECT_DOUBLE_EQ(f.inv_freq[1], 0.1);  // 10000^(-2/8)
  EXPECT_DOUBLE_EQ(f.attention_scaling, 1.0);
  c.rope.type = RopeType::kLinear;
  c.rope.factor = 4.0;
  EXPECT_DOUBLE_EQ(ComputeRopeFrequencies(c, 1).inv_freq[1], 0.025);
  // dynamic: theta unchanged up to L0, then theta * (f n / L0 - (f - 1))^(d / (d - 2)).
  c.rope.type = RopeType::kDynamic;
  c.rope.factor = 2.0;
  c.rope.original_max_position_embeddings = 100;
  EXPECT_DOUBLE_EQ(ComputeRopeFrequencies(c, 100).inv_freq[1], 0.1);
  EXPECT_NEAR(ComputeRopeFrequencies(c, 200).inv_freq[1], std::pow(10000.0 * std::pow(3.0, 8.0 / 6), -0.25), 1e-15);
  // llama3 (L0 1000, low 1, high 4): wavelengths 6.3, 62.8, 628, 6283 -> unchanged, unchanged,
  // blended with s = (1000/628.3 - 1)/3, divided by f.
  c.rope.type = RopeType::kLlama3;
  c.rope.factor = 8.0;
  c.rope.low_freq_factor = 1.0;
  c.rope.high_freq_factor = 4.0;
  c.rope.original_max_position_embeddings = 1000;
  f = ComputeRopeFrequencies(c, 1);
  EXPECT_DOUBLE_EQ(f.inv_freq[0], 1.0);
  EXPECT_DOUBLE_EQ(f.inv_freq[1], 0.1);
  const double s = (1000.0 / (2 * std::numbers::pi / 0.01) - 1.0) / 3.0;
  EXPECT_NEAR(f.inv_freq[2], (1 - s) * 0.01 / 8 + s * 0.01, 1e-17);
  EXPECT_DOUBLE_EQ(f.inv_freq[3], 0.001 / 8);
  // yarn, f = e: attention factor 0.1 ln e + 1 = 1.1; or mscale ratio; or given.
  c.rope.type = RopeType::kYarn;
  c.rope.factor = std::exp(1.0);
  EXPECT_DOUBLE_EQ(ComputeRopeFrequencies(c, 1).attention_scaling, 1.1);
  c.rope.mscale = 2.0;
  c.rope.mscale_all_dim = 1.0;
  EXPECT_DOUBLE_EQ(ComputeRopeFrequencies(c, 1).attention_scaling, 1.2 / 1.1);
  c.rope.attention_factor = 0.7;
  EXPECT_DOUBLE_EQ(ComputeRopeFrequencies(c, 1).attention_scaling, 0.7);
  // The sequence length of dynamic NTK: the document's for its tokens, position + 1 after it.
  EXPECT_EQ(RopeSequenceLength(5, 100), 100);
  EXPECT_EQ(RopeSequenceLength(100, 100), 101);
}

}  // namespace
}  // namespace longctx::model
