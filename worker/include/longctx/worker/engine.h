// Engine: the main job's engine as a reusable object — the model loaded once, then documents
// prefilled and kept (their KV caches under a document id), and questions answered against them
// without a second prefill. `longctx run` and `longctx worker` (the coordinator's worker group)
// both drive it, so a job through the coordinator computes exactly what `longctx run` computes.
//
// Collective: every rank of `comm` calls every method with the same arguments in the same order
// (rank 0 of a worker group broadcasts what it received first). Results are the same on every
// rank unless a comment says otherwise.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/attention/global_selection.h"
#include "longctx/attention/shard_plan.h"
#include "longctx/cache/tiered_cache.h"
#include "longctx/comm/communicator.h"
#include "longctx/core/thread_pool.h"
#include "longctx/model/builtin.h"
#include "longctx/worker/forward.h"

namespace longctx::worker {

struct EngineOptions {
  std::string model = "builtin:tiny";  // builtin:tiny | builtin:small | a HF model directory
  uint64_t seed = model::kDefaultBuiltinSeed;
  model::HybridOverrides overrides;
  int threads = 0;                     // per rank; 0 = every core
  bool keep_kv = true;                 // keep each document's KV cache (needed by Answer)
  cache::KvCacheOptions kv;            // tiers of the decode cache
  std::shared_ptr<cache::RemoteTier> remote;  // the remote tier (null: none)
  // The rank named in this engine's KV block keys (remote pools are shared by every rank of the
  // job): the world rank when `comm` is a group split from it (`longctx run --doc-groups`), so
  // two groups' rank 0s never write the same keys. -1: comm.rank().
  int key_rank = -1;
};

// A prefilled document.
struct DocumentInfo {
  int64_t tokens = 0;
  std::vector<int64_t> globals;   // positions, sorted
  std::vector<int64_t> bounds;    // shard bounds (ranks + 1)
  double prefill_seconds = 0.0;
  ForwardStats forward;           // this rank's
  int32_t next_token = -1;        // greedy token after the document (every rank)
};

struct AnswerResult {
  std::vector<int32_t> appended;        // the query's tokens, then the generated ones
  std::vector<int64_t> appended_globals;  // positions of the appended tokens that are global
  std::string generated;                // generated tokens as bytes
  std::vector<float> appended_hidden;   // [appended, hidden] on the last rank only
  double first_token_seconds = 0.0;     // from the call to the first generated token
  double seconds = 0.0;
  uint64_t bytes_sent = 0, bytes_received = 0;
};

// How Answer reads text when the model has a real tokenizer (DESIGN.md §5); without one (null)
// the question is bytes, the answer is bytes and the byte rule picks generated globals.
struct AnswerTokens {
  std::vector<int32_t> query_ids;  // the question, tokenized (every one global)
  // Does a generated token join the globals (it ends a sentence or a paragraph)? `prev`: the
  // appended tokens before it.
  std::function<bool(int32_t token, const std::vector<int32_t>& prev)> is_global;
  std::function<std::string(const std::vector<int32_t>&)> decode;  // generated ids -> text
  std::vector<int32_t> stop_ids;  // EOS: generation stops before appending one of these
};

// Called on every rank after each generated token (token, index from 0).
using TokenCallback = std::function<void(int32_t, int64_t)>;

class Engine {
 public:
  // Opens the model and applies the overrides (collective: agrees on the status).
  static Result<std::unique_ptr<Engine>> Open(comm::Communicator& comm, const EngineOptions& o);
  ~Engine();

  const model::ModelConfig& config() const { return model_.config; }
  const Weights& weights() const { return weights_.view; }  // fp32, for LmHeadLogits
  comm::Communicator& comm() { return comm_; }

  // Prefills `ids` (the whole document, the same on every rank; classes from ClassifyBytes for
  // the global selection) and keeps its KV cache under `doc_id` (replacing one of that id).
  // hidden_rows (optional): this rank's final-norm hidden states [rows, hidden].
  Status Prefill(const std::string& doc_id, std::span<const int32_t> ids,
                 std::span<const attention::TokenClass> classes, const LayerProgress& progress,
                 DocumentInfo* info, std::vector<float>* hidden_rows = nullptr);

  // Appends `query` (bytes; every query token is global), then generates `generate` tokens
  // greedily, against document `doc_id`; afterwards the document is back in its prefilled state,
  // so every question sees only the document.
  Status Answer(const std::string& doc_id, std::string_view query, int64_t generate,
                const TokenCallback& on_token, AnswerResult* out,
                const AnswerTokens* tokens = nullptr);

  // How many tokens the answer to `query` has, as the model's length head predicts it (the
  // `length` loss of DESIGN.md §6): round(exp(w . h + b) - 1) at the query's last token,
  // clamped to [1, max_tokens]. For `longctx run --generate auto`. kFailedPrecondition when the
  // model has no length head. The document is left as it was.
  Result<int64_t> PredictAnswerLength(const std::string& doc_id, std::string_view query,
                                      int64_t max_tokens, const AnswerTokens* tokens = nullptr);

  bool Has(const std::string& doc_id) const { return docs_.count(doc_id) != 0; }
  const DocumentInfo* Info(const std::string& doc_id) const;
  Status Drop(const std::string& doc_id);
  // This rank's KV cache statistics for one document (tiers, demotions, prefetch).
  Result<cache::KvCacheStats> CacheStats(const std::string& doc_id) const;

 private:
  struct Document;
  Engine(comm::Communicator& comm, model::Model model, Fp32Weights weights, const EngineOptions& o);

  comm::Communicator& comm_;
  model::Model model_;
  Fp32Weights weights_;
  EngineOptions options_;
  std::unique_ptr<ThreadPool> pool_;
  uint64_t next_sequence_ = 0;
  std::map<std::string, std::unique_ptr<Document>> docs_;
};

}  // namespace longctx::worker
