#include "longctx/model/config.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <system_error>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "file_util.h"
#include "json_util.h"

namespace longctx::model {
namespace {

using json = nlohmann::json;
using internal::JsonErrorText;
using internal::Repr;

constexpr int64_t kMaxDim = int64_t{1} << 26;     // bound on every size, so products fit int64
constexpr uint64_t kMaxConfigBytes = 16u << 20;   // config.json larger than this is refused
constexpr int64_t kMistralDefaultSlidingWindow = 4096;

// Reads typed keys of one JSON object, naming `prefix + key` and the file in every error.
class KeyReader {
 public:
  KeyReader(const json& obj, std::string_view source, std::string prefix)
      : obj_(obj), source_(source), prefix_(std::move(prefix)) {}

  // nullptr when absent or null.
  const json* Find(std::string_view key) const {
    const auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  Status Error(std::string_view key, std::string_view what) const {
    return InvalidArgument("{}: {}{} {}", source_, prefix_, key, what);
  }

  // An integer in [min, max]; absent/null -> nullopt.
  Result<std::optional<int64_t>> OptInt(std::string_view key, int64_t min,
                                        int64_t max = kMaxDim) const {
    const json* v = Find(key);
    if (v == nullptr) return std::optional<int64_t>();
    ASSIGN_OR_RETURN(int64_t x, IntValue(key, *v, min, max));
    return std::optional<int64_t>(x);
  }

  Result<int64_t> RequiredInt(std::string_view key, int64_t min, int64_t max = kMaxDim) const {
    if (obj_.find(key) == obj_.end()) return Error(key, "is missing (required)");
    const json* v = Find(key);
    if (v == nullptr) return Error(key, "is null (an integer is required)");
    return IntValue(key, *v, min, max);
  }

  Result<int64_t> IntValue(std::string_view key, const json& v, int64_t min, int64_t max) const {
    if (!v.is_number_integer()) {
      return Error(key, fmt::format("= {} is not an integer", Repr(v)));
    }
    if (v.is_number_unsigned() &&
        v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Error(key, fmt::format("= {} is out of range [{}, {}]", Repr(v), min, max));
    }
    const auto x = v.get<int64_t>();
    if (x < min || x > max) {
      if (min == 1 && x <= 0) return Error(key, fmt::format("= {} must be positive", x));
      return Error(key, fmt::format("= {} is out of range [{}, {}]", x, min, max));
    }
    return x;
  }

  // A finite number; absent/null -> `fallback`.
  Result<double> Number(std::string_view key, double fallback) const {
    const json* v = Find(key);
    if (v == nullptr) return fallback;
    if (!v->is_number()) return Error(key, fmt::format("= {} is not a number", Repr(*v)));
    const auto x = v->get<double>();
    if (!std::isfinite(x)) return Error(key, fmt::format("= {} is not finite", Repr(*v)));
    return x;
  }

  Result<bool> Bool(std::string_view key, bool fallback) const {
    const json* v = Find(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) return Error(key, fmt::format("= {} is not true or false", Repr(*v)));
    return v->get<bool>();
  }

  Result<std::optional<std::string>> OptString(std::string_view key) const {
    const json* v = Find(key);
    if (v == nullptr) return std::optional<std::string>();
    if (!v->is_string()) return Error(key, fmt::format("= {} is not a string", Repr(*v)));
    return std::optional<std::string>(v->get<std::string>());
  }

 private:
  const json& obj_;
  std::string_view source_;
  std::string prefix_;
};

Status ParseHybridBlock(const json& block, std::string_view source, int64_t layers,
                        HybridConfig* hybrid) {
  if (!block.is_object()) {
    return InvalidArgument("{}: longctx = {} is not an object", source, Repr(block));
  }
  static constexpr std::string_view kKnown[] = {"window", "global_ratio", "global_max", "sinks",
                                                "fusion", "query_globals", "logn_base"};
  for (const auto& [key, value] : block.items()) {
    bool known = false;
    for (std::string_view k : kKnown) known = known || key == k;
    if (!known) {
      return InvalidArgument(
          "{}: longctx.{} is not a known key (window, global_ratio, global_max, sinks, fusion, "
          "query_globals, logn_base)",
          source, key);
    }
  }
  const KeyReader r(block, source, "longctx.");
  if (const json* w = r.Find("window"); w != nullptr) {
    std::vector<int64_t> windows;
    if (w->is_array()) {
      if (static_cast<int64_t>(w->size()) != layers) {
        return InvalidArgument("{}: longctx.window has {} entries but num_hidden_layers = {}",
                               source, w->size(), layers);
      }
      for (size_t i = 0; i < w->size(); ++i) {
        ASSIGN_OR_RETURN(int64_t x, r.IntValue(fmt::format("window[{}]", i), (*w)[i], 1,
                                               std::numeric_limits<int64_t>::max()));
        windows.push_back(x);
      }
    } else {
      ASSIGN_OR_RETURN(int64_t x,
                       r.IntValue("window", *w, 1, std::numeric_limits<int64_t>::max()));
      windows.assign(static_cast<size_t>(layers), x);
    }
    hybrid->window = std::move(windows);
    hybrid->window_source = WindowSource::kLongctx;
  }
  ASSIGN_OR_RETURN(hybrid->global_ratio, r.Number("global_ratio", hybrid->global_ratio));
  if (!(hybrid->global_ratio >= 0.0 && hybrid->global_ratio <= 1.0)) {
    return r.Error("global_ratio", fmt::format("= {} is not in [0, 1]", hybrid->global_ratio));
  }
  ASSIGN_OR_RETURN(hybrid->global_max,
                   r.OptInt("global_max", 0, std::numeric_limits<int64_t>::max()));
  ASSIGN_OR_RETURN(std::optional<int64_t> sinks,
                   r.OptInt("sinks", 0, std::numeric_limits<int64_t>::max()));
  if (sinks) hybrid->sinks = *sinks;
  ASSIGN_OR_RETURN(hybrid->query_globals, r.Bool("query_globals", hybrid->query_globals));
  ASSIGN_OR_RETURN(std::optional<int64_t> logn_base,
                   r.OptInt("logn_base", 0, std::numeric_limits<int64_t>::max()));
  if (logn_base) {
    if (*logn_base == 1) return r.Error("logn_base", "= 1 is not 0 (off) or >= 2");
    hybrid->logn_base = *logn_base;
  }
  ASSIGN_OR_RETURN(std::optional<std::string> fusion, r.OptString("fusion"));
  if (fusion) {
    Status st = ParseFusionText(*fusion, &hybrid->fusion_weighted, &hybrid->fusion_alpha);
    if (!st.ok()) return InvalidArgument("{}: longctx.{}", source, st.message());
    hybrid->fusion = *fusion;
  }
  return Status::Ok();
}

// Checks relationships between fields (types and ranges were checked while reading).
Status CheckRelations(const ModelConfig& c, std::string_view source) {
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return InvalidArgument("{}: num_key_value_heads = {} does not divide num_attention_heads = {}",
                           source, c.num_key_value_heads, c.num_attention_heads);
  }
  if (c.head_dim % 2 != 0) {
    return InvalidArgument("{}: head_dim = {} must be even (RoPE rotates pairs of halves)", source,
                           c.head_dim);
  }
  if (c.vocab_size < 256) {
    return InvalidArgument(
        "{}: vocab_size = {} is below 256, the byte-level tokenizer's vocabulary", source,
        c.vocab_size);
  }
  if (static_cast<int64_t>(c.hybrid.window.size()) != c.num_hidden_layers) {
    return InvalidArgument("{}: {} windows for num_hidden_layers = {}", source,
                           c.hybrid.window.size(), c.num_hidden_layers);
  }
  return Status::Ok();
}

}  // namespace

std::string_view WindowSourceName(WindowSource s) {
  switch (s) {
    case WindowSource::kOverride: return "override";
    case WindowSource::kLongctx: return "longctx";
    case WindowSource::kSlidingWindow: return "sliding_window";
    case WindowSource::kDefault: return "default";
  }
  return "unknown";
}

Status ParseFusionText(std::string_view text, bool* weighted, double* alpha) {
  if (text == "union") {
    *weighted = false;
    *alpha = 0.0;
    return Status::Ok();
  }
  constexpr std::string_view kPrefix = "weighted:";
  if (text.substr(0, kPrefix.size()) == kPrefix) {
    const std::string_view num = text.substr(kPrefix.size());
    double a = 0.0;
    const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), a);
    if (!num.empty() && ec == std::errc() && end == num.data() + num.size() && a >= 0.0 &&
        a <= 1.0) {
      *weighted = true;
      *alpha = a;
      return Status::Ok();
    }
    return InvalidArgument("fusion = \"{}\": A in weighted:A must be a number in [0, 1]", text);
  }
  return InvalidArgument("fusion = \"{}\" is not \"union\" or \"weighted:A\" with A in [0, 1]",
                         text);
}

Result<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    return InvalidArgument("{}: not valid JSON: {}", source, JsonErrorText(e));
  }
  if (!root.is_object()) {
    return InvalidArgument("{}: top level is {}, expected a JSON object", source,
                           root.type_name());
  }
  const KeyReader r(root, source, "");
  ModelConfig c;

  ASSIGN_OR_RETURN(std::optional<std::string> model_type, r.OptString("model_type"));
  if (model_type) {
    if (*model_type != "llama" && *model_type != "mistral") {
      return r.Error("model_type", fmt::format("= \"{}\" is not supported (llama, mistral)",
                                               *model_type));
    }
    c.model_type = *model_type;
  }
  ASSIGN_OR_RETURN(std::optional<std::string> act, r.OptString("hidden_act"));
  if (act && *act != "silu") {
    return r.Error("hidden_act", fmt::format("= \"{}\" is not supported (silu)", *act));
  }
  for (std::string_view key : {"attention_bias", "mlp_bias"}) {
    ASSIGN_OR_RETURN(bool bias, r.Bool(key, false));
    if (bias) return r.Error(key, "= true is not supported (Llama layers without biases)");
  }
  if (const json* rs = r.Find("rope_scaling"); rs != nullptr) {
    return Unimplemented("{}: rope_scaling = {} is not supported (plain RoPE only)", source,
                         Repr(*rs));
  }

  ASSIGN_OR_RETURN(c.hidden_size, r.RequiredInt("hidden_size", 1));
  ASSIGN_OR_RETURN(c.num_attention_heads, r.RequiredInt("num_attention_heads", 1));
  ASSIGN_OR_RETURN(std::optional<int64_t> kv, r.OptInt("num_key_value_heads", 1));
  c.num_key_value_heads = kv.value_or(c.num_attention_heads);
  ASSIGN_OR_RETURN(std::optional<int64_t> hd, r.OptInt("head_dim", 1));
  if (hd) {
    c.head_dim = *hd;
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return InvalidArgument(
          "{}: head_dim is absent and hidden_size = {} is not a multiple of "
          "num_attention_heads = {}",
          source, c.hidden_size, c.num_attention_heads);
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  ASSIGN_OR_RETURN(c.intermediate_size, r.RequiredInt("intermediate_size", 1));
  ASSIGN_OR_RETURN(c.num_hidden_layers, r.RequiredInt("num_hidden_layers", 1));
  ASSIGN_OR_RETURN(c.vocab_size, r.RequiredInt("vocab_size", 1));
  ASSIGN_OR_RETURN(c.rms_norm_eps, r.Number("rms_norm_eps", c.rms_norm_eps));
  if (!(c.rms_norm_eps > 0.0)) {
    return r.Error("rms_norm_eps", fmt::format("= {} must be positive", c.rms_norm_eps));
  }
  ASSIGN_OR_RETURN(c.rope_theta, r.Number("rope_theta", c.rope_theta));
  if (!(c.rope_theta > 0.0)) {
    return r.Error("rope_theta", fmt::format("= {} must be positive", c.rope_theta));
  }
  ASSIGN_OR_RETURN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", false));
  const int64_t kIntMax = std::numeric_limits<int64_t>::max();
  if (root.contains("sliding_window")) {
    ASSIGN_OR_RETURN(c.sliding_window, r.OptInt("sliding_window", 1, kIntMax));
  } else if (c.model_type == "mistral") {
    c.sliding_window = kMistralDefaultSlidingWindow;
  }
  ASSIGN_OR_RETURN(c.max_position_embeddings, r.OptInt("max_position_embeddings", 1, kIntMax));
  ASSIGN_OR_RETURN(std::optional<std::string> torch_dtype, r.OptString("torch_dtype"));
  c.torch_dtype = torch_dtype.value_or("");

  // Windows: longctx.window, else sliding_window, else the default.
  if (c.sliding_window) {
    c.hybrid.window.assign(static_cast<size_t>(c.num_hidden_layers), *c.sliding_window);
    c.hybrid.window_source = WindowSource::kSlidingWindow;
  } else {
    c.hybrid.window.assign(static_cast<size_t>(c.num_hidden_layers), kDefaultWindow);
    c.hybrid.window_source = WindowSource::kDefault;
  }
  if (const json* block = r.Find("longctx"); block != nullptr) {
    RETURN_IF_ERROR(ParseHybridBlock(*block, source, c.num_hidden_layers, &c.hybrid));
  }
  RETURN_IF_ERROR(CheckRelations(c, source));
  return c;
}

Result<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  ASSIGN_OR_RETURN(std::string text, internal::ReadSmallFile(path, kMaxConfigBytes));
  return ParseModelConfig(text, path);
}

Status ValidateModelConfig(const ModelConfig& c, std::string_view source) {
  auto positive = [&](std::string_view key, int64_t v) -> Status {
    if (v < 1) return InvalidArgument("{}: {} = {} must be positive", source, key, v);
    if (v > kMaxDim) {
      return InvalidArgument("{}: {} = {} is out of range [1, {}]", source, key, v, kMaxDim);
    }
    return Status::Ok();
  };
  if (c.model_type != "llama" && c.model_type != "mistral") {
    return InvalidArgument("{}: model_type = \"{}\" is not supported (llama, mistral)", source,
                           c.model_type);
  }
  RETURN_IF_ERROR(positive("hidden_size", c.hidden_size));
  RETURN_IF_ERROR(positive("num_attention_heads", c.num_attention_heads));
  RETURN_IF_ERROR(positive("num_key_value_heads", c.num_key_value_heads));
  RETURN_IF_ERROR(positive("head_dim", c.head_dim));
  RETURN_IF_ERROR(positive("intermediate_size", c.intermediate_size));
  RETURN_IF_ERROR(positive("num_hidden_layers", c.num_hidden_layers));
  RETURN_IF_ERROR(positive("vocab_size", c.vocab_size));
  if (!(c.rms_norm_eps > 0.0) || !std::isfinite(c.rms_norm_eps)) {
    return InvalidArgument("{}: rms_norm_eps = {} must be positive", source, c.rms_norm_eps);
  }
  if (!(c.rope_theta > 0.0) || !std::isfinite(c.rope_theta)) {
    return InvalidArgument("{}: rope_theta = {} must be positive", source, c.rope_theta);
  }
  if (c.sliding_window && *c.sliding_window < 1) {
    return InvalidArgument("{}: sliding_window = {} must be positive", source, *c.sliding_window);
  }
  RETURN_IF_ERROR(CheckRelations(c, source));
  for (size_t i = 0; i < c.hybrid.window.size(); ++i) {
    if (c.hybrid.window[i] < 1) {
      return InvalidArgument("{}: longctx.window[{}] = {} must be positive", source, i,
                             c.hybrid.window[i]);
    }
  }
  const HybridConfig& h = c.hybrid;
  if (!(h.global_ratio >= 0.0 && h.global_ratio <= 1.0)) {
    return InvalidArgument("{}: longctx.global_ratio = {} is not in [0, 1]", source,
                           h.global_ratio);
  }
  if (h.global_max && *h.global_max < 0) {
    return InvalidArgument("{}: longctx.global_max = {} must be >= 0", source, *h.global_max);
  }
  if (h.sinks < 0) {
    return InvalidArgument("{}: longctx.sinks = {} must be >= 0", source, h.sinks);
  }
  bool weighted = false;
  double alpha = 0.0;
  Status st = ParseFusionText(h.fusion, &weighted, &alpha);
  if (!st.ok()) return InvalidArgument("{}: longctx.{}", source, st.message());
  if (weighted != h.fusion_weighted || alpha != h.fusion_alpha) {
    return InvalidArgument("{}: longctx.fusion = \"{}\" disagrees with its parsed form", source,
                           h.fusion);
  }
  return Status::Ok();
}

std::string ToJson(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {c.model_type == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = c.model_type;
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.max_position_embeddings) j["max_position_embeddings"] = *c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  // A mistral config without the key means 4096 to HF, so "none" must be written as null.
  if (c.sliding_window) {
    j["sliding_window"] = *c.sliding_window;
  } else if (c.model_type == "mistral") {
    j["sliding_window"] = nullptr;
  }
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;

  nlohmann::ordered_json block = nlohmann::ordered_json::object();
  const HybridConfig& h = c.hybrid;
  if (h.window_source == WindowSource::kLongctx || h.window_source == WindowSource::kOverride) {
    bool uniform = !h.window.empty();
    for (int64_t w : h.window) uniform = uniform && w == h.window.front();
    if (uniform) {
      block["window"] = h.window.front();
    } else {
      block["window"] = h.window;
    }
  }
  block["global_ratio"] = h.global_ratio;
  if (h.global_max) block["global_max"] = *h.global_max;
  block["sinks"] = h.sinks;
  block["fusion"] = h.fusion;
  if (!h.query_globals) block["query_globals"] = false;
  if (h.logn_base != 0) block["logn_base"] = h.logn_base;
  j["longctx"] = std::move(block);
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

Status WriteModelConfig(const std::string& path, const ModelConfig& config) {
  return internal::WriteFileAtomically(path, ToJson(config));
}

Status ApplyOverrides(const HybridOverrides& o, ModelConfig* config) {
  HybridConfig h = config->hybrid;
  if (o.window) {
    const auto layers = static_cast<size_t>(config->num_hidden_layers);
    if (o.window->size() == 1) {
      h.window.assign(layers, o.window->front());
    } else if (o.window->size() == layers) {
      h.window = *o.window;
    } else {
      return InvalidArgument("--window: {} values given but the model has {} layers (give one, "
                             "or one per layer)",
                             o.window->size(), layers);
    }
    for (int64_t w : h.window) {
      if (w < 1) return InvalidArgument("--window: {} must be positive", w);
    }
    h.window_source = WindowSource::kOverride;
  }
  if (o.global_ratio) {
    if (!(*o.global_ratio >= 0.0 && *o.global_ratio <= 1.0)) {
      return InvalidArgument("--global-ratio: {} is not in [0, 1]", *o.global_ratio);
    }
    h.global_ratio = *o.global_ratio;
  }
  if (o.global_max) {
    if (*o.global_max < 0) return InvalidArgument("--global-max: {} must be >= 0", *o.global_max);
    h.global_max = *o.global_max;
  }
  if (o.sinks) {
    if (*o.sinks < 0) return InvalidArgument("--sinks: {} must be >= 0", *o.sinks);
    h.sinks = *o.sinks;
  }
  if (o.fusion) {
    Status st = ParseFusionText(*o.fusion, &h.fusion_weighted, &h.fusion_alpha);
    if (!st.ok()) return InvalidArgument("--fusion: {}", st.message());
    h.fusion = *o.fusion;
  }
  if (o.query_globals) h.query_globals = *o.query_globals;
  if (o.logn_base) {
    if (*o.logn_base < 0 || *o.logn_base == 1) {
      return InvalidArgument("--logn-base: {} is not 0 (off) or >= 2", *o.logn_base);
    }
    h.logn_base = *o.logn_base;
  }
  config->hybrid = std::move(h);
  return Status::Ok();
}

}  // namespace longctx::model
