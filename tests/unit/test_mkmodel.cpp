// Built-in models and `mkmodel`'s directory writer: the weights are deterministic per seed,
// written as a real HF-layout directory that loads back (config + weights + CheckWeights) with
// the same bytes as the in-memory builtin, and CheckWeights reports wrong models in one line.
#include <stdlib.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "longctx/model/builtin.h"
#include "longctx/model/config.h"
#include "longctx/model/llama_names.h"
#include "longctx/model/safetensors.h"
#include "longctx/test/temp_dir.h"
#include "longctx/test/status_matchers.h"

namespace longctx::model {
namespace {

namespace fs = std::filesystem;

class MkModel : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.empty()) << "no temporary directory"; }
  std::string Path(std::string_view name) const { return (dir_ / name).string(); }
  test::TempDir tmp_{"mkmodel_test"};
  const fs::path dir_ = tmp_.path();
};

bool SameBytes(const TensorRef& a, const TensorRef& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.bytes == b.bytes &&
         (a.bytes == 0 || std::memcmp(a.data, b.data, a.bytes) == 0);
}

TEST(LlamaNames, ExpectedTensorsOfTheTinyModel) {
  const ModelConfig c = TinyConfig();
  const std::vector<ExpectedTensor> e = ExpectedTensors(c);
  ASSERT_EQ(e.size(), 1u + 9u * 2u + 1u + 1u);
  EXPECT_EQ(e.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(e.front().shape, (std::vector<int64_t>{256, 64}));
  EXPECT_EQ(e[1].name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(e[1].shape, (std::vector<int64_t>{64, 64}));   // [H*hd, D] = [4*16, 64]
  EXPECT_EQ(e[2].name, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(e[2].shape, (std::vector<int64_t>{32, 64}));   // [Hkv*hd, D] = [2*16, 64]
  EXPECT_EQ(e[3].name, "model.layers.0.self_attn.v_proj.weight");
  EXPECT_EQ(e[4].name, "model.layers.0.self_attn.o_proj.weight");
  EXPECT_EQ(e[4].shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(e[5].name, "model.layers.0.mlp.gate_proj.weight");
  EXPECT_EQ(e[5].shape, (std::vector<int64_t>{128, 64}));
  EXPECT_EQ(e[6].name, "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(e[7].name, "model.layers.0.mlp.down_proj.weight");
  EXPECT_EQ(e[7].shape, (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(e[8].name, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(e[9].name, "model.layers.0.post_attention_layernorm.weight");
  EXPECT_EQ(e[9].shape, std::vector<int64_t>{64});
  EXPECT_EQ(e[10].name, "model.layers.1.self_attn.q_proj.weight");
  EXPECT_EQ(e[19].name, "model.norm.weight");
  EXPECT_EQ(e[20].name, "lm_head.weight");
  EXPECT_EQ(e[20].shape, (std::vector<int64_t>{256, 64}));
  EXPECT_EQ(LayerTensorName(7, LayerTensor::kDownProj), "model.layers.7.mlp.down_proj.weight");
  EXPECT_EQ(OutputEmbeddingName(c), "lm_head.weight");

  ModelConfig tied = c;
  tied.tie_word_embeddings = true;
  EXPECT_EQ(ExpectedTensors(tied).size(), e.size() - 1);
  EXPECT_EQ(ExpectedTensors(tied).back().name, "model.norm.weight");
  EXPECT_EQ(OutputEmbeddingName(tied), "model.embed_tokens.weight");

  // Llama 3 style head_dim != hidden / heads.
  ModelConfig wide = c;
  wide.head_dim = 32;
  EXPECT_EQ(ExpectedTensors(wide)[1].shape, (std::vector<int64_t>{128, 64}));
  EXPECT_EQ(ExpectedTensors(wide)[4].shape, (std::vector<int64_t>{64, 128}));
}

TEST(Builtin, DeterministicPerSeedAndScaled) {
  auto a = BuiltinWeights("builtin:tiny", 7);
  auto b = BuiltinWeights("builtin:tiny", 7);
  auto c = BuiltinWeights("builtin:tiny", 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << a.status().ToString();
  EXPECT_EQ(a->config.hidden_size, 64);
  EXPECT_EQ(a->weights.source(), "builtin:tiny");
  EXPECT_OK(CheckWeights(a->config, a->weights));
  for (const std::string& name : a->weights.Names()) {
    EXPECT_TRUE(SameBytes(*a->weights.Get(name), *b->weights.Get(name))) << name;
  }
  EXPECT_FALSE(SameBytes(*a->weights.Get("model.layers.0.self_attn.q_proj.weight"),
                         *c->weights.Get("model.layers.0.self_attn.q_proj.weight")));

  // Pinned bits: the generator must not change silently (built-in results, recorded benchmarks
  // and models on disk depend on it).
  const std::vector<float> q = ToFloat32(*a->weights.Get("model.layers.0.self_attn.q_proj.weight"));
  ASSERT_EQ(q.size(), 64u * 64u);
  EXPECT_EQ(FloatBits(q[0]), 0x3e400711u);
  EXPECT_EQ(FloatBits(q[1]), 0xbd5f4236u);
  EXPECT_EQ(FloatBits(q[2]), 0xbcc51a1bu);
  const std::vector<float> emb = ToFloat32(*a->weights.Get("model.embed_tokens.weight"));
  EXPECT_EQ(FloatBits(emb[0]), 0x3e853f02u);
  EXPECT_EQ(FloatBits(emb[1]), 0x3e8cb044u);

  // Norms are exactly 1; linear weights have std ~ 1/sqrt(in_features); embeddings ~ 1.
  for (float v : ToFloat32(*a->weights.Get("model.norm.weight"))) EXPECT_EQ(v, 1.0f);
  auto stddev = [](const std::vector<float>& v) {
    double s = 0, s2 = 0;
    for (float x : v) {
      s += x;
      s2 += double(x) * x;
    }
    const double m = s / double(v.size());
    return std::sqrt(s2 / double(v.size()) - m * m);
  };
  EXPECT_NEAR(stddev(q), 1.0 / 8.0, 0.01);  // in_features 64
  EXPECT_NEAR(stddev(ToFloat32(*a->weights.Get("model.layers.1.mlp.down_proj.weight"))),
              1.0 / std::sqrt(128.0), 0.01);
  EXPECT_NEAR(stddev(ToFloat32(*a->weights.Get("model.embed_tokens.weight"))), 1.0, 0.03);

  // BF16/F16 are the F32 values rounded to nearest.
  auto bf = BuiltinWeights("builtin:tiny", 7, DType::kBF16);
  auto hf = BuiltinWeights("builtin:tiny", 7, DType::kF16);
  ASSERT_TRUE(bf.ok() && hf.ok());
  const TensorRef qb = *bf->weights.Get("model.layers.0.self_attn.q_proj.weight");
  const TensorRef qh = *hf->weights.Get("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(qb.dtype, DType::kBF16);
  for (size_t i = 0; i < q.size(); ++i) {
    uint16_t ub, uh;
    std::memcpy(&ub, qb.data + 2 * i, 2);
    std::memcpy(&uh, qh.data + 2 * i, 2);
    ASSERT_EQ(ub, FloatToBF16(q[i])) << i;
    ASSERT_EQ(uh, FloatToHalf(q[i])) << i;
  }
  EXPECT_EQ(bf->config.torch_dtype, "bfloat16");

  auto small = BuiltinWeights("builtin:small", 0);
  ASSERT_OK(small);
  EXPECT_EQ(small->config.hybrid.window, (std::vector<int64_t>{64, 256, 64, 256}));
  EXPECT_OK(CheckWeights(small->config, small->weights));

  EXPECT_EQ(BuiltinWeights("builtin:huge", 0).status().message(),
            "builtin:huge: unknown preset \"huge\" (tiny, small, hybrid-tiny, llama3, qwen2, qwen3, "
            "mistral)");
  EXPECT_FALSE(BuiltinWeights("tiny", 0).ok());
  EXPECT_FALSE(BuiltinWeights("builtin:tiny", 0, DType::kI32).ok());
}

TEST_F(MkModel, WriteModelDirRoundTripsForEveryDType) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    const std::string dir = Path(std::string("tiny-") + std::string(DTypeName(dtype)));
    ASSERT_OK(WriteModelDir(dir, TinyConfig(), 42, dtype));
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path().filename());
    std::sort(files.begin(), files.end());
    EXPECT_EQ(files, (std::vector<std::string>{"config.json", "model.safetensors"}));

    auto config = LoadModelConfig(dir);
    ASSERT_OK(config);
    ModelConfig want = TinyConfig();
    want.torch_dtype = dtype == DType::kF32 ? "float32" : dtype == DType::kF16 ? "float16"
                                                                              : "bfloat16";
    EXPECT_EQ(*config, want);
    auto weights = ModelWeights::OpenDir(dir);
    ASSERT_OK(weights);
    ASSERT_OK(CheckWeights(*config, *weights));

    // Same bytes as the in-memory builtin for the same seed and dtype.
    auto builtin = BuiltinWeights("builtin:tiny", 42, dtype);
    ASSERT_OK(builtin);
    EXPECT_EQ(weights->Names(), builtin->weights.Names());
    for (const std::string& name : builtin->weights.Names()) {
      EXPECT_TRUE(SameBytes(*weights->Get(name), *builtin->weights.Get(name))) << name;
    }
    // transformers refuses safetensors files without format metadata.
    auto file = SafetensorsFile::Open(dir + "/model.safetensors");
    ASSERT_OK(file);
    EXPECT_EQ(file->metadata().at("format"), "pt");

    // OpenModel takes either form.
    auto opened = OpenModel(dir);
    ASSERT_OK(opened);
    EXPECT_EQ(opened->config, *config);
  }
  // Overwriting in place works; a sharded directory is refused.
  const std::string dir = Path("tiny-f32");
  EXPECT_OK(WriteModelDir(dir, TinyConfig(), 1, DType::kF32));
  std::ofstream(dir + "/model.safetensors.index.json") << "{}";
  const Status st = WriteModelDir(dir, TinyConfig(), 1, DType::kF32);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("model.safetensors.index.json"), std::string::npos);
}

TEST_F(MkModel, SmallPresetWithPerLayerWindows) {
  const std::string dir = Path("small");
  ASSERT_OK(WriteModelDir(dir, SmallConfig(), 3, DType::kBF16));
  auto model = OpenModel(dir);
  ASSERT_OK(model);
  EXPECT_EQ(model->config.hybrid.window, (std::vector<int64_t>{64, 256, 64, 256}));
  EXPECT_EQ(model->config.num_hidden_layers, 4);
}

// A directory whose weights do not match its config: each problem is one line naming the file
// and the tensor.
TEST_F(MkModel, CheckWeightsReportsTheFirstProblem) {
  const ModelConfig config = TinyConfig();
  auto builtin = BuiltinWeights("builtin:tiny", 0);
  ASSERT_OK(builtin);
  // Rewrite the tensors with one changed, as a wrong checkpoint would have it.
  auto write_with = [&](const std::string& name, const OwnedTensor* replacement) {
    std::vector<TensorRef> refs;
    for (const std::string& n : builtin->weights.Names()) {
      if (n == name) {
        if (replacement != nullptr) refs.push_back(replacement->ref());
      } else {
        refs.push_back(*builtin->weights.Get(n));
      }
    }
    EXPECT_OK(WriteSafetensors(Path("model.safetensors"), refs));
    return ModelWeights::OpenFile(Path("model.safetensors"));
  };
  const std::string file = Path("model.safetensors");

  auto missing = write_with("model.layers.1.mlp.up_proj.weight", nullptr);
  ASSERT_OK(missing);
  Status st = CheckWeights(config, *missing);
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_EQ(st.message(), file + ": missing tensor model.layers.1.mlp.up_proj.weight");

  OwnedTensor wrong_shape{"model.layers.0.self_attn.k_proj.weight", DType::kF32, {64, 64}, {}};
  wrong_shape.data.resize(64 * 64 * 4);
  auto shaped = write_with(wrong_shape.name, &wrong_shape);
  ASSERT_OK(shaped);
  st = CheckWeights(config, *shaped);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), file + ": tensor model.layers.0.self_attn.k_proj.weight has shape "
                                 "[64, 64], expected [32, 64] = [num_key_value_heads*head_dim, "
                                 "hidden_size]");

  OwnedTensor wrong_dtype{"model.norm.weight", DType::kI32, {64}, {}};
  wrong_dtype.data.resize(64 * 4);
  auto typed = write_with(wrong_dtype.name, &wrong_dtype);
  ASSERT_OK(typed);
  st = CheckWeights(config, *typed);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(),
            file + ": tensor model.norm.weight has dtype I32; longctx reads F32, F16 and BF16");

  // Tied embeddings: lm_head.weight is not needed, and one that the tie would ignore is refused.
  ModelConfig tied = config;
  tied.tie_word_embeddings = true;
  auto no_head = write_with("lm_head.weight", nullptr);
  ASSERT_OK(no_head);
  EXPECT_OK(CheckWeights(tied, *no_head));
  EXPECT_FALSE(CheckWeights(config, *no_head).ok());
  auto with_head = write_with("", nullptr);
  ASSERT_OK(with_head);
  st = CheckWeights(tied, *with_head);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), file + ": tensor lm_head.weight differs from model.embed_tokens.weight "
                                 "but tie_word_embeddings is true (the architecture would not "
                                 "read it)");
}

// A tensor the architecture would not read is an error naming it (a Qwen3 checkpoint labelled
// llama, biases without qwen2); derived buffers and a tied head equal to the embedding are not.
TEST_F(MkModel, CheckWeightsRefusesTensorsTheArchitectureWouldNotRead) {
  auto qwen3 = PresetConfig("qwen3");
  ASSERT_OK(qwen3);
  auto tensors = GenerateWeights(*qwen3, 1, DType::kF32);
  ASSERT_OK(tensors);
  std::vector<TensorRef> refs;
  for (const OwnedTensor& t : *tensors) refs.push_back(t.ref());
  OwnedTensor inv_freq{"model.layers.0.self_attn.rotary_emb.inv_freq", DType::kF32, {16}, {}};
  inv_freq.data.resize(16 * 4);
  refs.push_back(inv_freq.ref());
  ASSERT_OK(WriteSafetensors(Path("model.safetensors"), refs));
  auto w = ModelWeights::OpenFile(Path("model.safetensors"));
  ASSERT_OK(w);
  EXPECT_OK(CheckWeights(*qwen3, *w));
  ModelConfig as_llama = *qwen3;  // relabelled: its q/k norms would be ignored
  as_llama.model_type = "llama";
  as_llama.qk_norm = false;
  Status st = CheckWeights(as_llama, *w);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), Path("model.safetensors") +
                              ": tensor model.layers.0.self_attn.k_norm.weight is not used by "
                              "model_type llama (the architecture would not read it)");

  // qwen2: biases expected; a tied model whose checkpoint repeats the embedding as lm_head.
  auto qwen2 = PresetConfig("qwen2");
  ASSERT_OK(qwen2);
  auto t2 = GenerateWeights(*qwen2, 1, DType::kBF16);
  ASSERT_OK(t2);
  refs.clear();
  for (const OwnedTensor& t : *t2) {
    refs.push_back(t.ref());
    if (t.name == kEmbedTokensName) {
      TensorRef head = t.ref();
      head.name = std::string(kLmHeadName);
      refs.push_back(head);
    }
  }
  ASSERT_OK(WriteSafetensors(Path("model.safetensors"), refs));
  auto w2 = ModelWeights::OpenFile(Path("model.safetensors"));
  ASSERT_OK(w2);
  EXPECT_OK(CheckWeights(*qwen2, *w2));
  ModelConfig no_bias = *qwen2;
  no_bias.model_type = "llama";
  no_bias.qkv_bias = false;
  st = CheckWeights(no_bias, *w2);
  EXPECT_EQ(st.message(), Path("model.safetensors") +
                              ": tensor model.layers.0.self_attn.k_proj.bias is not used by "
                              "model_type llama with tied embeddings (the architecture would not "
                              "read it)");
}

TEST_F(MkModel, OpenModelErrorsNameTheDirectory) {
  auto none = OpenModel(Path("nowhere"));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(none.status().message().rfind(Path("nowhere/config.json"), 0), 0u)
      << none.status().message();
  // config.json but no weights.
  ASSERT_OK(WriteModelConfig(Path("config.json"), TinyConfig()));
  auto no_weights = OpenModel(dir_.string());
  EXPECT_EQ(no_weights.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace longctx::model
