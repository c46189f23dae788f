// Built-in models: deterministic, seeded Llama-layout models that need no download, for tests,
// the quickstart and benchmarks (`--model builtin:tiny`), and for `longctx mkmodel`, which
// writes the same weights as a real HF-layout directory.
//
// Which is which:
//   - TinyConfig()/SmallConfig(): the presets' hyper-parameters (no weights);
//   - GenerateWeights(config, seed, dtype): the seeded weights of any config, in memory;
//   - BuiltinWeights("builtin:tiny", seed, dtype): config + weights in memory, no files;
//   - WriteModelDir(dir, config, seed, dtype): config.json + model.safetensors on disk.
// For the same config, seed and dtype, all of them yield bit-identical tensors.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/core/dtype.h"
#include "longctx/core/status.h"
#include "longctx/model/config.h"
#include "longctx/model/safetensors.h"

namespace longctx::model {

inline constexpr uint64_t kDefaultBuiltinSeed = 0;

// tiny: hidden 64, 4 heads / 2 kv heads, head_dim 16, MLP 128, 2 layers, vocab 256, window 64
// (about 0.1 M parameters: a 1M-token document on 4 ranks of a 2-core machine in minutes).
ModelConfig TinyConfig();
// small: hidden 256, 8 heads / 4 kv heads, head_dim 32, MLP 512, 4 layers, vocab 256, per-layer
// windows [64, 256, 64, 256] (local and wider layers interleaved, as in Gemma).
ModelConfig SmallConfig();
// hybrid-tiny: the initial weights of the shipped trained model (models/hybrid-tiny/): hidden
// 128, 4 heads / 2 kv heads, head_dim 32, MLP 256, 4 layers, vocab 256, window 64, rope_theta
// 3e8 (>= 0.0424 * L^1.628 for L = 1M; docs/training.md "Length generalisation"), global_ratio
// 0.002 (a budget that paragraph boundaries fill at every length, so that the sentence holding
// a needle is as rarely global at 2K tokens as at 1M; the question's tokens are global queries).
ModelConfig HybridTinyConfig();
// The model families at tiny sizes (hidden 64, 4 heads, MLP 128, 2 layers, vocab 288, window
// 64), for tests of each family against an independent reference; each comes with
// PresetTokenizerJson() (BOS 272, EOS 273 = eos_token_id):
//   llama3   2 kv heads, head_dim 16, rope_theta 5e5, rope_scaling llama3 (factor 8, low 1,
//            high 4, original 256: the three wavelength bands all occur at head_dim 16)
//   qwen2    2 kv heads, head_dim 16, q/k/v biases, tied embeddings (as Qwen2.5-0.5B), theta 1e6
//   qwen3    2 kv heads, explicit head_dim 32 (not hidden/heads = 16), q/k RMSNorm, theta 1e6
//   mistral  1 kv head, head_dim 16, sliding_window 48 (the window of every layer)
// "tiny", "small", "hybrid-tiny" or a family (kInvalidArgument otherwise, listing the presets).
Result<ModelConfig> PresetConfig(std::string_view preset);
// Whether `preset` is one of the families above (mkmodel writes a tokenizer.json with them).
bool IsFamilyPreset(std::string_view preset);

// A small byte-level BPE tokenizer.json for the family presets: the 256 byte tokens (id = byte
// value, GPT-2's byte-to-character map), 16 merges of frequent English pairs (ids 256-271),
// <|begin_of_text|> 272 and <|end_of_text|> 273 (special); ByteLevel pre-tokenizer and decoder,
// a TemplateProcessing post-processor that adds BOS. 274 ids.
std::string PresetTokenizerJson();
inline constexpr int32_t kPresetBosId = 272;
inline constexpr int32_t kPresetEosId = 273;

// Writes `json` to dir/tokenizer.json atomically.
Status WriteTokenizerJson(const std::string& dir, std::string_view json);

// The weights of `config` for `seed`, as ExpectedTensors(config) lists them, in `dtype`
// (kF32, kF16 or kBF16; kInvalidArgument otherwise). Each tensor is generated from its own
// splitmix64 stream seeded by (seed, tensor name), so a tensor's values do not depend on the
// other tensors. Values: approximately N(0, 1) (sum of four uniforms, rescaled) times
// 1/sqrt(in_features) for linear weights (so activations stay O(1)), times 1 for the
// embedding, exactly 1 for the layer and final norm weights, 1 + 0.25 N(0, 1) for qwen3's q/k
// norms and 0.5 N(0, 1) for qwen2's biases (so that a reference notices a norm or bias left
// out); rounded to `dtype` from float32 (nearest even).
Result<std::vector<OwnedTensor>> GenerateWeights(const ModelConfig& config, uint64_t seed,
                                                 DType dtype);

// A config with its weights.
struct Model {
  ModelConfig config;
  ModelWeights weights;
};

// `spec` is "builtin:tiny" or "builtin:small": the preset config with GenerateWeights(seed,
// dtype), in memory (weights.source() is the spec).
Result<Model> BuiltinWeights(std::string_view spec, uint64_t seed = kDefaultBuiltinSeed,
                             DType dtype = DType::kF32);

// Writes `config` (torch_dtype set from `dtype`) to dir/config.json and GenerateWeights(config,
// seed, dtype) to dir/model.safetensors (metadata {"format": "pt"}, so transformers loads it),
// each atomically; creates `dir` if needed. Refuses a directory that holds a sharded model
// (model.safetensors.index.json), which would shadow the new file.
Status WriteModelDir(const std::string& dir, const ModelConfig& config, uint64_t seed,
                     DType dtype);

// A model by what a user types for --model: "builtin:<preset>" (seed/dtype used) or a directory
// (LoadModelConfig + ModelWeights::OpenDir + CheckWeights; seed/dtype unused).
Result<Model> OpenModel(std::string_view spec, uint64_t seed = kDefaultBuiltinSeed,
                        DType builtin_dtype = DType::kF32);

}  // namespace longctx::model
