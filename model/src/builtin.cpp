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

Result<ModelConfig> PresetConfig(std::string_view preset) {
  if (preset == "tiny") return TinyConfig();
  if (preset == "small") return SmallConfig();
  if (preset == "hybrid-tiny") return HybridTinyConfig();
  return InvalidArgument("unknown preset \"{}\" (tiny, small, hybrid-tiny)", preset);
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
    const bool is_norm = t.shape.size() == 1;
    // Embedding rows are read directly (unit variance); linear layers see in_features inputs.
    const double scale =
        is_norm || t.name == kEmbedTokensName ? 1.0 : 1.0 / std::sqrt(double(t.shape[1]));
    uint64_t state = seed ^ Fnv1a64(t.name);
    for (size_t i = 0; i < n; ++i) {
      const float v = is_norm ? 1.0f : static_cast<float>(NormalIsh(&state) * scale);
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
