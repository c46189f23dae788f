// The transformer forward pass over one rank's shard of a document (DESIGN.md §2): embedding,
// then per layer RMSNorm -> Q/K/V projections (+ qwen2's biases, qwen3's per-head q/k RMSNorm)
// -> RoPE (with the config's scaling, model/rope.h) -> distributed hybrid attention ->
// output projection + residual -> RMSNorm -> SwiGLU MLP + residual, then the final norm.
// Token-local work (norms, GEMMs through OpenBLAS, RoPE, MLP) runs on the own rows only;
// attention is the only step that talks to other ranks. fp32 compute.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "longctx/attention/global_selection.h"
#include "longctx/attention/hybrid_attention.h"
#include "longctx/attention/shard_plan.h"
#include "longctx/cache/tiered_cache.h"
#include "longctx/comm/communicator.h"
#include "longctx/model/builtin.h"
#include "longctx/model/config.h"
#include "longctx/model/rope.h"
#include "longctx/worker/distributed_attention.h"

namespace longctx::worker {

// Row-major fp32 weights in the Hugging Face layout ([out, in] for projections).
struct LayerWeights {
  const float* wq = nullptr;         // [H*hd, hidden]
  const float* wk = nullptr;         // [Hkv*hd, hidden]
  const float* wv = nullptr;         // [Hkv*hd, hidden]
  const float* wo = nullptr;         // [hidden, H*hd]
  const float* w_gate = nullptr;     // [inter, hidden]
  const float* w_up = nullptr;       // [inter, hidden]
  const float* w_down = nullptr;     // [hidden, inter]
  const float* attn_norm = nullptr;  // [hidden] input_layernorm
  const float* mlp_norm = nullptr;   // [hidden] post_attention_layernorm
  // Family extras, null when the model has none (ExpectedTensors decides which exist).
  const float* bq = nullptr;         // [H*hd] q_proj.bias (qwen2)
  const float* bk = nullptr;         // [Hkv*hd] k_proj.bias (qwen2)
  const float* bv = nullptr;         // [Hkv*hd] v_proj.bias (qwen2)
  const float* q_norm = nullptr;     // [hd] q_norm.weight (qwen3), applied per head before RoPE
  const float* k_norm = nullptr;     // [hd] k_norm.weight (qwen3)
};
struct Weights {
  const float* embed = nullptr;       // [vocab, hidden]
  std::vector<LayerWeights> layers;
  const float* final_norm = nullptr;  // [hidden]
  const float* lm_head = nullptr;     // [vocab, hidden] (the embedding when tied)
};

struct ForwardStats {
  double attention_seconds = 0.0;  // wall time inside DistributedAttention
  double dense_seconds = 0.0;      // norms, GEMMs, RoPE, MLP
  DistributedStats last_layer;     // traffic of the last layer (every layer moves the same)
  uint64_t comm_bytes_sent = 0;    // all layers
  uint64_t comm_bytes_received = 0;
};

// The weights of a model converted once to fp32 (F16/BF16 files are widened on load), with
// the Weights view into them.
struct Fp32Weights {
  std::vector<std::vector<float>> storage;
  Weights view;
};
Result<Fp32Weights> ToFp32Weights(const model::Model& model);

// Called after each layer with (layer index, layers).
using LayerProgress = std::function<void(int64_t, int64_t)>;

// bounds: the shard bounds of every rank (ranks+1 entries, the same for every layer); the
// window of layer l comes from config. ids: this rank's token ids (rows = bounds[r+1]-bounds[r]),
// each < vocab_size. hidden_out: [rows, hidden] final-norm hidden states; the residual buffer
// is normalised in place and moved into it, so no second shard-sized buffer is ever held.
// kv_cache (optional, empty): receives every layer's K/V of the own rows after RoPE, for
// decoding after the prefill.
Status ForwardShard(comm::Communicator& comm, const model::ModelConfig& config,
                    const Weights& weights, const std::vector<int64_t>& bounds,
                    std::span<const int32_t> ids, std::span<const int64_t> globals,
                    const attention::ExecOptions& exec, std::vector<float>* hidden_out,
                    ForwardStats* stats,
                    const LayerProgress& progress = {},
                    cache::TieredKvCache* kv_cache = nullptr);

// The greedy next token after a final-norm hidden state [hidden]: argmax of lm_head * hidden,
// the lowest id on ties.
int32_t GreedyToken(const model::ModelConfig& config, const Weights& weights, const float* hidden);

// Threads OpenBLAS may use for the GEMMs of this process. Set it to the rank's thread budget:
// left alone, OpenBLAS starts one thread per core in every rank, and ranks that share a node
// oversubscribe its cores.
void SetGemmThreads(int threads);

// The global-token selection rules of `config` (its "longctx" block: ratio, cap, sinks).
attention::SelectionConfig SelectionFor(const model::ModelConfig& config);

// The attention spec of a layer of `config` (window, fusion, causal).
attention::AttentionSpec LayerSpec(const model::ModelConfig& config, int64_t layer);

// cos/sin of the RoPE angles pos * inv_freq[i], i < hd/2, for positions pos0 + [0, rows), times
// the frequencies' attention_scaling (yarn; else 1): computed once in double (exact enough at
// position 2^20+), shared by every layer.
struct RopeTable {
  int64_t half = 0;
  std::vector<float> cos, sin;  // [rows][half]
};
RopeTable MakeRopeTable(int64_t rows, int64_t pos0, const model::RopeFrequencies& freqs);
// Plain RoPE: inv_freq = theta^(-2i/hd) (the trainer's models, which refuse scaling).
RopeTable MakeRopeTable(int64_t rows, int64_t hd, int64_t pos0, double theta);

// logits[r, :] = lm_head * hidden[r, :] for `rows` final-norm hidden states [rows, hidden] into
// logits [rows, vocab_size] (fp32).
void LmHeadLogits(const model::ModelConfig& config, const Weights& weights, const float* hidden,
                  int64_t rows, float* logits);

// HF rotate-half RoPE in place on x [rows, heads, hd] with the table's rows.
void ApplyRope(float* x, int64_t rows, int64_t heads, int64_t hd, const RopeTable& table);
// The backward of ApplyRope (a rotation): rotates by the negative angles, in place.
void ApplyRopeBackward(float* dx, int64_t rows, int64_t heads, int64_t hd, const RopeTable& table);

// The factor a global query at position `pos` multiplies its logits by: 1 when
// hybrid.logn_base is 0, else max(1, ln(pos + 1) / ln(logn_base)) (model/config.h).
float LognScale(const model::HybridConfig& hybrid, int64_t pos);
// Multiplies each row of q [rows, width] (positions pos0 + [0, rows)) that is a global query by
// its LognScale, in place; a no-op when logn_base is 0. The backward is the same call on dq.
void ScaleGlobalQueries(const model::HybridConfig& hybrid, std::span<const int64_t> globals,
                        int64_t pos0, int64_t rows, int64_t width, float* q);

}  // namespace longctx::worker
