// `longctx run`: the main job — a document through the hybrid-attention transformer, sharded
// over the ranks of the job (mpirun / srun), with globals chosen from its structure: prefill,
// then (--query / --generate) a question and greedy generation against the cached context.
// Writes report.json, tokens.npy, globals.npy, generated.txt, (--dump-hidden) hidden.npy and
// (--dump-logits FILE) every position's float32 logits. Several documents per job (--input
// repeated, --inputs LIST, --doc-groups G) go through RunBatch (run_batch.cpp).
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "engine_flags.h"
#include "run_flags.h"
#include "trace_output.h"
#include "longctx/attention/global_selection.h"
#include "longctx/attention/shard_plan.h"
#include "longctx/comm/communicator.h"
#include "longctx/comm/placement.h"
#include "longctx/core/byte_size.h"
#include "longctx/core/file.h"
#include "longctx/core/log.h"
#include "longctx/core/npy.h"
#include "longctx/core/trace.h"
#include "longctx/model/builtin.h"
#include "longctx/model/tokenizer.h"
#include "longctx/worker/blas.h"
#include "longctx/worker/engine.h"
#include "longctx/worker/token_rules.h"

namespace longctx::cli {

Result<std::unique_ptr<model::Tokenizer>> RunTokenizer(const RunFlags& f) {
  if (!f.tokenizer.empty()) return model::OpenTokenizer(f.tokenizer);
  std::error_code ec;
  const std::filesystem::path dir(f.engine.model);
  if (f.engine.model.rfind("builtin:", 0) != 0 &&
      std::filesystem::is_regular_file(dir / "tokenizer.json", ec)) {
    return model::OpenTokenizer((dir / "tokenizer.json").string());
  }
  return std::unique_ptr<model::Tokenizer>(new model::ByteTokenizer());
}

Status ReadDocument(const std::string& path, const model::Tokenizer& tok, std::vector<int32_t>* ids,
                    std::vector<attention::TokenClass>* classes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("{}: cannot open the input document", path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return DataLoss("{}: read error", path);
  // The tokenizer's ids (a tokenizer.json adds its BOS; bytes: id = byte); classes from the
  // bytes for the byte tokenizer, else from each token's decoded text.
  ASSIGN_OR_RETURN(*ids, tok.Encode(text, true));
  *classes = tok.is_byte_level() ? attention::ClassifyBytes(text)
                                 : worker::ClassifyTokenIds(tok, *ids);
  return Status::Ok();
}

Status ParseGenerate(const std::string& text, int64_t* count, bool* is_auto) {
  *count = 0;
  *is_auto = text == "auto";
  if (*is_auto) return Status::Ok();
  char* end = nullptr;
  *count = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0') {
    return InvalidArgument("--generate {}: expected a token count or auto", text);
  }
  return Status::Ok();
}

int64_t PeakRssBytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

Status AnswerDocument(worker::Engine& engine, const model::Tokenizer& tok,
                      const std::string& doc_id, const std::string& query, bool generate_auto,
                      int64_t max_generate, int64_t* generate, int64_t* query_tokens,
                      worker::AnswerResult* answer) {
  *query_tokens = int64_t(query.size());  // bytes, or the tokenizer's ids
  if (tok.is_byte_level()) {
    if (generate_auto) {
      ASSIGN_OR_RETURN(*generate, engine.PredictAnswerLength(doc_id, query, max_generate));
    }
    return engine.Answer(doc_id, query, *generate, {}, answer);
  }
  worker::AnswerTokens at;
  ASSIGN_OR_RETURN(at.query_ids, tok.Encode(query, false));
  *query_tokens = int64_t(at.query_ids.size());
  // EOS: the tokenizer's and config.json's eos_token_id (a number or a list); any stops.
  at.stop_ids = tok.eos_ids();
  for (int64_t id : engine.config().eos_token_ids) {
    if (std::find(at.stop_ids.begin(), at.stop_ids.end(), int32_t(id)) == at.stop_ids.end()) {
      at.stop_ids.push_back(int32_t(id));
    }
  }
  at.is_global = [&](int32_t token, const std::vector<int32_t>& prev) {
    return worker::TokenTextEndsSentenceOrParagraph(
        prev.empty() ? std::string() : tok.TokenText(prev.back()), tok.TokenText(token));
  };
  at.decode = [&](const std::vector<int32_t>& gen) {
    auto text = tok.Decode(gen, true);
    return text.ok() ? *text : std::string();
  };
  if (generate_auto) {
    ASSIGN_OR_RETURN(*generate, engine.PredictAnswerLength(doc_id, query, max_generate, &at));
  }
  return engine.Answer(doc_id, query, *generate, {}, answer, &at);
}

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Token ids and their classes: bytes of a text file, or an int32/int64 .npy of ids (ids below
// 256 are classed as the bytes they stand for).
Status ReadTokens(const RunFlags& f, const model::Tokenizer& tok, std::vector<int32_t>* ids,
                  std::vector<attention::TokenClass>* classes) {
  const std::string input = f.inputs.empty() ? std::string() : f.inputs[0];
  if (input.empty() == f.input_ids.empty()) {
    return InvalidArgument("give exactly one of --input FILE and --input-ids IDS.npy");
  }
  if (!input.empty()) {
    RETURN_IF_ERROR(ReadDocument(input, tok, ids, classes));
  } else {
    ASSIGN_OR_RETURN(NpyArray a, ReadNpy(f.input_ids));
    if (a.shape.size() != 1) {
      return InvalidArgument("{}: token ids must be a 1-D array, got {} dimensions", f.input_ids,
                             a.shape.size());
    }
    ids->resize(size_t(a.numel()));
    for (int64_t i = 0; i < a.numel(); ++i) {
      int64_t v;
      if (a.dtype == DType::kI32) v = a.as<int32_t>()[i];
      else if (a.dtype == DType::kI64) v = a.as<int64_t>()[i];
      else return InvalidArgument("{}: token ids must be int32 or int64, got {}", f.input_ids, DTypeName(a.dtype));
      if (v < 0 || v > INT32_MAX) {
        return OutOfRange("{}: token id {} at position {} is negative or too large", f.input_ids, v, i);
      }
      (*ids)[size_t(i)] = int32_t(v);
    }
    *classes = tok.is_byte_level() ? attention::ClassifyByteIds(*ids)
                                   : worker::ClassifyTokenIds(tok, *ids);
  }
  if (ids->empty()) return InvalidArgument("the input document is empty");
  return Status::Ok();
}

Status RunRun(const RunFlags& f) {
  const auto t_start = Clock::now();
  ASSIGN_OR_RETURN(std::shared_ptr<comm::Communicator> world, comm::WorldCommunicator("auto"));
  comm::Communicator& c = *world;
  const int P = c.size(), me = c.rank();
  {
    // Where this rank runs (LONGCTX_LOG=info shows it at start; report.json records it).
    char host[64] = {};
    gethostname(host, sizeof(host) - 1);
    const comm::DeviceChoice cpu;  // CPU build: no device to choose
    LONGCTX_LOG_INFO("{}", comm::DescribePlacement(me, P, host, c.local_rank(), c.local_size(),
                                                   comm::DetectLauncher(comm::ProcessEnvironment()),
                                                   cpu));
  }
  const bool tty = isatty(fileno(stderr));
  // auto: a bar on a terminal, plain lines otherwise; on: the same; off: nothing.
  const bool show_progress = me == 0 && f.progress != "off";
  const bool bar = show_progress && tty;
  bool generate_auto = false;
  int64_t generate = 0;
  RETURN_IF_ERROR(ParseGenerate(f.generate, &generate, &generate_auto));
  const bool decode = !f.query.empty() || generate > 0 || generate_auto;

  // 1. Flags, tokens and the engine (model + overrides): every rank computes the same.
  auto t0 = Clock::now();
  worker::EngineOptions eo;
  std::vector<int32_t> ids;
  std::vector<attention::TokenClass> classes;
  std::unique_ptr<model::Tokenizer> tok;
  Status st = [&]() -> Status {
    if (f.progress != "auto" && f.progress != "on" && f.progress != "off") {
      return InvalidArgument("--progress must be auto, on or off, got '{}'", f.progress);
    }
    if (generate < 0) return InvalidArgument("--generate must be >= 0, got {}", generate);
    ASSIGN_OR_RETURN(eo, f.engine.Options(decode));
    if (!f.trace.empty()) {
      std::error_code ec;
      const std::filesystem::path dir = std::filesystem::path(f.trace).parent_path();
      if (!dir.empty() && !std::filesystem::is_directory(dir, ec)) {
        return NotFound("--trace {}: the directory {} does not exist", f.trace, dir.string());
      }
    }
    ASSIGN_OR_RETURN(tok, RunTokenizer(f));
    return ReadTokens(f, *tok, &ids, &classes);
  }();
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));
  // --trace: from here to the end, every rank's spans (collective start and finish).
  ASSIGN_OR_RETURN(TraceSession trace_session, TraceSession::Start(c, f.trace));
  trace::TraceSpan load_span("load", "phase");
  // The remote tier (collective): only a run that keeps a KV cache needs one. The guard keeps
  // it (and this rank's pool) until every rank is done, after the engine has gone.
  if (decode) {
    ASSIGN_OR_RETURN(eo.remote, f.engine.kv.JoinRemote(c));
  }
  RemoteTierGuard remote_guard(c, eo.remote);
  ASSIGN_OR_RETURN(std::unique_ptr<worker::Engine> engine, worker::Engine::Open(c, eo));
  const model::ModelConfig& config = engine->config();
  for (size_t i = 0; i < ids.size(); ++i) {  // every rank reads the same ids: no need to agree
    if (ids[i] >= config.vocab_size) {
      return OutOfRange("{}: token id {} at position {} is outside the model's vocabulary [0, {})",
                        f.input_ids.empty() ? f.inputs[0] : f.input_ids, ids[i], i,
                        config.vocab_size);
    }
  }
  const double load_s = Since(t0);
  load_span.End();
  const int64_t n = int64_t(ids.size()), D = config.hidden_size, L = config.num_hidden_layers;

  // 2. Prefill (the engine shards the document and keeps this rank's KV cache when decoding).
  if (show_progress) {
    fmt::print(stderr, "longctx run: {} tokens, {} layers, {} rank(s), model {}\n", n, L, P,
               f.engine.model);
  }
  t0 = Clock::now();
  auto progress = [&](int64_t layer, int64_t layers) {
    if (!show_progress) return;
    const double secs = Since(t0);
    const double rate = double(n) * double(layer) / std::max(secs, 1e-9);
    const double eta = secs / double(layer) * double(layers - layer);
    if (bar) {
      const int width = 30, done = int(width * layer / layers);
      fmt::print(stderr, "\r[{:<{}}] layer {}/{}  {:.0f} tok-layers/s  eta {:.1f} s   ",
                 std::string(size_t(done), '#'), width, layer, layers, rate, eta);
      if (layer == layers) fmt::print(stderr, "\n");
    } else {
      fmt::print(stderr, "progress: layer {}/{} done, {} tokens, {:.1f} s, eta {:.1f} s\n", layer,
                 layers, n, secs, eta);
    }
  };
  MaybeKillForTest(c);
  const std::string doc_id = "run";
  worker::DocumentInfo doc;
  std::vector<float> hidden;
  trace::TraceSpan prefill_span("prefill", "phase", "tokens", int64_t(ids.size()));
  RETURN_IF_ERROR(engine->Prefill(doc_id, ids, classes, progress, &doc, &hidden));
  prefill_span.End();
  const double prefill_s = doc.prefill_seconds;
  const std::vector<int64_t>& bounds = doc.bounds;
  const std::vector<int64_t>& globals = doc.globals;
  const int64_t s = bounds[size_t(me)], rows = bounds[size_t(me) + 1] - s;
  std::vector<int32_t> own(ids.begin() + s, ids.begin() + s + rows);
  ids.clear();
  ids.shrink_to_fit();  // keep only this rank's rows from here on
  classes.clear();
  classes.shrink_to_fit();
  if (show_progress) fmt::print(stderr, "longctx run: {} globals\n", globals.size());

  MaybePauseForTest(c);

  // 3. The question and the generated tokens, against the cached document (the last rank owns
  // them; every rank takes part in each step's attention).
  worker::AnswerResult answer;
  int64_t query_tokens = int64_t(f.query.size());  // bytes, or the tokenizer's ids
  double decode_s = 0.0;
  trace::TraceSpan answer_span("answer", "phase");
  if (decode) {
    RETURN_IF_ERROR(AnswerDocument(*engine, *tok, doc_id, f.query, generate_auto, f.max_generate,
                                   &generate, &query_tokens, &answer));
    decode_s = answer.seconds;
  }
  answer_span.End();
  cache::KvCacheStats kv;
  if (decode) {
    ASSIGN_OR_RETURN(kv, engine->CacheStats(doc_id));
  }
  const std::vector<int32_t>& appended = answer.appended;
  const int64_t n_total = n + int64_t(appended.size());
  std::vector<int64_t> all_globals = globals;
  all_globals.insert(all_globals.end(), answer.appended_globals.begin(),
                     answer.appended_globals.end());

  // 4. Outputs: tokens/globals from rank 0; hidden rows written by every rank.
  t0 = Clock::now();
  trace::TraceSpan write_span("write_outputs", "phase");
  st = Status::Ok();
  if (me == 0) {
    std::error_code ec;
    std::filesystem::create_directories(f.out, ec);
    if (ec) st = InvalidArgument("{}: cannot create the output directory: {}", f.out, ec.message());
  }
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));
  const std::string dir = f.out + "/";
  // tokens.npy: gathered from the shards (int32, n * 4 bytes on rank 0 only).
  std::vector<size_t> counts(static_cast<size_t>(P));
  for (int r = 0; r < P; ++r) {
    counts[size_t(r)] = size_t(bounds[size_t(r) + 1] - bounds[size_t(r)]) * sizeof(int32_t);
  }
  std::vector<int32_t> all_ids(me == 0 ? size_t(n) : 0);
  {
    // AllGatherV delivers to every rank; only rank 0 keeps it (small: 4 bytes per token).
    std::vector<int32_t> gathered(static_cast<size_t>(n));
    RETURN_IF_ERROR(c.AllGatherV(comm::HostBuffer(own.data(), own.size() * sizeof(int32_t)),
                                 comm::HostBuffer(gathered.data(), gathered.size() * sizeof(int32_t)),
                                 counts, comm::DeadlineIn(comm::DefaultTimeout())));
    if (me == 0) {
      all_ids = std::move(gathered);
      all_ids.insert(all_ids.end(), appended.begin(), appended.end());
    }
  }
  if (me == 0) {
    st = WriteNpy(dir + "tokens.npy", DType::kI32, {n_total}, all_ids.data());
    if (st.ok()) {
      st = WriteNpy(dir + "globals.npy", DType::kI64, {int64_t(all_globals.size())},
                    all_globals.data());
    }
    if (st.ok() && f.dump_hidden) st = CreateNpyForRows(dir + "hidden.npy", DType::kF32, {n_total, D});
    if (st.ok() && decode) {
      st = WriteFileAtomically(dir + "generated.txt", answer.generated);
    }
  }
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));
  if (f.dump_hidden) {
    st = WriteNpyRows(dir + "hidden.npy", s, rows, hidden.data());
    if (st.ok() && me == P - 1 && !appended.empty()) {
      st = WriteNpyRows(dir + "hidden.npy", n, int64_t(appended.size()),
                        answer.appended_hidden.data());
    }
    Status agreed = comm::AgreeOnStatus(c, st);
    if (agreed.ok() && me == 0) agreed = CommitNpyRows(dir + "hidden.npy");
    if (!agreed.ok()) {
      if (me == 0) AbortNpyRows(dir + "hidden.npy");
      return agreed;
    }
  }
  if (!f.dump_logits.empty()) {
    // Every rank writes the logits of its own rows, the last rank those of the appended tokens,
    // in chunks (a chunk is kChunk x vocab floats).
    constexpr int64_t kChunk = 256;
    const int64_t V = config.vocab_size;
    const std::string& path = f.dump_logits;
    st = me == 0 ? CreateNpyForRows(path, DType::kF32, {n_total, V}) : Status::Ok();
    RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));
    std::vector<float> logits;
    auto write = [&](const float* h, int64_t row0, int64_t count) -> Status {
      for (int64_t r = 0; r < count; r += kChunk) {
        const int64_t m = std::min(kChunk, count - r);
        logits.resize(size_t(m * V));
        worker::LmHeadLogits(config, engine->weights(), h + r * D, m, logits.data());
        RETURN_IF_ERROR(WriteNpyRows(path, row0 + r, m, logits.data()));
      }
      return Status::Ok();
    };
    st = write(hidden.data(), s, rows);
    if (st.ok() && me == P - 1 && !appended.empty()) {
      st = write(answer.appended_hidden.data(), n, int64_t(appended.size()));
    }
    Status agreed = comm::AgreeOnStatus(c, st);
    if (agreed.ok() && me == 0) agreed = CommitNpyRows(path);
    if (!agreed.ok()) {
      if (me == 0) AbortNpyRows(path);
      return agreed;
    }
  }
  const double write_s = Since(t0);
  write_span.End();

  // 5. report.json: per-rank figures gathered to rank 0.
  const worker::ForwardStats& fs = doc.forward;
  struct RankFigures {
    int64_t rows, peak_rss, sent, received, kv_bytes;
    int64_t prefill_received;  // bytes received in the prefill (all layers)
    double attention_s, dense_s;
    int32_t local_rank, local_size, launcher;
    char host[64];
    cache::KvCacheStats kv;
  } mine{rows, PeakRssBytes(), int64_t(fs.comm_bytes_sent + answer.bytes_sent),
         int64_t(fs.comm_bytes_received + answer.bytes_received),
         int64_t(kv.device.bytes + kv.host.bytes + kv.remote.bytes),
         int64_t(fs.comm_bytes_received), fs.attention_seconds,
         fs.dense_seconds, c.local_rank(), c.local_size(),
         int32_t(comm::DetectLauncher(comm::ProcessEnvironment())), {}, kv};
  gethostname(mine.host, sizeof(mine.host) - 1);
  std::vector<RankFigures> all(static_cast<size_t>(P));
  std::vector<size_t> fig_counts(static_cast<size_t>(P), sizeof(RankFigures));
  RETURN_IF_ERROR(c.AllGatherV(comm::HostBuffer(&mine, sizeof mine),
                               comm::HostBuffer(all.data(), all.size() * sizeof(RankFigures)),
                               fig_counts, comm::DeadlineIn(comm::DefaultTimeout())));
  if (me == 0) {
    const double total_s = Since(t_start);
    using Json = nlohmann::ordered_json;
    auto tier = [](const cache::KvTierStats& t) {
      return Json{{"bytes", t.bytes}, {"blocks", t.blocks}, {"peak_bytes", t.peak_bytes}};
    };
    auto round6 = [](double x) { return std::round(x * 1e6) / 1e6; };  // microseconds
    Json per_rank = Json::array();
    cache::KvCacheStats sum;
    for (int r = 0; r < P; ++r) {
      const RankFigures& x = all[size_t(r)];
      per_rank.push_back(Json{
          {"rank", r},
          {"tokens", {bounds[size_t(r)], bounds[size_t(r) + 1]}},
          {"peak_rss_bytes", x.peak_rss},
          {"comm_bytes_sent", x.sent},
          {"comm_bytes_received", x.received},
          {"attention_seconds", round6(x.attention_s)},
          {"dense_seconds", round6(x.dense_s)},
          {"kv_cache_bytes", x.kv_bytes},
          {"host", std::string(x.host, strnlen(x.host, sizeof x.host))},
          {"local_rank", x.local_rank},
          {"local_size", x.local_size},
          {"launcher", comm::LauncherName(comm::Launcher(x.launcher))},
          {"kv",
           {{"device", tier(x.kv.device)},
            {"host", tier(x.kv.host)},
            {"remote", tier(x.kv.remote)},
            {"demotions", x.kv.demotions},
            {"loads", x.kv.loads},
            {"prefetch_hits", x.kv.prefetch_hits},
            {"prefetch_misses", x.kv.prefetch_misses},
            {"stall_seconds", round6(x.kv.stall_seconds)}}}});
      for (auto [a, b] : {std::pair{&sum.device, &x.kv.device}, std::pair{&sum.host, &x.kv.host},
                          std::pair{&sum.remote, &x.kv.remote}}) {
        a->bytes += b->bytes;
        a->blocks += b->blocks;
        a->peak_bytes = std::max(a->peak_bytes, b->peak_bytes);  // the most one rank held
      }
      sum.demotions += x.kv.demotions;
      sum.loads += x.kv.loads;
      sum.prefetch_hits += x.kv.prefetch_hits;
      sum.prefetch_misses += x.kv.prefetch_misses;
      sum.stall_seconds = std::max(sum.stall_seconds, x.kv.stall_seconds);
    }
    std::vector<int64_t> windows;
    for (int64_t l = 0; l < L; ++l) windows.push_back(config.Window(l));
    const cache::KvCacheOptions& ko = eo.kv;
    auto budget = [](uint64_t b) {
      return b == cache::kUnlimitedBudget ? Json(nullptr) : Json(b);
    };
    const worker::BlasInfo blas = worker::CurrentBlas();
    // The capacity model's figures (longctx plan): the busiest rank's.
    int64_t peak_rss = 0, comm_per_layer = 0;
    for (const RankFigures& x : all) peak_rss = std::max(peak_rss, x.peak_rss);
    for (const RankFigures& x : all) {
      comm_per_layer = std::max(comm_per_layer, x.prefill_received / std::max<int64_t>(1, L));
    }
    Json report = {
        {"model", f.engine.model},
        {"tokens", n_total},
        {"ranks", P},
        {"globals", all_globals.size()},
        {"layers", L},
        {"windows", windows},
        {"fusion", config.hybrid.fusion},
        {"shards", bounds},
        {"seconds",
         {{"load", round6(load_s)},
          {"prefill", round6(prefill_s)},
          {"decode", round6(decode_s)},
          {"write", round6(write_s)},
          {"total", round6(total_s)}}},
        {"prefill_seconds", round6(prefill_s)},
        {"peak_rss_bytes", peak_rss},
        {"comm_bytes_per_layer", comm_per_layer},
        {"tokens_per_second", std::round(10.0 * double(n) / std::max(prefill_s, 1e-9)) / 10.0},
        {"query_tokens", query_tokens},
        {"generated_tokens", int64_t(appended.size()) - query_tokens},
        {"decode_ms_per_token",
         appended.empty() ? Json(nullptr)
                          : Json(std::round(1e6 * decode_s / double(appended.size())) / 1e3)},
        {"first_token_seconds",
         generate > 0 ? Json(round6(answer.first_token_seconds)) : Json(nullptr)},
        {"kv_bytes",
         {{"device", sum.device.bytes}, {"host", sum.host.bytes}, {"remote", sum.remote.bytes}}},
        {"kv",
         {{"codec", cache::CodecName(ko.codec)},
          {"block_tokens", ko.block_tokens},
          {"budgets",
           {{"device", budget(ko.device_budget)},
            {"host", budget(ko.host_budget)},
            {"remote", budget(ko.remote_budget)}}},
          {"device", tier(sum.device)},
          {"host", tier(sum.host)},
          {"remote", tier(sum.remote)},
          {"demotions", sum.demotions},
          {"loads", sum.loads},
          {"prefetch_hits", sum.prefetch_hits},
          {"prefetch_misses", sum.prefetch_misses},
          {"max_stall_seconds", round6(sum.stall_seconds)}}},
        {"blas",
         {{"library", blas.library},
          {"kernel", blas.kernel},
          {"cpu_best", blas.cpu_best},
          {"chosen_by", blas.chosen_by}}},
        {"per_rank", per_rank}};
    RETURN_IF_ERROR(WriteFileAtomically(dir + "report.json", report.dump(2) + "\n"));
    int64_t peak = 0;
    for (const auto& x : all) peak = std::max(peak, x.peak_rss);
    fmt::print("run: {} tokens on {} rank(s), {} globals, {} layers: prefill {:.2f} s ({:.0f} "
               "tokens/s), peak RSS per rank <= {:.1f} MiB; wrote {}report.json\n",
               n, P, globals.size(), L, prefill_s, double(n) / std::max(prefill_s, 1e-9),
               double(peak) / (1024.0 * 1024.0), dir);
  }
  RETURN_IF_ERROR(trace_session.Finish());
  if (me == 0 && !f.trace.empty()) {
    fmt::print("run: wrote the trace of {} rank(s) to {}\n", P, f.trace);
  }
  return Status::Ok();
}

}  // namespace

Runner AddRunCommand(CLI::App& app) {
  auto f = std::make_shared<RunFlags>();
  app.add_option("--input", f->inputs,
                 "the document (tokenized by --tokenizer); repeat it for several documents per "
                 "job, each with the same --query/--generate");
  app.add_option("--inputs", f->inputs_file,
                 "a file listing documents, one path per line (after any --input; blank lines and "
                 "lines starting with # are skipped)");
  app.add_option("--doc-groups", f->doc_groups,
                 "several documents: split the ranks into G groups (G divides the rank count) "
                 "that prefill different documents concurrently")
      ->capture_default_str();
  app.add_option("--tokenizer", f->tokenizer,
                 "tokenizer.json, a directory holding one, or bytes (default: the model "
                 "directory's tokenizer.json, else bytes)");
  app.add_option("--input-ids", f->input_ids, "pre-tokenized input: 1-D int32/int64 .npy");
  app.add_option("--out", f->out, "output directory")->capture_default_str();
  app.add_flag("--dump-hidden", f->dump_hidden, "write hidden.npy (final-norm hidden states)");
  app.add_option("--dump-logits", f->dump_logits,
                 "write every position's float32 logits [tokens, vocab] to this .npy "
                 "(tokens x vocab x 4 bytes: for comparisons on short inputs)");
  app.add_option("--progress", f->progress, "auto | on | off")->capture_default_str();
  app.add_option("--query", f->query, "a question appended after the document (global tokens)");
  app.add_option("--max-generate", f->max_generate, "the cap of --generate auto")
      ->capture_default_str();
  app.add_option("--generate", f->generate,
                 "tokens to decode greedily after it, or auto (the model's length head decides)")
      ->capture_default_str();
  app.add_option("--trace", f->trace,
                 "write a Chrome/Perfetto timeline of every rank to this JSON file "
                 "(chrome://tracing, ui.perfetto.dev; docs/observability.md)");
  f->engine.Register(app);
  return [f] { return f->IsBatch() ? RunBatch(*f) : RunRun(*f); };
}

}  // namespace longctx::cli
