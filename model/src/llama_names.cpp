#include "longctx/model/llama_names.h"

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
  }
  out.push_back({std::string(kFinalNormName), {d}, "[hidden_size]"});
  if (!c.tie_word_embeddings) {
    out.push_back({std::string(kLmHeadName), {c.vocab_size, d}, "[vocab_size, hidden_size]"});
  }
  return out;
}

Status CheckWeights(const ModelConfig& config, const ModelWeights& weights) {
  for (const ExpectedTensor& e : ExpectedTensors(config)) {
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
