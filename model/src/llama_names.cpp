#include "longctx/model/llama_names.h"

#include <cstring>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace longctx::model {
namespace {

std::string_view LayerSuffix(LayerTensor t) {
  switch (t) {
    case LayerTensor::kQProj: return "self_attn.q_proj.weight";
    case LayerTensor::kKProj: return "self_attn.k_proj.weight";
    case LayerTensor::kVProj: return "self_attn.v_proj.weight";
    case LayerTensor::kOProj: return "self_attn.o_proj.weight";
    case LayerTensor::kGateProj: return "mlp.gate_proj.weight";
    case LayerTensor::kUpProj: return "mlp.up_proj.weight";
    case LayerTensor::kDownProj: return "mlp.down_proj.weight";
    case LayerTensor::kInputNorm: return "input_layernorm.weight";
    case LayerTensor::kPostAttentionNorm: return "post_attention_layernorm.weight";
    case LayerTensor::kQBias: return "self_attn.q_proj.bias";
    case LayerTensor::kKBias: return "self_attn.k_proj.bias";
    case LayerTensor::kVBias: return "self_attn.v_proj.bias";
    case LayerTensor::kQNorm: return "self_attn.q_norm.weight";
    case LayerTensor::kKNorm: return "self_attn.k_norm.weight";
  }
  return "?";
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

}  // namespace

std::string LayerTensorName(int64_t layer, LayerTensor t) {
  return fmt::format("model.layers.{}.{}", layer, LayerSuffix(t));
}

std::string_view OutputEmbeddingName(const ModelConfig& config) {
  return config.tie_word_embeddings ? kEmbedTokensName : kLmHeadName;
}

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& c) {
  const int64_t d = c.hidden_size;
  const int64_t q = c.q_dim();
  const int64_t kv = c.kv_dim();
  const int64_t inter = c.intermediate_size;
  std::vector<ExpectedTensor> out;
  out.push_back({std::string(kEmbedTokensName), {c.vocab_size, d}, "[vocab_size, hidden_size]"});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    auto add = [&](LayerTensor t, std::vector<int64_t> shape, std::string_view formula) {
      out.push_back({LayerTensorName(l, t), std::move(shape), std::string(formula)});
    };
    add(LayerTensor::kQProj, {q, d}, "[num_attention_heads*head_dim, hidden_size]");
    add(LayerTensor::kKProj, {kv, d}, "[num_key_value_heads*head_dim, hidden_size]");
    add(LayerTensor::kVProj, {kv, d}, "[num_key_value_heads*head_dim, hidden_size]");
    add(LayerTensor::kOProj, {d, q}, "[hidden_size, num_attention_heads*head_dim]");
    add(LayerTensor::kGateProj, {inter, d}, "[intermediate_size, hidden_size]");
    add(LayerTensor::kUpProj, {inter, d}, "[intermediate_size, hidden_size]");
    add(LayerTensor::kDownProj, {d, inter}, "[hidden_size, intermediate_size]");
    add(LayerTensor::kInputNorm, {d}, "[hidden_size]");
    add(LayerTensor::kPostAttentionNorm, {d}, "[hidden_size]");
    if (c.qkv_bias) {
      add(LayerTensor::kQBias, {q}, "[num_attention_heads*head_dim]");
      add(LayerTensor::kKBias, {kv}, "[num_key_value_heads*head_dim]");
      add(LayerTensor::kVBias, {kv}, "[num_key_value_heads*head_dim]");
    }
    if (c.qk_norm) {
      add(LayerTensor::kQNorm, {c.head_dim}, "[head_dim]");
      add(LayerTensor::kKNorm, {c.head_dim}, "[head_dim]");
    }
  }
  out.push_back({std::string(kFinalNormName), {d}, "[hidden_size]"});
  if (!c.tie_word_embeddings) {
    out.push_back({std::string(kLmHeadName), {c.vocab_size, d}, "[vocab_size, hidden_size]"});
  }
  return out;
}

Status CheckWeights(const ModelConfig& config, const ModelWeights& weights) {
  const std::vector<ExpectedTensor> expected = ExpectedTensors(config);
  std::set<std::string_view> known;
  for (const ExpectedTensor& e : expected) known.insert(e.name);
  for (const std::string& name : weights.Names()) {
    if (known.count(name) != 0) continue;
    if (name == kLengthHeadWeightName || name == kLengthHeadBiasName) continue;
    constexpr std::string_view kInvFreq = ".rotary_emb.inv_freq";
    if (name.size() > kInvFreq.size() &&
        std::string_view(name).substr(name.size() - kInvFreq.size()) == kInvFreq) {
      continue;
    }
    if (name == kLmHeadName && config.tie_word_embeddings) {
      ASSIGN_OR_RETURN(TensorRef head, weights.Get(name));
      ASSIGN_OR_RETURN(TensorRef embed, weights.Get(kEmbedTokensName));
      if (head.dtype == embed.dtype && head.shape == embed.shape &&
          head.bytes == embed.bytes && std::memcmp(head.data, embed.data, embed.bytes) == 0) {
        continue;
      }
      return InvalidArgument(
          "{}: tensor {} differs from {} but tie_word_embeddings is true (the architecture "
          "would not read it)",
          weights.source(), name, kEmbedTokensName);
    }
    return InvalidArgument("{}: tensor {} is not used by model_type {}{} (the architecture "
                           "would not read it)",
                           weights.source(), name, config.model_type,
                           config.tie_word_embeddings ? " with tied embeddings" : "");
  }
  for (const ExpectedTensor& e : expected) {
    if (!weights.Contains(e.name)) {
      return NotFound("{}: missing tensor {}", weights.source(), e.name);
    }
    // Get refuses dtypes other than F32/F16/BF16, naming the tensor.
    ASSIGN_OR_RETURN(TensorRef t, weights.Get(e.name));
    if (t.shape != e.shape) {
      return InvalidArgument("{}: tensor {} has shape {}, expected {} = {}", weights.source(),
                             e.name, ShapeText(t.shape), ShapeText(e.shape), e.shape_formula);
    }
  }
  return Status::Ok();
}

}  // namespace longctx::model
