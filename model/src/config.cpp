#include "longctx/model/config.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <system_error>
#include <tuple>
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

constexpr std::string_view kModelTypes = "llama, mistral, qwen2, qwen3";
constexpr int64_t kQwen3DefaultHeadDim = 128;  // HF's Qwen3Config default

bool IsKnownModelType(std::string_view t) {
  return t == "llama" || t == "mistral" || t == "qwen2" || t == "qwen3";
}

// `rope_scaling` (HF's older spelling: the scaling fields only) or `rope_parameters` (newer:
// rope_theta and rope_type with the scaling fields) into c->rope (and c->rope_theta). Every key
// the type does not read is refused, so that no field is silently ignored.
Status ParseRope(const json& root, std::string_view source, ModelConfig* c) {
  const KeyReader top(root, source, "");
  const json* rs = top.Find("rope_scaling");
  const json* rp = top.Find("rope_parameters");
  if (rs == nullptr && rp == nullptr) return Status::Ok();
  if (rs != nullptr && rp != nullptr) {
    return InvalidArgument("{}: both rope_scaling and rope_parameters are given (give one)",
                           source);
  }
  const bool params = rp != nullptr;
  const std::string name = params ? "rope_parameters" : "rope_scaling";
  const json& obj = params ? *rp : *rs;
  if (!obj.is_object()) {
    return InvalidArgument("{}: {} = {} is not an object", source, name, Repr(obj));
  }
  if (params && !obj.empty()) {
    bool nested = true;
    for (const auto& [k, v] : obj.items()) nested = nested && v.is_object();
    if (nested) {
      return Unimplemented("{}: rope_parameters per layer type ({}) is not supported", source,
                           obj.begin().key());
    }
  }
  const KeyReader r(obj, source, name + ".");
  RopeScaling& rope = c->rope;
  rope.rope_parameters_spelling = params;
  ASSIGN_OR_RETURN(std::optional<std::string> type, r.OptString("rope_type"));
  ASSIGN_OR_RETURN(std::optional<std::string> legacy_type, r.OptString("type"));
  if (type && legacy_type && *type != *legacy_type) {
    return InvalidArgument("{}: {}.rope_type = \"{}\" and {}.type = \"{}\" disagree", source,
                           name, *type, name, *legacy_type);
  }
  if (!type) type = legacy_type;
  if (!type) {
    if (!params) return r.Error("rope_type", "is missing (required in rope_scaling)");
    type = "default";
  }
  if (*type == "default") rope.type = RopeType::kDefault;
  else if (*type == "linear") rope.type = RopeType::kLinear;
  else if (*type == "dynamic") rope.type = RopeType::kDynamic;
  else if (*type == "llama3") rope.type = RopeType::kLlama3;
  else if (*type == "yarn") rope.type = RopeType::kYarn;
  else {
    return Unimplemented("{}: {}.rope_type = \"{}\" is not supported (default, linear, dynamic, "
                         "llama3, yarn)",
                         source, name, *type);
  }
  // The keys each type reads (besides rope_type/type, rope_theta in rope_parameters, and
  // original_max_position_embeddings, which HF configs carry whatever the type).
  std::vector<std::string_view> reads;
  switch (rope.type) {
    case RopeType::kDefault: break;
    case RopeType::kLinear:
    case RopeType::kDynamic: reads = {"factor"}; break;
    case RopeType::kLlama3: reads = {"factor", "low_freq_factor", "high_freq_factor"}; break;
    case RopeType::kYarn:
      reads = {"factor", "beta_fast", "beta_slow", "attention_factor", "mscale",
               "mscale_all_dim", "truncate"};
      break;
  }
  for (const auto& [key, value] : obj.items()) {
    if (key == "rope_type" || key == "type" || key == "original_max_position_embeddings") continue;
    if (params && key == "rope_theta") continue;
    if (key == "partial_rotary_factor" && value.is_number() && value.get<double>() == 1.0) continue;
    bool read = false;
    for (std::string_view k : reads) read = read || key == k;
    if (!read) {
      return Unimplemented("{}: {}.{} is not supported with rope_type \"{}\"", source, name, key,
                           *type);
    }
  }
  if (params) {
    const double outer = c->rope_theta;
    ASSIGN_OR_RETURN(c->rope_theta, r.Number("rope_theta", c->rope_theta));
    if (!(c->rope_theta > 0.0)) {
      return r.Error("rope_theta", fmt::format("= {} must be positive", c->rope_theta));
    }
    if (top.Find("rope_theta") != nullptr && outer != c->rope_theta) {
      return InvalidArgument("{}: rope_theta = {} and rope_parameters.rope_theta = {} disagree",
                             source, outer, c->rope_theta);
    }
  }
  if (rope.type == RopeType::kDefault) return Status::Ok();

  const int64_t kIntMax = std::numeric_limits<int64_t>::max();
  ASSIGN_OR_RETURN(rope.original_max_position_embeddings,
                   r.OptInt("original_max_position_embeddings", 1, kIntMax));
  auto positive = [&](std::string_view key, double* v) -> Status {
    ASSIGN_OR_RETURN(*v, r.Number(key, *v));
    if (!(*v > 0.0)) return r.Error(key, fmt::format("= {} must be positive", *v));
    return Status::Ok();
  };
  const bool has_factor = r.Find("factor") != nullptr;
  if (!has_factor && rope.type != RopeType::kYarn) return r.Error("factor", "is missing (required)");
  if (has_factor) RETURN_IF_ERROR(positive("factor", &rope.factor));
  if (rope.type == RopeType::kLinear) return Status::Ok();
  if (rope.type == RopeType::kLlama3) {
    for (std::string_view key : {"low_freq_factor", "high_freq_factor",
                                 "original_max_position_embeddings"}) {
      if (r.Find(key) == nullptr) return r.Error(key, "is missing (required by llama3)");
    }
    RETURN_IF_ERROR(positive("low_freq_factor", &rope.low_freq_factor));
    RETURN_IF_ERROR(positive("high_freq_factor", &rope.high_freq_factor));
    if (!(rope.high_freq_factor > rope.low_freq_factor)) {
      return r.Error("high_freq_factor",
                     fmt::format("= {} must exceed low_freq_factor = {}", rope.high_freq_factor,
                                 rope.low_freq_factor));
    }
    return Status::Ok();
  }
  // dynamic and yarn: the original length defaults to max_position_embeddings.
  if (!rope.original_max_position_embeddings) {
    if (!c->max_position_embeddings) {
      return r.Error("original_max_position_embeddings",
                     fmt::format("is missing and so is max_position_embeddings (rope_type {} "
                                 "needs one)",
                                 *type));
    }
    rope.original_max_position_embeddings = c->max_position_embeddings;
  }
  if (rope.type == RopeType::kDynamic) return Status::Ok();
  // yarn. No factor: HF takes max_position_embeddings / original_max_position_embeddings.
  if (!has_factor) {
    if (!c->max_position_embeddings) {
      return r.Error("factor", "is missing and so is max_position_embeddings (yarn needs one)");
    }
    rope.factor = double(*c->max_position_embeddings) /
                  double(*rope.original_max_position_embeddings);
  }
  // HF: `beta_fast or 32`, so 0 or null means the default.
  for (auto [key, v, fallback] : {std::tuple{"beta_fast", &rope.beta_fast, 32.0},
                                  std::tuple{"beta_slow", &rope.beta_slow, 1.0}}) {
    ASSIGN_OR_RETURN(*v, r.Number(key, fallback));
    if (*v == 0.0) *v = fallback;
    if (!(*v > 0.0)) return r.Error(key, fmt::format("= {} must be positive", *v));
  }
  if (r.Find("attention_factor") != nullptr) {
    double af = 0.0;
    RETURN_IF_ERROR(positive("attention_factor", &af));
    rope.attention_factor = af;
  }
  for (auto [key, v] : {std::pair{"mscale", &rope.mscale},
                        std::pair{"mscale_all_dim", &rope.mscale_all_dim}}) {
    if (r.Find(key) != nullptr) {
      ASSIGN_OR_RETURN(double x, r.Number(key, 0.0));
      *v = x;
    }
  }
  ASSIGN_OR_RETURN(rope.truncate, r.Bool("truncate", true));
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
  if (c.rope.type == RopeType::kDynamic && c.head_dim <= 2) {
    return InvalidArgument("{}: rope_type dynamic needs head_dim > 2, got {}", source, c.head_dim);
  }
  if (static_cast<int64_t>(c.hybrid.window.size()) != c.num_hidden_layers) {
    return InvalidArgument("{}: {} windows for num_hidden_layers = {}", source,
                           c.hybrid.window.size(), c.num_hidden_layers);
  }
  return Status::Ok();
}

}  // namespace

std::string_view RopeTypeName(RopeType t) {
  switch (t) {
    case RopeType::kDefault: return "default";
    case RopeType::kLinear: return "linear";
    case RopeType::kDynamic: return "dynamic";
    case RopeType::kLlama3: return "llama3";
    case RopeType::kYarn: return "yarn";
  }
  return "unknown";
}

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
    if (!IsKnownModelType(*model_type)) {
      return r.Error("model_type", fmt::format("= \"{}\" is not supported ({})", *model_type,
                                               kModelTypes));
    }
    c.model_type = *model_type;
  }
  c.qkv_bias = c.model_type == "qwen2";  // Qwen2Attention: bias on q/k/v, none on o
  c.qk_norm = c.model_type == "qwen3";   // Qwen3Attention: q_norm/k_norm over head_dim
  ASSIGN_OR_RETURN(std::optional<std::string> act, r.OptString("hidden_act"));
  if (act && *act != "silu") {
    return r.Error("hidden_act", fmt::format("= \"{}\" is not supported (silu)", *act));
  }
  for (std::string_view key : {"attention_bias", "mlp_bias"}) {
    ASSIGN_OR_RETURN(bool bias, r.Bool(key, false));
    if (bias) {
      return Unimplemented("{}: {} = true is not supported (biases only on qwen2's q/k/v)",
                           source, key);
    }
  }
  // Sliding-window layers of the Qwen configs (HF uses them only when use_sliding_window is
  // true; the sliding_window value is then ignored) and per-layer attention kinds.
  ASSIGN_OR_RETURN(bool use_sw, r.Bool("use_sliding_window", false));
  if (use_sw) {
    return Unimplemented(
        "{}: use_sliding_window = true is not supported (Qwen's per-layer sliding windows; "
        "set longctx.window instead)",
        source);
  }
  if (const json* lt = r.Find("layer_types"); lt != nullptr) {
    if (!lt->is_array()) return r.Error("layer_types", fmt::format("= {} is not a list", Repr(*lt)));
    for (size_t i = 0; i < lt->size(); ++i) {
      if (!(*lt)[i].is_string() || (*lt)[i].get<std::string>() != "full_attention") {
        return Unimplemented("{}: layer_types[{}] = {} is not supported (full_attention only)",
                             source, i, Repr((*lt)[i]));
      }
    }
  }
  if (const json* prf = r.Find("partial_rotary_factor"); prf != nullptr) {
    if (!prf->is_number() || prf->get<double>() != 1.0) {
      return Unimplemented("{}: partial_rotary_factor = {} is not supported (1 only)", source,
                           Repr(*prf));
    }
  }

  ASSIGN_OR_RETURN(c.hidden_size, r.RequiredInt("hidden_size", 1));
  ASSIGN_OR_RETURN(c.num_attention_heads, r.RequiredInt("num_attention_heads", 1));
  ASSIGN_OR_RETURN(std::optional<int64_t> kv, r.OptInt("num_key_value_heads", 1));
  c.num_key_value_heads = kv.value_or(c.num_attention_heads);
  ASSIGN_OR_RETURN(std::optional<int64_t> hd, r.OptInt("head_dim", 1));
  if (hd) {
    c.head_dim = *hd;
  } else if (c.model_type == "qwen3") {
    c.head_dim = kQwen3DefaultHeadDim;
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
  ASSIGN_OR_RETURN(c.max_position_embeddings,
                   r.OptInt("max_position_embeddings", 1, std::numeric_limits<int64_t>::max()));
  RETURN_IF_ERROR(ParseRope(root, source, &c));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", false));
  const int64_t kIntMax = std::numeric_limits<int64_t>::max();
  // Mistral's sliding_window is the window of every layer. Qwen configs carry one too, but HF
  // applies it only with use_sliding_window (refused above): it is ignored here as there.
  const bool qwen = c.model_type == "qwen2" || c.model_type == "qwen3";
  if (!qwen && root.contains("sliding_window")) {
    ASSIGN_OR_RETURN(c.sliding_window, r.OptInt("sliding_window", 1, kIntMax));
  } else if (c.model_type == "mistral") {
    c.sliding_window = kMistralDefaultSlidingWindow;
  }
  // Newer configs write "dtype"; older ones "torch_dtype" (informational either way).
  ASSIGN_OR_RETURN(std::optional<std::string> torch_dtype, r.OptString("torch_dtype"));
  ASSIGN_OR_RETURN(std::optional<std::string> dtype, r.OptString("dtype"));
  c.torch_dtype = dtype ? *dtype : torch_dtype.value_or("");
  if (const json* eos = r.Find("eos_token_id"); eos != nullptr) {
    if (eos->is_array()) {
      for (size_t i = 0; i < eos->size(); ++i) {
        ASSIGN_OR_RETURN(int64_t id, r.IntValue(fmt::format("eos_token_id[{}]", i), (*eos)[i], 0,
                                                kIntMax));
        c.eos_token_ids.push_back(id);
      }
    } else {
      ASSIGN_OR_RETURN(int64_t id, r.IntValue("eos_token_id", *eos, 0, kIntMax));
      c.eos_token_ids.push_back(id);
    }
  }

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
  if (!IsKnownModelType(c.model_type)) {
    return InvalidArgument("{}: model_type = \"{}\" is not supported ({})", source,
                           c.model_type, kModelTypes);
  }
  if (c.qkv_bias != (c.model_type == "qwen2") || c.qk_norm != (c.model_type == "qwen3")) {
    return InvalidArgument("{}: model_type = \"{}\" disagrees with qkv_bias/qk_norm", source,
                           c.model_type);
  }
  const RopeScaling& rope = c.rope;
  if (rope.type != RopeType::kDefault) {
    if (!(rope.factor > 0.0) || !std::isfinite(rope.factor)) {
      return InvalidArgument("{}: rope factor = {} must be positive", source, rope.factor);
    }
    if (rope.type != RopeType::kLinear && !rope.original_max_position_embeddings) {
      return InvalidArgument("{}: rope_type {} needs original_max_position_embeddings", source,
                             RopeTypeName(rope.type));
    }
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
  const char* arch = c.model_type == "mistral" ? "MistralForCausalLM"
                     : c.model_type == "qwen2" ? "Qwen2ForCausalLM"
                     : c.model_type == "qwen3" ? "Qwen3ForCausalLM"
                                               : "LlamaForCausalLM";
  j["architectures"] = {arch};
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
  if (!c.rope.rope_parameters_spelling) j["rope_theta"] = c.rope_theta;
  if (c.rope.type != RopeType::kDefault || c.rope.rope_parameters_spelling) {
    const RopeScaling& rope = c.rope;
    nlohmann::ordered_json rj;
    rj["rope_type"] = RopeTypeName(rope.type);
    if (rope.rope_parameters_spelling) rj["rope_theta"] = c.rope_theta;
    if (rope.type != RopeType::kDefault) rj["factor"] = rope.factor;
    if (rope.type == RopeType::kLlama3) {
      rj["low_freq_factor"] = rope.low_freq_factor;
      rj["high_freq_factor"] = rope.high_freq_factor;
    }
    if (rope.original_max_position_embeddings) {
      rj["original_max_position_embeddings"] = *rope.original_max_position_embeddings;
    }
    if (rope.type == RopeType::kYarn) {
      rj["beta_fast"] = rope.beta_fast;
      rj["beta_slow"] = rope.beta_slow;
      if (rope.attention_factor) rj["attention_factor"] = *rope.attention_factor;
      if (rope.mscale) rj["mscale"] = *rope.mscale;
      if (rope.mscale_all_dim) rj["mscale_all_dim"] = *rope.mscale_all_dim;
      if (!rope.truncate) rj["truncate"] = false;
    }
    j[rope.rope_parameters_spelling ? "rope_parameters" : "rope_scaling"] = std::move(rj);
  }
  if (c.max_position_embeddings) j["max_position_embeddings"] = *c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  // A mistral config without the key means 4096 to HF, so "none" must be written as null.
  if (c.sliding_window) {
    j["sliding_window"] = *c.sliding_window;
  } else if (c.model_type == "mistral") {
    j["sliding_window"] = nullptr;
  }
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
  if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids.front();
  } else if (!c.eos_token_ids.empty()) {
    j["eos_token_id"] = c.eos_token_ids;
  }

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
