#include "longctx/bench/train_bench.h"

#include <cblas.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "longctx/core/file.h"
#include "longctx/core/npy.h"
#include "longctx/core/thread_pool.h"
#include "longctx/model/builtin.h"
#include "longctx/train/sample_step.h"
#include "longctx/train/task_data.h"
#include "longctx/worker/forward.h"
#include "longctx/worker/param_block.h"
#include "matrix_internal.h"

#ifndef LONGCTX_TRAIN_PEER_SCRIPT
#define LONGCTX_TRAIN_PEER_SCRIPT ""
#endif

namespace longctx::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr double kLossTolerance = 1e-4;  // relative, longctx vs the torch peer

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// OpenBLAS sgemm GFLOP/s, m=n=k=2048, best of 3 after a warm-up (the reference every speed here
// is read against: the machines are shared and their BLAS kernels differ).
double SgemmGflops(int threads) {
  constexpr int kN = 2048;
  openblas_set_num_threads(threads);
  std::vector<float> a(size_t(kN) * kN), b(size_t(kN) * kN), c(size_t(kN) * kN);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = float(int(i * 7 % 13) - 6) / 8.0f;
    b[i] = float(int(i * 5 % 11) - 5) / 8.0f;
  }
  double best = 1e30;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kN, kN, kN, 1.0f, a.data(), kN, b.data(),
                kN, 0.0f, c.data(), kN);
    if (rep > 0) best = std::min(best, Since(t0));
  }
  return 2.0 * kN * kN * double(kN) / best * 1e-9;
}

double PeakRssBytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) * 1024.0;  // KiB on Linux
}

double CurrentRssBytes() {
  std::ifstream in("/proc/self/statm");
  double size = 0, resident = 0;
  in >> size >> resident;
  return resident * double(sysconf(_SC_PAGESIZE));
}

double MiB(double bytes) { return bytes / double(1 << 20); }

// What one rank holds during ForwardBackward (worker/src/train_step.cpp), in bytes: the
// parameters and their gradient, each layer's input, one layer's activations and the backward's
// temporaries, for `rows` tokens: O(rows x d x layers).
struct MemoryEstimate {
  double params = 0, activations = 0;
};
MemoryEstimate EstimateStepMemory(const model::ModelConfig& c, size_t param_floats, int64_t rows) {
  const double D = double(c.hidden_size), H = double(c.num_attention_heads),
               Hkv = double(c.num_key_value_heads), hd = double(c.head_dim),
               I = double(c.intermediate_size), L = double(c.num_hidden_layers);
  const double per_row = (L + 1) * D                                      // layer inputs
                         + 3 * D + 2 * H * hd + 2 * Hkv * hd + H + 3 * I  // one layer's activations
                         + I + D + 2 * H * hd + 2 * Hkv * hd              // backward temporaries
                         + 3 * D;                                         // final norm, dhf, dx
  return {2.0 * 4.0 * double(param_floats), 4.0 * per_row * double(rows)};
}

// Per rank and step: what AllGatherV collects on rank 0.
struct RankStep {
  double fb = 0, allreduce = 0, fwd = 0, bwd = 0, gemm = 0, attention = 0, comm = 0;
  double sent = 0, received = 0, rows = 0, peak_rss = 0;
};
static_assert(sizeof(RankStep) == 11 * sizeof(double));

Result<std::vector<RankStep>> GatherSteps(comm::Communicator& comm, const RankStep& mine) {
  std::vector<RankStep> all(size_t(comm.size()));
  std::vector<size_t> counts(size_t(comm.size()), sizeof(RankStep));
  RETURN_IF_ERROR(comm.AllGatherV({&mine, sizeof mine}, {all.data(), all.size() * sizeof mine},
                                  counts, comm::DeadlineIn(comm::DefaultTimeout())));
  return all;
}

struct PeerResult {
  std::optional<double> loss, best_s, median_s;
  std::string skipped;  // why it did not run
};

struct Row {
  int64_t n = 0, globals = 0;
  double best_s = 0, median_s = 0;  // the step: max over ranks of ForwardBackward + all-reduce
  double loss = 0;
  std::vector<RankStep> ranks;  // of the best step
  PeerResult dense, chunks;
};

// The torch peer on one sequence (rank 0 of a 1-rank run). Writes its inputs to `dir`.
PeerResult RunPeer(const TrainBenchOptions& o, const std::string& script,
                   const std::string& model_dir, const std::string& dir, const train::Sample& s,
                   const std::vector<int64_t>& globals, int threads, const std::string& mode,
                   std::string* log_text) {
  PeerResult r;
  const int64_t n = int64_t(s.ids.size());
  std::vector<int64_t> ids(s.ids.begin(), s.ids.end());
  const std::string ids_path = fmt::format("{}/ids_{}.npy", dir, n);
  const std::string g_path = fmt::format("{}/globals_{}.npy", dir, n);
  const std::string out = fmt::format("{}/torch_{}_{}.json", dir, n, mode);
  const std::string log = fmt::format("{}/torch_{}_{}.log", dir, n, mode);
  Status st = WriteNpy(ids_path, DType::kI64, {n}, ids.data());
  if (st.ok()) st = WriteNpy(g_path, DType::kI64, {int64_t(globals.size())}, globals.data());
  if (!st.ok()) {
    r.skipped = "cannot write its inputs: " + st.ToString();
    return r;
  }
  Result<matrix::ProcessResult> p =
      matrix::RunProcess({o.python, script, "--model", model_dir, "--ids", ids_path, "--globals",
                          g_path, "--threads", std::to_string(threads), "--repeats",
                          std::to_string(o.repeats), "--modes", mode, "--json", out},
                         log, 3600.0);
  {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    *log_text = ss.str();
  }
  if (!p.ok() || p->exit_code != 0 || p->timed_out) {
    r.skipped = "the peer failed: " + matrix::LastLogLine(log);
    return r;
  }
  std::ifstream in(out);
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains("peers") || !j["peers"].contains(mode)) {
    r.skipped = "the peer wrote no result";
    return r;
  }
  const json& pj = j["peers"][mode];
  if (pj.contains("skipped")) {
    r.skipped = pj["skipped"].get<std::string>();
    return r;
  }
  r.loss = pj["loss"].get<double>();
  r.best_s = pj["best_s"].get<double>();
  r.median_s = pj["median_s"].get<double>();
  return r;
}

std::string TokS(double n, const std::optional<double>& s) {
  return s ? fmt::format("{:.0f}", n / *s) : std::string("-");
}

json PeerJson(const PeerResult& p, int64_t n) {
  json j;
  if (!p.best_s) {
    j["skipped"] = p.skipped;
    return j;
  }
  j["loss"] = *p.loss;
  j["best_s"] = *p.best_s;
  j["median_s"] = *p.median_s;
  j["tokens_per_s"] = double(n) / *p.best_s;
  return j;
}

}  // namespace

Status RunTrainBench(const TrainBenchOptions& o, comm::Communicator& comm) {
  const bool root = comm.rank() == 0;
  if (o.repeats < 1) return InvalidArgument("--repeats must be >= 1");
  if (o.peer != "auto" && o.peer != "off") return InvalidArgument("--peer takes auto or off");
  for (int64_t n : o.tokens) {
    if (n < 2) return InvalidArgument("--tokens: {} is below 2", n);
  }
  const int threads =
      o.threads > 0 ? o.threads
                    : std::max(1, int(std::thread::hardware_concurrency()) / comm.local_size());

  // Every rank loads the model and the prose; they agree on the outcome first.
  std::optional<worker::ParamBlock> params;
  std::optional<train::FillerCorpus> filler;
  Status st = [&]() -> Status {
    ASSIGN_OR_RETURN(model::Model m, model::OpenModel(o.model));
    ASSIGN_OR_RETURN(worker::ParamBlock p, worker::ParamBlock::FromModel(m, false));
    params.emplace(std::move(p));
    ASSIGN_OR_RETURN(train::FillerCorpus f, train::FillerCorpus::LoadDefault());
    filler.emplace(std::move(f));
    return Status::Ok();
  }();
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm, st));
  const model::ModelConfig& cfg = params->config();

  // The peer: rank 0 of a 1-rank run, when python and the script are there.
  const std::string script = o.peer_script.empty() ? LONGCTX_TRAIN_PEER_SCRIPT : o.peer_script;
  std::string peer_off;
  if (o.peer == "off")
    peer_off = "--peer off";
  else if (comm.size() > 1)
    peer_off = "runs on 1 rank only: compare with the 1-rank rows";
  else if (access(o.python.c_str(), X_OK) != 0)
    peer_off = o.python + " is not there";
  else if (script.empty() || !fs::exists(script))
    peer_off = "no peer script '" + script + "'";
  else if (cfg.hybrid.fusion_weighted)
    peer_off = "the peer computes union fusion only";
  std::string work_dir, model_dir;
  if (root && peer_off.empty()) {
    work_dir =
        (fs::temp_directory_path() / fmt::format("longctx-bench-train-{}", getpid())).string();
    std::error_code ec;
    fs::create_directories(work_dir, ec);
    if (ec) peer_off = "cannot create " + work_dir;
    if (o.model.rfind("builtin:", 0) == 0) {
      // What `longctx mkmodel --preset P` writes: the same weights OpenModel generated above.
      model_dir = work_dir + "/model";
      Status ws = model::WriteModelDir(model_dir, cfg, model::kDefaultBuiltinSeed, DType::kF32);
      if (!ws.ok()) peer_off = "cannot write the model: " + ws.ToString();
    } else {
      model_dir = o.model;
    }
  }

  // Header (rank 0).
  ThreadPool pool(threads);
  worker::SetGemmThreads(pool.size());
  const attention::ExecOptions exec{&pool, attention::Isa::kAuto};
  const matrix::MachineInfo machine = matrix::ReadMachineInfo();
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  double sgemm = 0;
  if (root) {
    fmt::print(
        "# longctx bench train: {} (layers {}, hidden {}, heads {}/{}, head_dim {}, "
        "intermediate {}, vocab {}, windows {}), fusion {}\n",
        o.model, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
        cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size, cfg.vocab_size,
        fmt::join(cfg.hybrid.window, ","), cfg.hybrid.fusion);
    fmt::print("# CPU: {} ({} cores), {} rank(s) x {} thread(s), load {}\n", machine.cpu,
               machine.cores, comm.size(), threads, machine.load_before);
    fmt::print("# BLAS: {}; kernel {}; OPENBLAS_CORETYPE={}\n", openblas_get_config(),
               openblas_get_corename(), coretype ? coretype : "(unset)");
    fmt::print(
        "# data: real prose (FillerCorpus::LoadDefault, task lm, seed {}), byte tokens, "
        "globals as `longctx run` picks them; loss = mean CE; step = forward + backward "
        "(+ the gradient all-reduce on P > 1), best and median of {} after a warm-up\n",
        o.seed, o.repeats);
    if (!peer_off.empty()) fmt::print("# torch peer: skipped ({})\n", peer_off);
    std::fflush(stdout);
  }
  RETURN_IF_ERROR(comm.Barrier(comm::DeadlineIn(comm::DefaultTimeout())));

  const double rss_before = CurrentRssBytes();
  std::vector<Row> rows;
  bool loss_mismatch = false;
  std::vector<float> grads(params->size());
  for (int64_t n : o.tokens) {
    Row row;
    row.n = n;
    train::Sample sample;
    st = [&]() -> Status {
      ASSIGN_OR_RETURN(train::TaskDocument doc,
                       train::MakeTaskDocument(train::Task::kLm, n, o.seed, *filler));
      sample.ids = std::move(doc.ids);
      sample.loss_mask = std::move(doc.loss_mask);
      return Status::Ok();
    }();
    RETURN_IF_ERROR(comm::AgreeOnStatus(comm, st));

    std::vector<int64_t> globals;
    std::vector<double> step_s;
    double best = 1e300;
    for (int rep = 0; rep <= o.repeats; ++rep) {  // rep 0 is the warm-up
      std::fill(grads.begin(), grads.end(), 0.0f);
      RETURN_IF_ERROR(comm.Barrier(comm::DeadlineIn(comm::DefaultTimeout())));
      worker::LossTerms loss;
      worker::TrainStepStats stats;
      auto t0 = Clock::now();
      st = train::AccumulateSampleGradients(comm, *params, sample, worker::LossWeights{}, exec,
                                            grads.data(), &loss, &globals, &stats);
      RankStep mine;
      mine.fb = Since(t0);
      RETURN_IF_ERROR(comm::AgreeOnStatus(comm, st).WithContext(fmt::format("n={}", n)));
      t0 = Clock::now();
      RETURN_IF_ERROR(comm.AllReduce(grads.data(), grads.size(), comm::ReduceType::kF32,
                                     comm::ReduceOp::kSum,
                                     comm::DeadlineIn(comm::DefaultTimeout())));
      mine.allreduce = comm.size() > 1 ? Since(t0) : 0.0;
      mine.fwd = stats.forward_seconds;
      mine.bwd = stats.backward_seconds;
      mine.gemm = stats.gemm_seconds;
      mine.attention = stats.attention_seconds;
      mine.comm = stats.comm_seconds;
      mine.sent = double(stats.bytes_sent);
      mine.received = double(stats.bytes_received);
      mine.peak_rss = PeakRssBytes();
      ASSIGN_OR_RETURN(std::vector<RankStep> all, GatherSteps(comm, mine));
      double step = 0;
      for (const RankStep& r : all) step = std::max(step, r.fb + r.allreduce);
      row.loss = loss.total;
      row.globals = int64_t(globals.size());
      if (rep == 0) continue;
      step_s.push_back(step);
      if (step < best) {
        best = step;
        row.ranks = std::move(all);
      }
      if (root) {
        fmt::print("longctx n={} step {}: {:.4f} s ({:.0f} tok/s), loss {:.7f}\n", n, rep, step,
                   double(n) / step, loss.total);
        std::fflush(stdout);
      }
    }
    std::vector<double> sorted = step_s;
    std::sort(sorted.begin(), sorted.end());
    row.best_s = sorted.front();
    row.median_s = sorted[sorted.size() / 2];
    if (sorted.size() % 2 == 0) row.median_s = 0.5 * (sorted[sorted.size() / 2 - 1] + row.median_s);
    // Rows per rank, for the rank-local bounds of this sequence.
    ASSIGN_OR_RETURN(std::vector<int64_t> bounds,
                     worker::TrainShardBounds(cfg, n, globals, comm.size()));
    for (size_t r = 0; r < row.ranks.size(); ++r) {
      row.ranks[r].rows = double(bounds[r + 1] - bounds[r]);
    }

    if (root) {
      for (size_t r = 0; r < row.ranks.size(); ++r) {
        const RankStep& s = row.ranks[r];
        fmt::print(
            "  rank {} rows {:.0f}: fwd+bwd {:.4f} s (forward {:.4f}, backward {:.4f}), "
            "GEMM {:.4f} s, attention {:.4f} s (of it waiting in exchanges {:.4f} s), "
            "grad all-reduce {:.4f} s, sent {:.2f} MiB, received {:.2f} MiB, peak RSS "
            "{:.1f} MiB\n",
            r, s.rows, s.fb, s.fwd, s.bwd, s.gemm, s.attention, s.comm, s.allreduce, MiB(s.sent),
            MiB(s.received), MiB(s.peak_rss));
      }
      if (peer_off.empty()) {
        for (const char* mode : {"dense", "chunks"}) {
          std::string log_text;
          PeerResult p =
              RunPeer(o, script, model_dir, work_dir, sample, globals, threads, mode, &log_text);
          fmt::print("{}", log_text);
          (std::string(mode) == "dense" ? row.dense : row.chunks) = std::move(p);
        }
        std::string line = fmt::format("loss n={}: longctx {:.7f}", n, row.loss);
        bool any = false, equal = true;
        const std::pair<const char*, const PeerResult*> peers[] = {{"torch-dense", &row.dense},
                                                                   {"torch-chunks", &row.chunks}};
        for (const auto& [name, p] : peers) {
          if (!p->loss) {
            line += fmt::format(", {} skipped", name);
            continue;
          }
          const double rel = std::fabs(*p->loss - row.loss) / std::max(std::fabs(row.loss), 1e-30);
          line += fmt::format(", {} {:.7f} (rel {:.1e})", name, *p->loss, rel);
          any = true;
          equal = equal && rel <= kLossTolerance;
        }
        if (!any)
          line += ": no peer loss to compare";
        else if (equal)
          line += fmt::format(": loss equal within {:.0e} relative", kLossTolerance);
        else
          line += fmt::format(": LOSS MISMATCH (> {:.0e} relative)", kLossTolerance);
        loss_mismatch = loss_mismatch || (any && !equal);
        fmt::print("{}\n", line);
      } else {
        row.dense.skipped = row.chunks.skipped = peer_off;
      }
      std::fflush(stdout);
    }
    rows.push_back(std::move(row));
    RETURN_IF_ERROR(comm.Barrier(comm::DeadlineIn(std::chrono::hours(2))));
  }

  if (!root) return Status::Ok();
  // The sgemm reference after the steps, so that its buffers stay out of the steps' peak RSS.
  sgemm = SgemmGflops(threads);
  worker::SetGemmThreads(pool.size());
  fmt::print(
      "\n# {} on {} rank(s) x {} thread(s); CPU {}; BLAS kernel {}; OpenBLAS sgemm 2048^3 "
      "same run {:.1f} GFLOP/s; "
      "load before {} after {}\n",
      o.model, comm.size(), threads, machine.cpu, openblas_get_corename(), sgemm,
      machine.load_before, matrix::LoadAverage());
  fmt::print(
      "# split: shares of longctx's fwd+bwd rank-seconds (all ranks): GEMM = projections, "
      "MLP, LM head + CE (with norms, RoPE, SwiGLU); attention = forward, recompute and "
      "backward with exchanges; comm = the wait in those exchanges (part of attention) "
      "+ the gradient all-reduce\n");
  fmt::print("{:>8} {:>3} {:>7} {:>11} {:>11} {:>12} {:>8} {:>8} {:>6} {:>6} {:>6} {:>9}\n", "n",
             "P", "globals", "longctx/s", "torch-dns/s", "torch-chk/s", "x dense", "x chunks",
             "%GEMM", "%attn", "%comm", "MiB sent");
  for (const Row& r : rows) {
    double fb = 0, gemm = 0, attn = 0, cm = 0, sent = 0;
    for (const RankStep& s : r.ranks) {
      fb += s.fb + s.allreduce;
      gemm += s.gemm;
      attn += s.attention;
      cm += s.comm + s.allreduce;
      sent += s.sent;
    }
    const double lc = double(r.n) / r.best_s;
    auto ratio = [&](const PeerResult& p) {
      return p.best_s ? fmt::format("{:.2f}", lc / (double(r.n) / *p.best_s)) : std::string("-");
    };
    fmt::print(
        "{:>8} {:>3} {:>7} {:>11.0f} {:>11} {:>12} {:>8} {:>8} {:>6.1f} {:>6.1f} {:>6.1f} "
        "{:>9.2f}\n",
        r.n, comm.size(), r.globals, lc, TokS(double(r.n), r.dense.best_s),
        TokS(double(r.n), r.chunks.best_s), ratio(r.dense), ratio(r.chunks), 100.0 * gemm / fb,
        100.0 * attn / fb, 100.0 * cm / fb, MiB(sent));
  }
  for (const Row& r : rows) {
    const std::pair<const char*, const PeerResult*> peers[] = {{"torch-dense", &r.dense},
                                                               {"torch-chunks", &r.chunks}};
    for (const auto& [name, p] : peers) {
      if (!p->best_s) fmt::print("# n={} {}: skipped ({})\n", r.n, name, p->skipped);
    }
  }
  // The memory claim: peak RSS per rank next to the O(n/P x d x layers) estimate.
  for (const Row& r : rows) {
    for (size_t k = 0; k < r.ranks.size(); ++k) {
      const MemoryEstimate e = EstimateStepMemory(cfg, params->size(), int64_t(r.ranks[k].rows));
      fmt::print(
          "# memory n={} rank {}: peak RSS {:.1f} MiB (so far in this process; {:.1f} MiB "
          "before the first step); estimate for {:.0f} rows: params+grads {:.1f} MiB + "
          "activations {:.1f} MiB\n",
          r.n, k, MiB(r.ranks[k].peak_rss), MiB(rss_before), r.ranks[k].rows, MiB(e.params),
          MiB(e.activations));
    }
  }
  std::fflush(stdout);

  if (!o.json.empty()) {
    json j;
    j["model"] = o.model;
    j["ranks"] = comm.size();
    j["threads"] = threads;
    j["cpu"] = machine.cpu;
    j["cores"] = machine.cores;
    j["load_before"] = machine.load_before;
    j["load_after"] = matrix::LoadAverage();
    j["blas_config"] = openblas_get_config();
    j["blas_kernel"] = openblas_get_corename();
    j["openblas_coretype_env"] = coretype ? coretype : "";
    j["sgemm_gflops"] = sgemm;
    j["rss_before_bytes"] = rss_before;
    json rs = json::array();
    for (const Row& r : rows) {
      json jr;
      jr["n"] = r.n;
      jr["globals"] = r.globals;
      jr["loss"] = r.loss;
      jr["best_s"] = r.best_s;
      jr["median_s"] = r.median_s;
      jr["tokens_per_s"] = double(r.n) / r.best_s;
      json ranks = json::array();
      for (const RankStep& s : r.ranks) {
        const MemoryEstimate e = EstimateStepMemory(cfg, params->size(), int64_t(s.rows));
        ranks.push_back({{"rows", s.rows},
                         {"fwd_bwd_s", s.fb},
                         {"forward_s", s.fwd},
                         {"backward_s", s.bwd},
                         {"gemm_s", s.gemm},
                         {"attention_s", s.attention},
                         {"comm_wait_s", s.comm},
                         {"grad_allreduce_s", s.allreduce},
                         {"bytes_sent", s.sent},
                         {"bytes_received", s.received},
                         {"peak_rss_bytes", s.peak_rss},
                         {"estimate_params_bytes", e.params},
                         {"estimate_activation_bytes", e.activations}});
      }
      jr["ranks"] = ranks;
      jr["torch_dense"] = PeerJson(r.dense, r.n);
      jr["torch_chunks"] = PeerJson(r.chunks, r.n);
      rs.push_back(jr);
    }
    j["rows"] = rs;
    RETURN_IF_ERROR(WriteFileAtomically(o.json, j.dump(2) + "\n"));
  }
  if (!work_dir.empty()) {
    std::error_code ec;
    fs::remove_all(work_dir, ec);
  }
  if (loss_mismatch) {
    return Internal("the torch peer's loss differs from longctx's by more than {:.0e} relative",
                    kLossTolerance);
  }
  return Status::Ok();
}

}  // namespace longctx::bench
