// `longctx run`: the main job — a document through the hybrid-attention transformer, sharded
// over the ranks of the job (mpirun / srun), with globals chosen from its structure: prefill,
// then (--query / --generate) a question and greedy generation against the cached context.
// Writes report.json, tokens.npy, globals.npy, generated.txt and (--dump-hidden) hidden.npy.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "longctx/attention/global_selection.h"
#include "longctx/attention/shard_plan.h"
#include "longctx/comm/communicator.h"
#include "longctx/comm/placement.h"
#include "longctx/core/log.h"
#include "longctx/core/npy.h"
#include "longctx/model/builtin.h"
#include "longctx/worker/decode.h"
#include "longctx/worker/forward.h"

namespace longctx::cli {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct RunFlags {
  std::string model = "builtin:tiny";
  uint64_t seed = model::kDefaultBuiltinSeed;
  std::string input, input_ids, out = "longctx-run";
  bool dump_hidden = false;
  std::string window;  // "64" or "64,256,..." (one per layer)
  std::optional<double> global_ratio;
  std::optional<int64_t> global_max, sinks;
  std::optional<std::string> fusion;
  std::string progress = "auto";
  int threads = 0;
  std::string query;      // appended after the document, every token global
  int64_t generate = 0;   // tokens decoded greedily after the document (and the query)
};


Result<std::vector<int64_t>> ParseWindows(const std::string& text) {
  std::vector<int64_t> w;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 1) {
      return InvalidArgument("--window '{}': expected positive integers, one or one per layer",
                             text);
    }
    w.push_back(v);
  }
  return w;
}

// Token ids and their classes: bytes of a text file, or an int32/int64 .npy of ids (ids below
// 256 are classed as the bytes they stand for).
Status ReadTokens(const RunFlags& f, std::vector<int32_t>* ids,
                  std::vector<attention::TokenClass>* classes) {
  if (f.input.empty() == f.input_ids.empty()) {
    return InvalidArgument("give exactly one of --input FILE and --input-ids IDS.npy");
  }
  if (!f.input.empty()) {
    std::ifstream in(f.input, std::ios::binary);
    if (!in) return NotFound("{}: cannot open the input document", f.input);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) return DataLoss("{}: read error", f.input);
    ids->resize(text.size());
    for (size_t i = 0; i < text.size(); ++i) (*ids)[i] = int32_t(uint8_t(text[i]));
    *classes = attention::ClassifyBytes(text);
  } else {
    ASSIGN_OR_RETURN(NpyArray a, ReadNpy(f.input_ids));
    if (a.shape.size() != 1) {
      return InvalidArgument("{}: token ids must be a 1-D array, got {} dimensions", f.input_ids,
                             a.shape.size());
    }
    std::string bytes(size_t(a.numel()), '\0');
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
      bytes[size_t(i)] = v < 256 ? char(v) : '\x01';
    }
    *classes = attention::ClassifyBytes(bytes);
  }
  if (ids->empty()) return InvalidArgument("the input document is empty");
  return Status::Ok();
}

int64_t PeakRssBytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;  // Linux reports KiB
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

  // 1. Model, overrides, tokens and globals: every rank computes the same, so nothing is sent.
  auto t0 = Clock::now();
  std::optional<model::Model> opened;
  worker::Fp32Weights weights;
  std::vector<int32_t> ids;
  std::vector<attention::TokenClass> classes;
  std::vector<int64_t> globals;
  Status st = [&]() -> Status {
    if (f.progress != "auto" && f.progress != "on" && f.progress != "off") {
      return InvalidArgument("--progress must be auto, on or off, got '{}'", f.progress);
    }
    if (f.threads < 0) return InvalidArgument("--threads must be >= 0");
    if (f.generate < 0) return InvalidArgument("--generate must be >= 0, got {}", f.generate);
    ASSIGN_OR_RETURN(model::Model loaded, model::OpenModel(f.model, f.seed));
    opened.emplace(std::move(loaded));
    model::Model& m = *opened;
    model::HybridOverrides ov;
    if (!f.window.empty()) {
      ASSIGN_OR_RETURN(std::vector<int64_t> w, ParseWindows(f.window));
      ov.window = std::move(w);
    }
    ov.global_ratio = f.global_ratio;
    ov.global_max = f.global_max;
    ov.sinks = f.sinks;
    ov.fusion = f.fusion;
    RETURN_IF_ERROR(model::ApplyOverrides(ov, &m.config));
    ASSIGN_OR_RETURN(weights, worker::ToFp32Weights(m));
    RETURN_IF_ERROR(ReadTokens(f, &ids, &classes));
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] >= m.config.vocab_size) {
        return OutOfRange("{}: token id {} at position {} is outside the model's vocabulary "
                          "[0, {})", f.input_ids.empty() ? f.input : f.input_ids, ids[i], i,
                          m.config.vocab_size);
      }
    }
    attention::SelectionConfig sel;
    sel.global_ratio = m.config.hybrid.global_ratio;
    sel.global_max = m.config.hybrid.global_max.value_or(-1);
    sel.sinks = m.config.hybrid.sinks;
    ASSIGN_OR_RETURN(globals, attention::SelectGlobals(classes, sel));
    return Status::Ok();
  }();
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));
  const model::Model& m = *opened;
  const double load_s = Since(t0);
  const int64_t n = int64_t(ids.size()), D = m.config.hidden_size, L = m.config.num_hidden_layers;

  // 2. Shards balanced for the widest layer's window (every layer keeps the same rows).
  int64_t widest = 1;
  for (int64_t l = 0; l < L; ++l) widest = std::max(widest, m.config.Window(l));
  attention::AttentionSpec plan_spec = worker::LayerSpec(m.config, 0);
  plan_spec.window = widest;
  ASSIGN_OR_RETURN(attention::ShardPlan plan, attention::MakeShardPlan(n, globals, plan_spec, P));
  const int64_t s = plan.begin(me), rows = plan.rows(me);
  std::vector<int32_t> own(ids.begin() + s, ids.begin() + s + rows);
  ids.clear();
  ids.shrink_to_fit();  // keep only this rank's rows from here on
  classes.clear();
  classes.shrink_to_fit();

  // 3. Prefill.
  if (me == 0) {
    fmt::print(stderr, "longctx run: {} tokens, {} globals, {} layers, {} rank(s), model {}\n", n,
               globals.size(), L, P, f.model);
  }
  ThreadPool pool(f.threads);
  worker::SetGemmThreads(pool.size());
  attention::ExecOptions exec{&pool, attention::Isa::kAuto};
  std::vector<float> hidden(size_t(rows * D));
  worker::ForwardStats fs;
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
  const bool decode = !f.query.empty() || f.generate > 0;
  std::vector<worker::LayerKv> cache;
  st = worker::ForwardShard(c, m.config, weights.view, plan.bounds, own, globals, exec,
                            hidden.data(), &fs, progress, decode ? &cache : nullptr);
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));
  const double prefill_s = Since(t0);

  // 3b. The question and the generated tokens, against the cached document (last rank owns
  // them; every rank takes part in each step's attention).
  std::vector<int32_t> appended;         // query then generated tokens (every rank)
  std::vector<int64_t> appended_globals; // their positions that are global
  std::vector<float> appended_hidden;    // [appended, D] on the last rank
  std::string generated_text;
  double decode_s = 0.0;
  uint64_t kv_cache_bytes = 0;  // held for decoding (the device tier: no other tier exists yet)
  if (decode) {
    t0 = Clock::now();
    worker::Decoder dec(c, m.config, weights.view, plan.bounds, globals, std::move(cache), exec);
    const bool last = me == dec.last_rank();
    std::vector<float> row(static_cast<size_t>(D));
    std::vector<int32_t> seq_tail;  // the tokens before the next one (bytes), for the class rule
    int32_t next = -1;
    auto step = [&](int32_t token, bool is_global) -> Status {
      if (is_global) appended_globals.push_back(dec.next_position());
      RETURN_IF_ERROR(dec.Step(token, is_global, last ? row.data() : nullptr, &next));
      appended.push_back(token);
      seq_tail.push_back(token);
      if (last) appended_hidden.insert(appended_hidden.end(), row.begin(), row.end());
      return Status::Ok();
    };
    st = [&]() -> Status {
      for (unsigned char ch : f.query) RETURN_IF_ERROR(step(int32_t(ch), true));
      if (f.generate > 0 && f.query.empty()) {
        // The first token follows the document's last token: its owner has the hidden state.
        int64_t best = -1;
        if (rows > 0 && plan.end(me) == n) {
          best = worker::GreedyToken(m.config, weights.view, hidden.data() + (rows - 1) * D);
        }
        RETURN_IF_ERROR(c.AllReduce(&best, 1, comm::ReduceType::kI64, comm::ReduceOp::kMax,
                                    comm::DeadlineIn(comm::DefaultTimeout())));
        next = int32_t(best);
      }
      for (int64_t i = 0; i < f.generate; ++i) {
        const int32_t token = next;
        generated_text.push_back(char(token));
        RETURN_IF_ERROR(step(token, worker::GeneratedTokenIsGlobal(token, seq_tail)));
      }
      return Status::Ok();
    }();
    RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));
    decode_s = Since(t0);
    kv_cache_bytes = dec.cache_bytes();
  }
  const int64_t n_total = n + int64_t(appended.size());
  std::vector<int64_t> all_globals = globals;
  all_globals.insert(all_globals.end(), appended_globals.begin(), appended_globals.end());

  // 4. Outputs: tokens/globals from rank 0; hidden rows written by every rank.
  t0 = Clock::now();
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
  for (int r = 0; r < P; ++r) counts[size_t(r)] = size_t(plan.rows(r)) * sizeof(int32_t);
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
      std::ofstream gen(dir + "generated.txt", std::ios::binary);
      gen << generated_text;
      if (!gen) st = InvalidArgument("{}generated.txt: cannot write", dir);
    }
  }
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, st));
  if (f.dump_hidden) {
    st = WriteNpyRows(dir + "hidden.npy", s, rows, hidden.data());
    if (st.ok() && me == P - 1 && !appended.empty()) {
      st = WriteNpyRows(dir + "hidden.npy", n, int64_t(appended.size()), appended_hidden.data());
    }
    Status agreed = comm::AgreeOnStatus(c, st);
    if (agreed.ok() && me == 0) agreed = CommitNpyRows(dir + "hidden.npy");
    if (!agreed.ok()) {
      if (me == 0) AbortNpyRows(dir + "hidden.npy");
      return agreed;
    }
  }
  const double write_s = Since(t0);

  // 5. report.json: per-rank figures gathered to rank 0.
  struct RankFigures {
    int64_t rows, peak_rss, sent, received, kv_bytes;
    double attention_s, dense_s;
    int32_t local_rank, local_size, launcher;
    char host[64];
  } mine{rows, PeakRssBytes(), int64_t(fs.comm_bytes_sent), int64_t(fs.comm_bytes_received),
         int64_t(kv_cache_bytes), fs.attention_seconds, fs.dense_seconds, c.local_rank(),
         c.local_size(), int32_t(comm::DetectLauncher(comm::ProcessEnvironment())), {}};
  gethostname(mine.host, sizeof(mine.host) - 1);
  std::vector<RankFigures> all(static_cast<size_t>(P));
  std::vector<size_t> fig_counts(static_cast<size_t>(P), sizeof(RankFigures));
  RETURN_IF_ERROR(c.AllGatherV(comm::HostBuffer(&mine, sizeof mine),
                               comm::HostBuffer(all.data(), all.size() * sizeof(RankFigures)),
                               fig_counts, comm::DeadlineIn(comm::DefaultTimeout())));
  if (me == 0) {
    const double total_s = Since(t_start);
    std::string per_rank;
    for (int r = 0; r < P; ++r) {
      const RankFigures& x = all[size_t(r)];
      per_rank += fmt::format(
          "{}    {{\"rank\": {}, \"tokens\": [{}, {}], \"peak_rss_bytes\": {}, "
          "\"comm_bytes_sent\": {}, \"comm_bytes_received\": {}, \"attention_seconds\": {:.6f}, "
          "\"dense_seconds\": {:.6f}, \"kv_cache_bytes\": {}, \"host\": \"{}\", "
          "\"local_rank\": {}, \"local_size\": {}, \"launcher\": \"{}\"}}",
          r ? ",\n" : "", r, plan.begin(r), plan.end(r), x.peak_rss, x.sent, x.received,
          x.attention_s, x.dense_s, x.kv_bytes, std::string(x.host, strnlen(x.host, sizeof x.host)),
          x.local_rank, x.local_size, comm::LauncherName(comm::Launcher(x.launcher)));
    }
    int64_t kv_total = 0;
    for (const auto& x : all) kv_total += x.kv_bytes;
    std::vector<int64_t> windows;
    for (int64_t l = 0; l < L; ++l) windows.push_back(m.config.Window(l));
    const std::string report = fmt::format(
        "{{\n  \"model\": \"{}\",\n  \"tokens\": {},\n  \"ranks\": {},\n  \"globals\": {},\n"
        "  \"layers\": {},\n  \"windows\": [{}],\n  \"fusion\": \"{}\",\n"
        "  \"shards\": [{}],\n"
        "  \"seconds\": {{\"load\": {:.6f}, \"prefill\": {:.6f}, \"decode\": {:.6f}, "
        "\"write\": {:.6f}, \"total\": {:.6f}}},\n  \"tokens_per_second\": {:.1f},\n"
        "  \"query_tokens\": {},\n  \"generated_tokens\": {},\n"
        "  \"decode_ms_per_token\": {},\n"
        "  \"kv_bytes\": {{\"device\": {}, \"host\": 0, \"remote\": 0}},\n"
        "  \"per_rank\": [\n{}\n  ]\n}}\n",
        f.model, n_total, P, all_globals.size(), L, fmt::join(windows, ", "),
        m.config.hybrid.fusion, fmt::join(plan.bounds, ", "), load_s, prefill_s, decode_s,
        write_s, total_s, double(n) / std::max(prefill_s, 1e-9), f.query.size(), f.generate,
        appended.empty() ? std::string("null")
                         : fmt::format("{:.3f}", 1e3 * decode_s / double(appended.size())),
        kv_total, per_rank);
    std::ofstream out(dir + "report.json");
    out << report;
    if (!out) return InvalidArgument("{}report.json: cannot write", dir);
    int64_t peak = 0;
    for (const auto& x : all) peak = std::max(peak, x.peak_rss);
    fmt::print("run: {} tokens on {} rank(s), {} globals, {} layers: prefill {:.2f} s ({:.0f} "
               "tokens/s), peak RSS per rank <= {:.1f} MiB; wrote {}report.json\n",
               n, P, globals.size(), L, prefill_s, double(n) / std::max(prefill_s, 1e-9),
               double(peak) / (1024.0 * 1024.0), dir);
  }
  return Status::Ok();
}

}  // namespace

Runner AddRunCommand(CLI::App& app) {
  auto f = std::make_shared<RunFlags>();
  app.add_option("--model", f->model, "builtin:tiny | builtin:small | a HF model directory")
      ->capture_default_str();
  app.add_option("--seed", f->seed, "seed of a builtin model")->capture_default_str();
  app.add_option("--input", f->input, "the document (bytes are tokens)");
  app.add_option("--input-ids", f->input_ids, "pre-tokenized input: 1-D int32/int64 .npy");
  app.add_option("--out", f->out, "output directory")->capture_default_str();
  app.add_flag("--dump-hidden", f->dump_hidden, "write hidden.npy (final-norm hidden states)");
  app.add_option("--window", f->window, "window, one value or one per layer (comma-separated)");
  app.add_option("--global-ratio", f->global_ratio, "global budget as a fraction of tokens");
  app.add_option("--global-max", f->global_max, "global budget cap (default 16*ceil(log2 n))");
  app.add_option("--sinks", f->sinks, "leading sink tokens");
  app.add_option("--fusion", f->fusion, "union | weighted:A");
  app.add_option("--progress", f->progress, "auto | on | off")->capture_default_str();
  app.add_option("--threads", f->threads, "threads per rank (0 = all cores)")->capture_default_str();
  app.add_option("--query", f->query, "a question appended after the document (global tokens)");
  app.add_option("--generate", f->generate, "tokens to decode greedily after it")
      ->capture_default_str();
  return [f] { return RunRun(*f); };
}

}  // namespace longctx::cli
