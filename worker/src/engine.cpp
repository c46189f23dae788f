#include "longctx/worker/engine.h"

#include "longctx/worker/param_block.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "longctx/worker/decode.h"

namespace longctx::worker {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// BlockKey sequences are unique per (rank, document) across the job: remote pools are shared by
// every rank, and a job may keep many documents.
uint64_t SequenceId(int rank, uint64_t document) { return (uint64_t(rank) << 40) | document; }

}  // namespace

struct Engine::Document {
  DocumentInfo info;
  std::unique_ptr<cache::TieredKvCache> cache;
  int64_t rows = 0;  // this rank's document rows (what Answer truncates back to)
};

Engine::Engine(comm::Communicator& comm, model::Model model, Fp32Weights weights,
               const EngineOptions& o)
    : comm_(comm), model_(std::move(model)), weights_(std::move(weights)), options_(o) {
  pool_ = std::make_unique<ThreadPool>(o.threads);
  SetGemmThreads(pool_->size());
}

Engine::~Engine() = default;

Result<std::unique_ptr<Engine>> Engine::Open(comm::Communicator& comm, const EngineOptions& o) {
  std::optional<model::Model> opened;
  Fp32Weights weights;
  Status st = [&]() -> Status {
    if (o.threads < 0) return InvalidArgument("--threads must be >= 0, got {}", o.threads);
    if (o.kv.block_tokens < 1) {
      return InvalidArgument("--kv-block-tokens must be >= 1, got {}", o.kv.block_tokens);
    }
    ASSIGN_OR_RETURN(model::Model m, model::OpenModel(o.model, o.seed));
    RETURN_IF_ERROR(model::ApplyOverrides(o.overrides, &m.config));
    ASSIGN_OR_RETURN(weights, ToFp32Weights(m));
    opened.emplace(std::move(m));
    return Status::Ok();
  }();
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm, st));
  return std::unique_ptr<Engine>(new Engine(comm, std::move(*opened), std::move(weights), o));
}

const DocumentInfo* Engine::Info(const std::string& doc_id) const {
  auto it = docs_.find(doc_id);
  return it == docs_.end() ? nullptr : &it->second->info;
}

Result<int64_t> Engine::PredictAnswerLength(const std::string& doc_id, std::string_view query,
                                            int64_t max_tokens, const AnswerTokens* tokens) {
  const int64_t D = model_.config.hidden_size;
  std::vector<float> head;  // [hidden] weight, then the bias
  Status st = [&]() -> Status {
    if (max_tokens < 1) return InvalidArgument("the answer length cap must be >= 1");
    if (query.empty() && !(tokens && !tokens->query_ids.empty())) {
      return InvalidArgument("--generate auto needs a --query (the length head reads its last token)");
    }
    if (!model_.weights.Contains(kLengthHeadWeightName)) {
      return FailedPrecondition(
          "--generate auto: {} has no {} (train the model with --loss ...,length:A)",
          model_.weights.source(), kLengthHeadWeightName);
    }
    ASSIGN_OR_RETURN(model::TensorRef w, model_.weights.Get(kLengthHeadWeightName));
    ASSIGN_OR_RETURN(model::TensorRef b, model_.weights.Get(kLengthHeadBiasName));
    if (w.numel() != D || b.numel() != 1) {
      return InvalidArgument("{}: the length head must be [1, {}] and [1]", model_.weights.source(), D);
    }
    head.resize(size_t(D) + 1);
    RETURN_IF_ERROR(model::CopyToFloat32(w, std::span<float>(head.data(), size_t(D))));
    return model::CopyToFloat32(b, std::span<float>(head.data() + D, 1));
  }();
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm_, st));
  AnswerResult r;
  RETURN_IF_ERROR(Answer(doc_id, query, 0, {}, &r, tokens));
  // The last rank holds the query's hidden states; the others add 0.
  double pred = 0.0;
  if (!r.appended_hidden.empty()) {
    const float* h = r.appended_hidden.data() + r.appended_hidden.size() - size_t(D);
    pred = head[size_t(D)];
    for (int64_t i = 0; i < D; ++i) pred += double(h[i]) * double(head[size_t(i)]);
  }
  RETURN_IF_ERROR(comm_.AllReduce(&pred, 1, comm::ReduceType::kF64, comm::ReduceOp::kSum,
                                  comm::DeadlineIn(comm::DefaultTimeout())));
  const double tokens_left = std::exp(std::min(pred, 30.0)) - 1.0;
  return std::clamp<int64_t>(std::llround(tokens_left), 1, max_tokens);
}

Status Engine::Drop(const std::string& doc_id) {
  if (docs_.erase(doc_id) == 0) return NotFound("document '{}' is not held", doc_id);
  return Status::Ok();
}

Result<cache::KvCacheStats> Engine::CacheStats(const std::string& doc_id) const {
  auto it = docs_.find(doc_id);
  if (it == docs_.end()) return NotFound("document '{}' is not held", doc_id);
  if (!it->second->cache) return cache::KvCacheStats{};
  return it->second->cache->Stats();
}

Status Engine::Prefill(const std::string& doc_id, std::span<const int32_t> ids,
                       std::span<const attention::TokenClass> classes,
                       const LayerProgress& progress, DocumentInfo* info,
                       std::vector<float>* hidden_rows) {
  const model::ModelConfig& c = model_.config;
  const int P = comm_.size(), me = comm_.rank();
  const int64_t n = int64_t(ids.size()), D = c.hidden_size, L = c.num_hidden_layers;
  docs_.erase(doc_id);  // a document of the same id is replaced

  // Globals and shards: every rank computes the same from the same input; nothing is sent.
  std::vector<int64_t> globals;
  attention::ShardPlan plan;
  int64_t widest = 1;
  Status st = [&]() -> Status {
    if (n == 0) return InvalidArgument("the document is empty");
    if (classes.size() != ids.size()) {
      return InvalidArgument("{} token classes for {} tokens", classes.size(), ids.size());
    }
    for (int64_t i = 0; i < n; ++i) {
      if (ids[size_t(i)] < 0 || ids[size_t(i)] >= c.vocab_size) {
        return OutOfRange("token id {} at position {} is outside the model's vocabulary [0, {})",
                          ids[size_t(i)], i, c.vocab_size);
      }
    }
    ASSIGN_OR_RETURN(globals, attention::SelectGlobals(classes, SelectionFor(c)));
    // Shards balanced for the widest layer's window (every layer keeps the same rows).
    for (int64_t l = 0; l < L; ++l) widest = std::max(widest, c.Window(l));
    attention::AttentionSpec plan_spec = LayerSpec(c, 0);
    plan_spec.window = widest;
    ASSIGN_OR_RETURN(plan, attention::MakeShardPlan(n, globals, plan_spec, P));
    return Status::Ok();
  }();
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm_, st));

  auto doc = std::make_unique<Document>();
  const int64_t s = plan.begin(me), rows = plan.rows(me);
  doc->rows = rows;
  if (options_.keep_kv) {
    const int key_rank = options_.key_rank >= 0 ? options_.key_rank : me;
    st = [&]() -> Status {
      ASSIGN_OR_RETURN(doc->cache,
                       cache::TieredKvCache::Create(options_.kv, int32_t(L),
                                                    int32_t(c.num_key_value_heads),
                                                    int32_t(c.head_dim),
                                                    SequenceId(key_rank, ++next_sequence_),
                                                    options_.remote));
      std::vector<int64_t> own_globals;  // rows local to this rank
      for (int64_t g : globals) {
        if (g >= s && g < s + rows) own_globals.push_back(g - s);
      }
      return doc->cache->SetPersistent(own_globals, widest);
    }();
    RETURN_IF_ERROR(comm::AgreeOnStatus(comm_, st));
  }

  std::vector<float> hidden;  // [rows, D], the forward's residual buffer handed over
  attention::ExecOptions exec{pool_.get(), attention::Isa::kAuto};
  const auto t0 = Clock::now();
  st = ForwardShard(comm_, c, weights_.view, plan.bounds, ids.subspan(size_t(s), size_t(rows)),
                    globals, exec, &hidden, &doc->info.forward, progress, doc->cache.get());
  if (st.ok() && doc->cache) st = doc->cache->Flush();  // demotions done: the report is settled
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm_, st));
  doc->info.prefill_seconds = Since(t0);

  // The greedy token after the document: the last row's owner has its hidden state.
  int64_t best = -1;
  if (rows > 0 && plan.end(me) == n) {
    best = GreedyToken(c, weights_.view, hidden.data() + (rows - 1) * D);
  }
  RETURN_IF_ERROR(comm_.AllReduce(&best, 1, comm::ReduceType::kI64, comm::ReduceOp::kMax,
                                  comm::DeadlineIn(comm::DefaultTimeout())));
  doc->info.tokens = n;
  doc->info.globals = std::move(globals);
  doc->info.bounds = plan.bounds;
  doc->info.next_token = int32_t(best);
  if (info) *info = doc->info;
  if (hidden_rows) *hidden_rows = std::move(hidden);
  docs_[doc_id] = std::move(doc);
  return Status::Ok();
}

Status Engine::Answer(const std::string& doc_id, std::string_view query, int64_t generate,
                      const TokenCallback& on_token, AnswerResult* out,
                      const AnswerTokens* tokens) {
  const auto t_start = Clock::now();
  auto it = docs_.find(doc_id);
  Status st;
  if (it == docs_.end()) st = NotFound("document '{}' is not held by this worker group", doc_id);
  else if (!it->second->cache) st = FailedPrecondition("document '{}' kept no KV cache", doc_id);
  else if (generate < 0) st = InvalidArgument("--generate must be >= 0, got {}", generate);
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm_, st));
  Document& doc = *it->second;
  const model::ModelConfig& c = model_.config;
  const int64_t D = c.hidden_size;

  AnswerResult r;
  attention::ExecOptions exec{pool_.get(), attention::Isa::kAuto};
  Decoder dec(comm_, c, weights_.view, doc.info.bounds, doc.info.globals, doc.cache.get(), exec);
  const bool last = comm_.rank() == dec.last_rank();
  std::vector<float> row(static_cast<size_t>(D));
  std::vector<int32_t> seq_tail;  // the tokens before the next one (bytes), for the class rule
  int32_t next = doc.info.next_token;
  auto step = [&](int32_t token, bool is_global) -> Status {
    if (is_global) r.appended_globals.push_back(dec.next_position());
    RETURN_IF_ERROR(dec.Step(token, is_global, last ? row.data() : nullptr, &next));
    r.appended.push_back(token);
    seq_tail.push_back(token);
    if (last) r.appended_hidden.insert(r.appended_hidden.end(), row.begin(), row.end());
    return Status::Ok();
  };
  st = [&]() -> Status {
    if (tokens) {
      for (int32_t id : tokens->query_ids) RETURN_IF_ERROR(step(id, c.hybrid.query_globals));
    } else {
      for (unsigned char ch : query) RETURN_IF_ERROR(step(int32_t(ch), c.hybrid.query_globals));
    }
    std::vector<int32_t> generated_ids;
    for (int64_t i = 0; i < generate; ++i) {
      const int32_t token = next;
      if (i == 0) r.first_token_seconds = Since(t_start);
      if (tokens && std::find(tokens->stop_ids.begin(), tokens->stop_ids.end(), token) !=
                        tokens->stop_ids.end()) {
        break;  // every rank holds the same `next`, so every rank stops here
      }
      if (on_token) on_token(token, i);
      if (tokens) {
        generated_ids.push_back(token);
        RETURN_IF_ERROR(
            step(token, c.hybrid.query_globals && tokens->is_global(token, seq_tail)));
      } else {
        r.generated.push_back(char(token));
        RETURN_IF_ERROR(
            step(token, c.hybrid.query_globals && GeneratedTokenIsGlobal(token, seq_tail)));
      }
    }
    if (tokens) r.generated = tokens->decode(generated_ids);
    return Status::Ok();
  }();
  // Back to the prefilled document, whatever happened: the next question sees only it.
  Status restored = doc.cache->Truncate(doc.rows);
  if (st.ok()) st = restored;
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm_, st));
  r.seconds = Since(t_start);
  r.bytes_sent = dec.bytes_sent();
  r.bytes_received = dec.bytes_received();
  if (out) *out = std::move(r);
  return Status::Ok();
}

}  // namespace longctx::worker
