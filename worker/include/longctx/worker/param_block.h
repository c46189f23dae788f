// ParamBlock: a model's parameters as one contiguous float32 array (llm.c style), so AdamW,
// gradient clipping and the all-reduce of the weight gradients are one loop / one call over one
// array. Tensors keep their Hugging Face names and shapes (ExpectedTensors order), plus the
// optional length head of the `length` auxiliary loss (DESIGN.md §6). Gradients live in a second
// array of the same layout; GradView/WeightsView give per-layer pointers into either.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "longctx/core/status.h"
#include "longctx/model/builtin.h"
#include "longctx/model/config.h"
#include "longctx/model/llama_names.h"
#include "longctx/model/safetensors.h"
#include "longctx/worker/forward.h"

namespace longctx::worker {

using model::kLengthHeadBiasName;    // [1]
using model::kLengthHeadWeightName;  // [1, hidden]

struct ParamTensor {
  std::string name;
  std::vector<int64_t> shape;  // elements per dimension
  size_t offset = 0;           // floats from the start of the block
  size_t numel = 0;
  bool decay = false;          // AdamW weight decay applies (2-D projections; not norms,
                               // biases or the embedding)
};

// Per-layer pointers into a gradient array (same layout as the parameters). For tied embeddings
// lm_head == embed: both uses accumulate into one tensor.
struct LayerGradView {
  float *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
  float *w_gate = nullptr, *w_up = nullptr, *w_down = nullptr;
  float *attn_norm = nullptr, *mlp_norm = nullptr;
};
struct GradView {
  float* embed = nullptr;
  std::vector<LayerGradView> layers;
  float* final_norm = nullptr;
  float* lm_head = nullptr;
  float* length_w = nullptr;  // null when the block has no length head
  float* length_b = nullptr;
};

class ParamBlock {
 public:
  // The model's tensors (widened to float32). with_length_head: take length_head.* from the
  // weights when present, else add them initialised to zero.
  static Result<ParamBlock> FromModel(const model::Model& model, bool with_length_head);

  const model::ModelConfig& config() const { return config_; }
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  size_t size() const { return data_.size(); }  // floats
  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }
  bool has_length_head() const { return length_ != nullptr; }

  // The forward's view of the parameters (valid while the block lives and is not moved).
  Weights WeightsView() const;
  const float* length_head() const { return length_; }  // [hidden] weight then [1] bias; or null
  // Pointers into `grads` (size() floats) with the parameters' layout.
  GradView Grads(float* grads) const;
  // TensorRefs (F32) of `values` (size() floats, this layout), for WriteSafetensors.
  std::vector<model::TensorRef> Refs(const float* values) const;
  const ParamTensor* Find(std::string_view name) const;

  ParamBlock(ParamBlock&&) noexcept = default;
  ParamBlock& operator=(ParamBlock&&) noexcept = default;

 private:
  ParamBlock() = default;
  model::ModelConfig config_;
  std::vector<ParamTensor> tensors_;
  std::vector<float> data_;
  const float* length_ = nullptr;
};

}  // namespace longctx::worker
