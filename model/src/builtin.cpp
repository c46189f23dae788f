#include "longctx/model/builtin.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "file_util.h"
#include "longctx/model/llama_names.h"

namespace longctx::model {
namespace {

constexpr std::string_view kBuiltinPrefix = "builtin:";

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

// Approximately N(0, 1): the sum of four 16-bit uniforms in (0, 1), centred and rescaled to unit
// variance (Irwin-Hall). Plain integer and double arithmetic, so identical on every IEEE host.
double NormalIsh(uint64_t* state) {
  const uint64_t r = SplitMix64(state);
  double sum = 0.0;
  for (int i = 0; i < 4; ++i) {
    sum += (static_cast<double>((r >> (16 * i)) & 0xffffu) + 0.5) / 65536.0;
  }
  return (sum - 2.0) * 1.7320508075688772;  // sqrt(12 / 4)
}

std::string_view TorchDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
    default: return "float32";
  }
}

Status CheckFloatDType(DType dtype) {
  if (dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16) return Status::Ok();
  return InvalidArgument("builtin weights: dtype {} is not f32, f16 or bf16", DTypeName(dtype));
}

}  // namespace

ModelConfig TinyConfig() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 64;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.vocab_size = 256;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = false;
  c.hybrid.window.assign(2, 64);
  c.hybrid.window_source = WindowSource::kLongctx;
  return c;
}

ModelConfig SmallConfig() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 256;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 32;
  c.intermediate_size = 512;
  c.num_hidden_layers = 4;
  c.vocab_size = 256;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = false;
  c.hybrid.window = {64, 256, 64, 256};
  c.hybrid.window_source = WindowSource::kLongctx;
  return c;
}

ModelConfig HybridTinyConfig() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 128;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 32;
  c.intermediate_size = 256;
  c.num_hidden_layers = 4;
  c.vocab_size = 256;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 3e8;
  c.tie_word_embeddings = false;
  c.hybrid.window.assign(4, 64);
  c.hybrid.window_source = WindowSource::kLongctx;
  c.hybrid.global_ratio = 0.002;
  return c;
}

namespace {

// The shape the family presets share; each family then sets what makes it that family.
ModelConfig FamilyBase(std::string_view family) {
  ModelConfig c;
  c.model_type = std::string(family);
  c.hidden_size = 64;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.vocab_size = 288;  // PresetTokenizerJson's 274 ids, padded (as real models pad theirs)
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = 4096;
  c.eos_token_ids = {kPresetEosId};
  c.hybrid.window.assign(2, 64);
  c.hybrid.window_source = WindowSource::kLongctx;
  return c;
}

}  // namespace

bool IsFamilyPreset(std::string_view preset) {
  return preset == "llama3" || preset == "qwen2" || preset == "qwen3" || preset == "mistral";
}

Result<ModelConfig> PresetConfig(std::string_view preset) {
  if (preset == "tiny") return TinyConfig();
  if (preset == "small") return SmallConfig();
  if (preset == "hybrid-tiny") return HybridTinyConfig();
  if (preset == "llama3") {
    ModelConfig c = FamilyBase("llama");
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 5e5;
    c.rope.type = RopeType::kLlama3;
    c.rope.factor = 8.0;
    c.rope.low_freq_factor = 1.0;
    c.rope.high_freq_factor = 4.0;
    c.rope.original_max_position_embeddings = 256;
    return c;
  }
  if (preset == "qwen2") {
    ModelConfig c = FamilyBase("qwen2");
    c.qkv_bias = true;
    c.tie_word_embeddings = true;
    c.rope_theta = 1e6;
    return c;
  }
  if (preset == "qwen3") {
    ModelConfig c = FamilyBase("qwen3");
    c.qk_norm = true;
    c.head_dim = 32;
    c.rope_theta = 1e6;
    return c;
  }
  if (preset == "mistral") {
    ModelConfig c = FamilyBase("mistral");
    c.num_key_value_heads = 1;
    c.rope_theta = 1e4;
    c.sliding_window = 48;
    c.hybrid.window.assign(2, 48);
    c.hybrid.window_source = WindowSource::kSlidingWindow;
    return c;
  }
  return InvalidArgument(
      "unknown preset \"{}\" (tiny, small, hybrid-tiny, llama3, qwen2, qwen3, mistral)", preset);
}

namespace {

// GPT-2's byte-to-character map of byte-level BPE: printable bytes stand for themselves, the
// others for U+0100 + their rank among the non-printable bytes. UTF-8 of that character.
std::string ByteLevelChar(int b) {
  auto printable = [](int x) {
    return (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255);
  };
  int cp = b;
  if (!printable(b)) {
    int rank = 0;
    for (int x = 0; x < b; ++x) rank += printable(x) ? 0 : 1;
    cp = 256 + rank;
  }
  std::string out;
  if (cp < 0x80) {
    out += char(cp);
  } else {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  }
  return out;
}

}  // namespace

std::string PresetTokenizerJson() {
  // Merges in priority order; each result is the next id from 256 ("Ġ" is the space byte).
  static constexpr std::pair<std::string_view, std::string_view> kMerges[] = {
      {"Ġ", "t"}, {"h", "e"}, {"i", "n"}, {"Ġ", "a"}, {"e", "r"}, {"Ġt", "he"},
      {"o", "n"}, {"r", "e"}, {"Ġ", "s"}, {"a", "t"}, {"e", "n"}, {"Ġ", "o"},
      {"Ġ", "w"}, {"Ġ", "c"}, {"o", "r"}, {"e", "s"}};
  auto quoted = [](std::string_view s) {
    std::string q = "\"";
    for (char ch : s) {
      if (ch == '"' || ch == '\\') q += '\\';
      q += ch;
    }
    return q + "\"";
  };
  std::string vocab, merges;
  for (int b = 0; b < 256; ++b) {
    vocab += fmt::format("{}{}: {}", b ? ", " : "", quoted(ByteLevelChar(b)), b);
  }
  int id = 256;
  for (const auto& [a, b] : kMerges) {
    vocab += fmt::format(", {}: {}", quoted(std::string(a) + std::string(b)), id++);
    merges += fmt::format("{}{}", id > 257 ? ", " : "", quoted(std::string(a) + " " + std::string(b)));
  }
  auto added = [](int32_t tid, std::string_view content) {
    return fmt::format(R"({{"id": {}, "content": "{}", "single_word": false, "lstrip": false, )"
                       R"("rstrip": false, "normalized": false, "special": true}})",
                       tid, content);
  };
  return fmt::format(
      R"({{"version": "1.0", "truncation": null, "padding": null,)" "\n"
      R"( "added_tokens": [{}, {}],)" "\n"
      R"( "normalizer": null,)" "\n"
      R"( "pre_tokenizer": {{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}},)" "\n"
      R"( "post_processor": {{"type": "TemplateProcessing", "single": [{{"SpecialToken": {{"id": "<|begin_of_text|>", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}], "pair": [], "special_tokens": {{"<|begin_of_text|>": {{"id": "<|begin_of_text|>", "ids": [{}], "tokens": ["<|begin_of_text|>"]}}}}}},)" "\n"
      R"( "decoder": {{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}},)" "\n"
      R"( "model": {{"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,)" "\n"
      R"(  "vocab": {{{}}},)" "\n"
      R"(  "merges": [{}]}}}})" "\n",
      added(kPresetBosId, "<|begin_of_text|>"), added(kPresetEosId, "<|end_of_text|>"),
      kPresetBosId, vocab, merges);
}

Status WriteTokenizerJson(const std::string& dir, std::string_view json) {
  return internal::WriteFileAtomically(dir + "/tokenizer.json", json);
}

Result<std::vector<OwnedTensor>> GenerateWeights(const ModelConfig& config, uint64_t seed,
                                                 DType dtype) {
  RETURN_IF_ERROR(CheckFloatDType(dtype));
  RETURN_IF_ERROR(ValidateModelConfig(config, "builtin config"));
  std::vector<OwnedTensor> out;
  for (ExpectedTensor& e : ExpectedTensors(config)) {
    OwnedTensor t;
    t.name = std::move(e.name);
    t.dtype = dtype;
    t.shape = std::move(e.shape);
    const auto n = static_cast<size_t>(t.ref().numel());
    t.data.resize(n * DTypeSize(dtype));
    auto ends_with = [&](std::string_view suffix) {
      return t.name.size() >= suffix.size() &&
             std::string_view(t.name).substr(t.name.size() - suffix.size()) == suffix;
    };
    const bool is_bias = ends_with(".bias");
    const bool is_head_norm = ends_with("q_norm.weight") || ends_with("k_norm.weight");
    const bool is_norm = t.shape.size() == 1 && !is_bias && !is_head_norm;
    // Embedding rows are read directly (unit variance); linear layers see in_features inputs.
    const double scale = is_bias ? 0.5
                         : is_head_norm ? 0.25
                         : is_norm || t.name == kEmbedTokensName
                             ? 1.0
                             : 1.0 / std::sqrt(double(t.shape[1]));
    uint64_t state = seed ^ Fnv1a64(t.name);
    for (size_t i = 0; i < n; ++i) {
      const float v = is_norm        ? 1.0f
                      : is_head_norm ? static_cast<float>(1.0 + NormalIsh(&state) * scale)
                                     : static_cast<float>(NormalIsh(&state) * scale);
      std::byte* dst = t.data.data() + i * DTypeSize(dtype);
      if (dtype == DType::kF32) {
        std::memcpy(dst, &v, 4);
      } else {
        const uint16_t h = dtype == DType::kF16 ? FloatToHalf(v) : FloatToBF16(v);
        std::memcpy(dst, &h, 2);
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

Result<Model> BuiltinWeights(std::string_view spec, uint64_t seed, DType dtype) {
  if (spec.substr(0, kBuiltinPrefix.size()) != kBuiltinPrefix) {
    return InvalidArgument("\"{}\" is not a builtin model (builtin:tiny, builtin:small)", spec);
  }
  auto preset = PresetConfig(spec.substr(kBuiltinPrefix.size()));
  if (!preset.ok()) return preset.status().WithContext(spec);
  ModelConfig config = std::move(preset).value();
  config.torch_dtype = std::string(TorchDTypeName(dtype));
  ASSIGN_OR_RETURN(std::vector<OwnedTensor> tensors, GenerateWeights(config, seed, dtype));
  ASSIGN_OR_RETURN(ModelWeights weights,
                   ModelWeights::FromTensors(std::move(tensors), std::string(spec)));
  return Model{std::move(config), std::move(weights)};
}

Status WriteModelDir(const std::string& dir, const ModelConfig& config, uint64_t seed,
                     DType dtype) {
  ModelConfig c = config;
  c.torch_dtype = std::string(TorchDTypeName(dtype));
  ASSIGN_OR_RETURN(std::vector<OwnedTensor> tensors, GenerateWeights(c, seed, dtype));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return FailedPrecondition("{}: cannot create the directory: {}", dir, ec.message());
  const std::string index = dir + "/model.safetensors.index.json";
  struct stat st {};
  if (::stat(index.c_str(), &st) == 0) {
    return FailedPrecondition(
        "{}: holds a sharded model (model.safetensors.index.json), which would shadow the new "
        "model.safetensors; choose another directory",
        dir);
  }
  std::vector<TensorRef> refs;
  refs.reserve(tensors.size());
  for (const OwnedTensor& t : tensors) refs.push_back(t.ref());
  RETURN_IF_ERROR(WriteSafetensors(dir + "/model.safetensors", refs, {{"format", "pt"}}));
  return WriteModelConfig(dir + "/config.json", c);
}

Result<Model> OpenModel(std::string_view spec, uint64_t seed, DType builtin_dtype) {
  if (spec.substr(0, kBuiltinPrefix.size()) == kBuiltinPrefix) {
    return BuiltinWeights(spec, seed, builtin_dtype);
  }
  const std::string dir(spec);
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  ASSIGN_OR_RETURN(ModelWeights weights, ModelWeights::OpenDir(dir));
  RETURN_IF_ERROR(CheckWeights(config, weights));
  return Model{std::move(config), std::move(weights)};
}

}  // namespace longctx::model
