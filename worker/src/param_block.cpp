#include "longctx/worker/param_block.h"

#include <cstring>

#include <fmt/format.h>

#include "longctx/model/llama_names.h"

namespace longctx::worker {

Result<ParamBlock> ParamBlock::FromModel(const model::Model& m, bool with_length_head) {
  const model::ModelConfig& c = m.config;
  // The hand-written backward (train_step.cpp) covers the plain Llama layer only: a feature
  // without a backward is refused rather than trained with a wrong gradient.
  if (c.qkv_bias || c.qk_norm || c.rope.type != model::RopeType::kDefault) {
    const std::string feature =
        c.qkv_bias  ? "the q/k/v biases of model_type qwen2"
        : c.qk_norm ? "the q/k RMSNorm of model_type qwen3"
                    : fmt::format("rope_type {}", model::RopeTypeName(c.rope.type));
    return Unimplemented("{}: training does not support {} (the backward implements plain Llama "
                         "and Mistral layers with unscaled RoPE)",
                         m.weights.source(), feature);
  }
  RETURN_IF_ERROR(model::CheckWeights(c, m.weights));
  ParamBlock b;
  b.config_ = c;
  size_t offset = 0;
  for (const model::ExpectedTensor& t : model::ExpectedTensors(c)) {
    ParamTensor p;
    p.name = t.name;
    p.shape = t.shape;
    p.numel = 1;
    for (int64_t x : t.shape) p.numel *= size_t(x);
    p.offset = offset;
    p.decay = t.shape.size() == 2 && t.name != model::kEmbedTokensName;
    offset += p.numel;
    b.tensors_.push_back(std::move(p));
  }
  if (with_length_head) {
    b.tensors_.push_back({std::string(kLengthHeadWeightName), {1, c.hidden_size}, offset,
                          size_t(c.hidden_size), false});
    offset += size_t(c.hidden_size);
    b.tensors_.push_back({std::string(kLengthHeadBiasName), {1}, offset, 1, false});
    offset += 1;
  }
  b.data_.assign(offset, 0.0f);
  for (const ParamTensor& p : b.tensors_) {
    if (!m.weights.Contains(p.name)) continue;  // only the length head may be absent
    ASSIGN_OR_RETURN(model::TensorRef t, m.weights.Get(p.name));
    if (size_t(t.numel()) != p.numel) {
      return InvalidArgument("{}: tensor {} has {} elements, expected {}", m.weights.source(),
                             p.name, t.numel(), p.numel);
    }
    RETURN_IF_ERROR(model::CopyToFloat32(t, std::span<float>(b.data_.data() + p.offset, p.numel)));
  }
  if (with_length_head) b.length_ = b.data_.data() + b.Find(kLengthHeadWeightName)->offset;
  return b;
}

const ParamTensor* ParamBlock::Find(std::string_view name) const {
  for (const ParamTensor& p : tensors_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

namespace {

// Resolves the per-layer pointers of `base` (parameters or gradients) by tensor name.
template <typename Ptr, typename LayerT, typename ViewT>
void FillView(const ParamBlock& b, Ptr base, ViewT* v) {
  const model::ModelConfig& c = b.config();
  auto at = [&](std::string_view name) -> Ptr {
    const ParamTensor* p = b.Find(name);
    return p ? base + p->offset : nullptr;
  };
  using LT = model::LayerTensor;
  v->embed = at(model::kEmbedTokensName);
  v->layers.clear();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerT L;
    L.wq = at(model::LayerTensorName(l, LT::kQProj));
    L.wk = at(model::LayerTensorName(l, LT::kKProj));
    L.wv = at(model::LayerTensorName(l, LT::kVProj));
    L.wo = at(model::LayerTensorName(l, LT::kOProj));
    L.w_gate = at(model::LayerTensorName(l, LT::kGateProj));
    L.w_up = at(model::LayerTensorName(l, LT::kUpProj));
    L.w_down = at(model::LayerTensorName(l, LT::kDownProj));
    L.attn_norm = at(model::LayerTensorName(l, LT::kInputNorm));
    L.mlp_norm = at(model::LayerTensorName(l, LT::kPostAttentionNorm));
    v->layers.push_back(L);
  }
  v->final_norm = at(model::kFinalNormName);
  v->lm_head = at(model::OutputEmbeddingName(c));
}

}  // namespace

Weights ParamBlock::WeightsView() const {
  Weights w;
  FillView<const float*, LayerWeights>(*this, data_.data(), &w);
  return w;
}

GradView ParamBlock::Grads(float* grads) const {
  GradView g;
  FillView<float*, LayerGradView>(*this, grads, &g);
  if (const ParamTensor* p = Find(kLengthHeadWeightName)) g.length_w = grads + p->offset;
  if (const ParamTensor* p = Find(kLengthHeadBiasName)) g.length_b = grads + p->offset;
  return g;
}

std::vector<model::TensorRef> ParamBlock::Refs(const float* values) const {
  std::vector<model::TensorRef> refs;
  for (const ParamTensor& p : tensors_) {
    model::TensorRef t;
    t.name = p.name;
    t.dtype = DType::kF32;
    t.shape = p.shape;
    t.data = reinterpret_cast<const std::byte*>(values + p.offset);
    t.bytes = p.numel * sizeof(float);
    refs.push_back(std::move(t));
  }
  return refs;
}

}  // namespace longctx::worker
