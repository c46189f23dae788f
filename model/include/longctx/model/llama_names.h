// The Hugging Face Llama/Mistral/Qwen2/Qwen3 tensor names and shapes (as in transformers'
// *ForCausalLM state dicts), the list a config expects, and the check that a set of weights
// matches it exactly (no tensor missing, none the architecture would not read).
// Linear weights are [out_features, in_features] (y = x W^T), as PyTorch stores them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/core/status.h"
#include "longctx/model/config.h"
#include "longctx/model/safetensors.h"

namespace longctx::model {

inline constexpr std::string_view kEmbedTokensName = "model.embed_tokens.weight";  // [V, D]
inline constexpr std::string_view kFinalNormName = "model.norm.weight";            // [D]
inline constexpr std::string_view kLmHeadName = "lm_head.weight";                  // [V, D]
// The answer-length head of `longctx train --loss ...,length:A` (DESIGN.md §6), not an HF tensor.
inline constexpr std::string_view kLengthHeadWeightName = "length_head.weight";  // [1, D]
inline constexpr std::string_view kLengthHeadBiasName = "length_head.bias";      // [1]

// The tensors of one decoder layer; D = hidden_size, H/Hkv heads, hd = head_dim,
// I = intermediate_size.
enum class LayerTensor : uint8_t {
  kQProj,              // self_attn.q_proj.weight          [H*hd, D]
  kKProj,              // self_attn.k_proj.weight          [Hkv*hd, D]
  kVProj,              // self_attn.v_proj.weight          [Hkv*hd, D]
  kOProj,              // self_attn.o_proj.weight          [D, H*hd]
  kGateProj,           // mlp.gate_proj.weight             [I, D]
  kUpProj,             // mlp.up_proj.weight               [I, D]
  kDownProj,           // mlp.down_proj.weight             [D, I]
  kInputNorm,          // input_layernorm.weight           [D]
  kPostAttentionNorm,  // post_attention_layernorm.weight  [D]
  kQBias,              // self_attn.q_proj.bias            [H*hd]    (qwen2)
  kKBias,              // self_attn.k_proj.bias            [Hkv*hd]  (qwen2)
  kVBias,              // self_attn.v_proj.bias            [Hkv*hd]  (qwen2)
  kQNorm,              // self_attn.q_norm.weight          [hd]      (qwen3)
  kKNorm,              // self_attn.k_norm.weight          [hd]      (qwen3)
};
inline constexpr int kLayerTensorCount = 14;  // the most one layer has

// "model.layers.<layer>.self_attn.q_proj.weight", ...
std::string LayerTensorName(int64_t layer, LayerTensor t);

// The tensor the output projection reads: lm_head.weight, or the embedding when tied.
std::string_view OutputEmbeddingName(const ModelConfig& config);

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;  // elements
  std::string shape_formula;   // "[num_key_value_heads*head_dim, hidden_size]", for errors
};

// Every tensor a config needs, in a fixed order: the embedding, each layer's tensors in
// LayerTensor order (the biases only with qkv_bias, the q/k norms only with qk_norm), the final
// norm, then lm_head.weight unless tie_word_embeddings.
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config);

// Checks that `weights` has every expected tensor, with the expected shape and a dtype of
// F32/F16/BF16 (mixed dtypes are allowed), and no tensor the architecture would not read: a
// Qwen3 checkpoint labelled llama (its q_norm tensors), a bias without qkv_bias, anything
// unknown. Tolerated extras: `*.rotary_emb.inv_freq` (a buffer derived from the config, which
// older checkpoints carry and HF ignores), the length head (length_head.weight/.bias, written
// by `longctx train --loss ...,length:A`), and lm_head.weight of a tied model when it equals
// the embedding bit for bit. The first problem is reported in one line starting with
// weights.source(): a missing tensor is kNotFound, a wrong shape or dtype or an unused tensor
// kInvalidArgument ("model.safetensors: tensor model.layers.0.self_attn.k_proj.weight has
// shape [64, 64], expected [32, 64] = [num_key_value_heads*head_dim, hidden_size]").
Status CheckWeights(const ModelConfig& config, const ModelWeights& weights);

}  // namespace longctx::model
