// A model's hyper-parameters: a Hugging Face Llama/Mistral/Qwen2/Qwen3 `config.json` plus our
// "longctx" block of hybrid-attention settings (DESIGN.md §5, §7), parsed and validated into one
// struct that the forward pass, the planner and `longctx mkmodel` share. CLI flags override the
// block. docs/models.md lists what each family supports and what is refused.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::model {

// Where the per-layer windows came from, highest precedence first.
enum class WindowSource : uint8_t {
  kOverride,       // ApplyOverrides (a CLI flag)
  kLongctx,        // config.json "longctx": {"window": ...}
  kSlidingWindow,  // Mistral's "sliding_window" (W = sliding_window keys, itself included)
  kDefault,        // DESIGN.md §1 default, 64
};
std::string_view WindowSourceName(WindowSource s);  // "override", "longctx", ...

inline constexpr int64_t kDefaultWindow = 64;  // tokens (DESIGN.md §1)

// The "longctx" block of config.json, resolved. Every key of the block is optional.
struct HybridConfig {
  // Window W in tokens (>= 1), exactly one entry per layer after resolution. In config.json
  // "window" is one integer (every layer) or an array with one integer per layer.
  std::vector<int64_t> window;
  WindowSource window_source = WindowSource::kDefault;
  double global_ratio = 0.1;          // in [0, 1]
  std::optional<int64_t> global_max;  // tokens, >= 0; nullopt: 16*ceil(log2 n) (DESIGN.md §1)
  int64_t sinks = 4;                  // tokens, >= 0
  // "union" or "weighted:A", 0 <= A <= 1, as written; fusion_weighted/fusion_alpha are the
  // parsed form (alpha is meaningful only when weighted).
  std::string fusion = "union";
  bool fusion_weighted = false;
  double fusion_alpha = 0.0;
  // The globals outside the budget (DESIGN.md §1): a question's tokens and generated tokens that
  // end a sentence or paragraph. false: only the budget is global — with global_max 0 and sinks
  // 0, a window-only model (the baseline of `longctx bench longeval`).
  bool query_globals = true;
  // Log-length scaling of global queries (0 = off): a global query at position p (it reads the
  // p + 1 keys 0..p) has its logits multiplied by max(1, ln(p + 1) / ln(logn_base)), so its
  // attention stays as peaked among a million keys as among the logn_base it was tuned on
  // (the "log-n" / scalable-softmax remedy for attention dilution). Tokens, 0 or >= 2.
  int64_t logn_base = 0;

  bool operator==(const HybridConfig&) const = default;
};

// How RoPE's inverse frequencies are derived (HF `rope_scaling` / `rope_parameters` "rope_type";
// formulas in model/rope.h).
enum class RopeType : uint8_t { kDefault, kLinear, kDynamic, kLlama3, kYarn };
std::string_view RopeTypeName(RopeType t);  // "default", "linear", "dynamic", "llama3", "yarn"

// The scaling fields of `rope_scaling` or `rope_parameters`, resolved. Lengths are in tokens.
struct RopeScaling {
  RopeType type = RopeType::kDefault;
  double factor = 1.0;                     // linear, dynamic, llama3, yarn; > 0
  double low_freq_factor = 1.0;            // llama3
  double high_freq_factor = 4.0;           // llama3; > low_freq_factor
  // llama3: required; dynamic, yarn: default max_position_embeddings (one of them is required).
  std::optional<int64_t> original_max_position_embeddings;
  double beta_fast = 32.0, beta_slow = 1.0;  // yarn (HF: a falsy value means the default)
  std::optional<double> attention_factor;    // yarn: multiplies cos and sin
  std::optional<double> mscale, mscale_all_dim;  // yarn: attention factor from their ratio
  bool truncate = true;                      // yarn: floor/ceil the correction range
  // The config spelled it "rope_parameters" (rope_theta inside) rather than "rope_scaling";
  // ToJson writes the same spelling back.
  bool rope_parameters_spelling = false;

  bool operator==(const RopeScaling&) const = default;
};

// Llama/Mistral/Qwen2/Qwen3 hyper-parameters. Sizes are in elements; HF defaults where HF has one that we
// keep (noted); the keys without a default are required in config.json.
struct ModelConfig {
  // "llama", "mistral", "qwen2" or "qwen3" (HF default: absent = llama). The family fixes
  // the layer's extra tensors: qwen2 has q/k/v biases, qwen3 q/k RMSNorm per head (below).
  std::string model_type = "llama";
  int64_t hidden_size = 0;               // required
  int64_t num_attention_heads = 0;       // required (H)
  int64_t num_key_value_heads = 0;       // default H; H % Hkv == 0
  // Default hidden_size / H (qwen3: 128, HF's Qwen3Config default); even (RoPE rotates halves).
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;         // required (MLP width)
  int64_t num_hidden_layers = 0;         // required
  int64_t vocab_size = 0;                // required, >= 256 (byte-level tokenizer)
  double rms_norm_eps = 1e-6;            // default 1e-6 (HF's LlamaConfig default); > 0
  double rope_theta = 10000.0;           // default 10000; > 0 (also read from rope_parameters)
  RopeScaling rope;                      // type kDefault: plain RoPE
  bool qkv_bias = false;                 // q_proj/k_proj/v_proj have biases (qwen2)
  bool qk_norm = false;                  // RMSNorm over head_dim per head on q, k before RoPE (qwen3)
  bool tie_word_embeddings = false;      // default false: lm_head.weight is its own tensor
  // Mistral's window in tokens (>= 1); null = none. Absent: none for llama, 4096 for mistral
  // (HF's MistralConfig default).
  std::optional<int64_t> sliding_window;
  // Never enforced as a limit; the length that dynamic and yarn scaling default their
  // original_max_position_embeddings to.
  std::optional<int64_t> max_position_embeddings;
  // "torch_dtype" or the newer "dtype" (informational: "float32", "bfloat16"); may be empty.
  std::string torch_dtype;
  // "eos_token_id": a number or a list; generation stops at any of them (with the tokenizer's).
  std::vector<int64_t> eos_token_ids;
  HybridConfig hybrid;

  int64_t q_dim() const { return num_attention_heads * head_dim; }    // H*hd
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }   // Hkv*hd
  int64_t Window(int64_t layer) const { return hybrid.window[static_cast<size_t>(layer)]; }

  bool operator==(const ModelConfig&) const = default;
};

// Parses and validates config.json text. `source_name` prefixes every error ("model/config.json:
// num_key_value_heads = 3 does not divide num_attention_heads = 8"). All errors are
// kInvalidArgument, one line, naming the key; malformed JSON reports nlohmann's line/column.
// Unknown keys are ignored (HF configs carry many); keys whose value would change the
// computation and that longctx does not implement are refused, naming the key: hidden_act other
// than "silu", attention_bias / mlp_bias true, a rope type other than default/linear/dynamic/
// llama3/yarn or a rope key its type does not read, partial_rotary_factor != 1, per-layer-type
// rope_parameters, Qwen's use_sliding_window true, layer_types other than full_attention
// (kUnimplemented), model_type other than llama/mistral/qwen2/qwen3 (kInvalidArgument).
// Window resolution: longctx.window, else sliding_window, else kDefaultWindow.
Result<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source_name);

// Reads `dir`/config.json (kNotFound when absent) and parses it.
Result<ModelConfig> LoadModelConfig(const std::string& dir);

// Serializes as an HF-compatible config.json (architectures, model_type, hidden_act "silu", the
// Llama keys, and the "longctx" block), pretty-printed, ending with a newline.
// ParseModelConfig(ToJson(c)) == c for a valid c, except that windows from an override come
// back with window_source kLongctx: longctx.window is written only when the windows came from
// the block or an override (one integer when all layers agree, else the array).
std::string ToJson(const ModelConfig& config);

// Writes ToJson(config) to `path` atomically (temporary file, fsync, rename).
Status WriteModelConfig(const std::string& path, const ModelConfig& config);

// Re-checks every invariant ParseModelConfig enforces (for configs built in code, e.g. the
// built-in presets or after overrides). `source_name` prefixes errors.
Status ValidateModelConfig(const ModelConfig& config, std::string_view source_name);

// "union" or "weighted:A" with A a number in [0, 1] (the whole string must parse).
Status ParseFusionText(std::string_view text, bool* weighted, double* alpha);

// CLI overrides of the "longctx" block; a set field replaces the config's value.
struct HybridOverrides {
  // One value (every layer) or one per layer; each >= 1 tokens.
  std::optional<std::vector<int64_t>> window;
  std::optional<double> global_ratio;  // [0, 1]
  std::optional<int64_t> global_max;   // >= 0 tokens
  std::optional<int64_t> sinks;        // >= 0 tokens
  std::optional<std::string> fusion;   // "union" | "weighted:A"
  std::optional<bool> query_globals;
  std::optional<int64_t> logn_base;    // 0 (off) or >= 2 tokens
};

// Applies `overrides` to `config` and validates the result; on error `config` is unchanged
// and the message names the flag ("--window: 3 values given but the model has 4 layers").
Status ApplyOverrides(const HybridOverrides& overrides, ModelConfig* config);

}  // namespace longctx::model
