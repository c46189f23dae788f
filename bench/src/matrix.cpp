// `longctx bench matrix`: plans the matrix, runs each cell as a `longctx run` subprocess, reads
// back report.json / hidden.npy / tokens.npy, computes the deviation from dense, and hands the
// records to the report writers (matrix_report.cpp) and the plot script (plot_matrix.py).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <thread>

#include <fmt/format.h>

#include "longctx/core/file.h"
#include "longctx/bench/matrix.h"
#include "longctx/core/byte_size.h"
#include "longctx/core/npy.h"
#include "matrix_internal.h"
#include "plot_matrix_py.h"  // kPlotMatrixPy: bench/plot_matrix.py, embedded at build time

namespace longctx::bench {
namespace fs = std::filesystem;
using matrix::RunRecord;
using matrix::kPlotMatrixPy;

namespace {

const std::vector<std::string> kKinds = {"dense", "window", "hybrid-union", "hybrid-weighted"};
const std::vector<std::string> kTasks = {"understand", "generate"};
const std::vector<std::string> kKvVariants = {"resident", "spilled-f32", "spilled-int8"};
// The calibration cap: dense runs without an estimate up to this many tokens; beyond it only when
// a smaller dense run of the same ranks and task gives an n^2 extrapolation.
constexpr int64_t kDenseCalibrationTokens = 16384;

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::vector<std::string> SplitWords(const std::string& text) {
  std::vector<std::string> out;
  std::string w;
  for (char c : text) {
    if (c == ' ') {
      if (!w.empty()) out.push_back(w);
      w.clear();
    } else {
      w.push_back(c);
    }
  }
  if (!w.empty()) out.push_back(w);
  return out;
}

std::string ShellQuote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789-_./:=,+") == std::string::npos) {
    return s;
  }
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string JoinCommand(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& a : argv) {
    if (!s.empty()) s.push_back(' ');
    s.append(ShellQuote(a));
  }
  return s;
}

// The command as typed (/proc/self/cmdline), for the report.
std::string OwnCommandLine() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> argv;
  std::string arg;
  while (std::getline(in, arg, '\0')) argv.push_back(arg);
  if (!argv.empty()) argv[0] = fs::path(argv[0]).filename().string();
  return JoinCommand(argv);
}

std::string HumanTokens(int64_t n) {
  if (n % (1024 * 1024) == 0) return fmt::format("{}M", n / (1024 * 1024));
  if (n % 1024 == 0) return fmt::format("{}K", n / 1024);
  return std::to_string(n);
}

// Which KV variants this build's `longctx run` supports: the spilled ones need the tiered KV
// store's flags, read from `longctx run --help`.
Result<std::vector<std::string>> SupportedKvVariants(const std::string& self,
                                                     const std::string& scratch) {
  const std::string log = scratch + "/runs/run-help.txt";
  ASSIGN_OR_RETURN(matrix::ProcessResult p, matrix::RunProcess({self, "run", "--help"}, log, 60));
  if (p.exit_code != 0) return Internal("'{} run --help' failed (exit {})", self, p.exit_code);
  std::ifstream in(log);
  const std::string help((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> out = {"resident"};
  if (help.find("--kv-device-budget") != std::string::npos &&
      help.find("--kv-codec") != std::string::npos) {
    out.push_back("spilled-f32");
    out.push_back("spilled-int8");
  }
  return out;
}

struct Plan {
  std::string self, mpirun, python;
  std::vector<int64_t> lengths;
  std::vector<std::string> kinds, tasks, kv;
};

Status Validate(const MatrixOptions& o, Plan* p) {
  if (o.lengths.empty()) return InvalidArgument("--lengths: give at least one length");
  for (const std::string& l : o.lengths) {
    ASSIGN_OR_RETURN(int64_t n, ParseTokenCount(l));
    p->lengths.push_back(n);
  }
  std::sort(p->lengths.begin(), p->lengths.end());
  p->lengths.erase(std::unique(p->lengths.begin(), p->lengths.end()), p->lengths.end());
  if (o.ranks.empty()) return InvalidArgument("--ranks: give at least one rank count");
  for (int r : o.ranks) {
    if (r < 1 || r > 256) return InvalidArgument("--ranks: {} is not in [1, 256]", r);
  }
  for (const std::string& k : o.kinds) {
    if (!Contains(kKinds, k)) {
      return InvalidArgument("--kinds: '{}' is not dense, window, hybrid-union or hybrid-weighted", k);
    }
  }
  for (const std::string& k : kKinds) {
    if (Contains(o.kinds, k)) p->kinds.push_back(k);  // dense first: it is the reference
  }
  if (p->kinds.empty()) return InvalidArgument("--kinds: give at least one kind");
  for (const std::string& t : o.tasks) {
    if (!Contains(kTasks, t)) return InvalidArgument("--tasks: '{}' is not understand or generate", t);
  }
  for (const std::string& t : kTasks) {
    if (Contains(o.tasks, t)) p->tasks.push_back(t);
  }
  if (p->tasks.empty()) return InvalidArgument("--tasks: give at least one task");
  for (const std::string& k : o.kv) {
    if (k != "auto" && !Contains(kKvVariants, k)) {
      return InvalidArgument("--kv: '{}' is not auto, resident, spilled-f32 or spilled-int8", k);
    }
  }
  if (o.generate < 1 || o.generate > 100000) {
    return InvalidArgument("--generate: {} is not in [1, 100000]", o.generate);
  }
  if (!(o.time_limit_s > 0)) return InvalidArgument("--time-limit must be > 0 seconds");
  if (!(o.dense_limit_s >= 0)) return InvalidArgument("--dense-limit must be >= 0 seconds");
  if (!(o.dense_budget_s >= 0)) return InvalidArgument("--dense-budget must be >= 0 seconds");
  if (!(o.weighted_alpha >= 0 && o.weighted_alpha <= 1)) {
    return InvalidArgument("--weighted-alpha: {} is not in [0, 1]", o.weighted_alpha);
  }
  if (o.threads < 0) return InvalidArgument("--threads must be >= 0");
  RETURN_IF_ERROR(ParseByteSize(o.kv_device_budget, "--kv-device-budget").status());
  if (o.out.empty()) return InvalidArgument("--out: give a directory");
  if (o.query.empty()) return InvalidArgument("--query must not be empty");

  std::error_code ec;
  p->self = fs::read_symlink("/proc/self/exe", ec).string();
  if (ec) return Internal("cannot read /proc/self/exe: {}", ec.message());
  if (*std::max_element(o.ranks.begin(), o.ranks.end()) > 1) {
    p->mpirun = matrix::FindOnPath("mpirun");
    if (p->mpirun.empty()) {
      return FailedPrecondition("--ranks above 1 need mpirun on PATH (openmpi-bin)");
    }
  }
  if (o.plots) {
    p->python = o.python;
    if (p->python.empty()) {
      p->python = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3"
                                                        : matrix::FindOnPath("python3");
    }
    if (p->python.empty() || access(p->python.c_str(), X_OK) != 0) {
      return FailedPrecondition(
          "the plots need python3 with matplotlib (python3-matplotlib; launch/install-deps.sh), "
          "or --no-plots");
    }
  }
  return Status::Ok();
}

int ThreadsPerRank(const MatrixOptions& o, int ranks) {
  if (o.threads > 0) return o.threads;
  const int cores = std::max(1, int(std::thread::hardware_concurrency()));
  return std::max(1, cores / ranks);
}

std::vector<std::string> BuildArgv(const MatrixOptions& o, const Plan& p, const RunRecord& r,
                                   const std::string& doc, bool dump_hidden) {
  std::vector<std::string> a;
  if (r.ranks > 1) {
    a.push_back(p.mpirun);
    for (const std::string& w : SplitWords(o.mpirun_args)) a.push_back(w);
    a.push_back("-np");
    a.push_back(std::to_string(r.ranks));
  }
  a.insert(a.end(), {p.self, "run", "--model", o.model, "--input", doc, "--out", r.dir,
                     "--progress", "off", "--threads", std::to_string(ThreadsPerRank(o, r.ranks))});
  const int64_t appended = r.task == "generate" ? int64_t(o.query.size()) + o.generate : 0;
  if (r.kind == "dense") {
    // A window covering every position (document, question, answer): every query sees every
    // earlier key, i.e. full causal attention through the same kernel.
    a.insert(a.end(), {"--window", std::to_string(r.n + appended), "--global-max", "0"});
  } else if (r.kind == "window") {
    a.insert(a.end(), {"--global-max", "0"});
  } else if (r.kind == "hybrid-union") {
    a.insert(a.end(), {"--fusion", "union"});
  } else {
    a.insert(a.end(), {"--fusion", fmt::format("weighted:{}", o.weighted_alpha)});
  }
  if (r.task == "generate") {
    a.insert(a.end(), {"--query", o.query, "--generate", std::to_string(o.generate)});
  }
  if (r.kv == "spilled-f32" || r.kv == "spilled-int8") {
    a.insert(a.end(), {"--kv-device-budget", o.kv_device_budget, "--kv-codec",
                       r.kv == "spilled-f32" ? "f32" : "int8"});
  }
  if (dump_hidden) a.push_back("--dump-hidden");
  return a;
}

double NumberOr(const nlohmann::json& j, double fallback) {
  return j.is_number() ? j.get<double>() : fallback;
}

// Reads report.json (and for generate, the generated tokens from tokens.npy) into `r`.
Status Collect(RunRecord& r, int64_t generate) {
  const std::string path = r.dir + "/report.json";
  std::ifstream in(path);
  if (!in) return NotFound("{}: missing after a successful run", path);
  try {
    r.report = nlohmann::json::parse(in);
    const auto& j = r.report;
    r.prefill_s = j.at("seconds").at("prefill").get<double>();
    r.tokens_per_second = j.at("tokens_per_second").get<double>();
    if (j.contains("decode_ms_per_token") && j["decode_ms_per_token"].is_number()) {
      r.decode_ms_per_token = j["decode_ms_per_token"].get<double>();
    }
    for (const auto& pr : j.at("per_rank")) {
      r.peak_rss_max = std::max(r.peak_rss_max, NumberOr(pr.value("peak_rss_bytes", nlohmann::json()), 0));
      r.comm_recv_max =
          std::max(r.comm_recv_max, NumberOr(pr.value("comm_bytes_received", nlohmann::json()), 0));
      if (pr.contains("kv") && pr["kv"].is_object()) {
        const auto& kv = pr["kv"];
        auto peak = [&](const char* tier) {
          return kv.contains(tier) && kv[tier].is_object()
                     ? NumberOr(kv[tier].value("peak_bytes", nlohmann::json()), 0)
                     : 0.0;
        };
        r.kv_peak_device = std::max(r.kv_peak_device, peak("device"));
        r.kv_peak_host = std::max(r.kv_peak_host, peak("host"));
        r.kv_peak_remote = std::max(r.kv_peak_remote, peak("remote"));
        r.kv_demotions += NumberOr(kv.value("demotions", nlohmann::json()), 0);
        r.kv_loads += NumberOr(kv.value("loads", nlohmann::json()), 0);
        r.kv_prefetch_hits += NumberOr(kv.value("prefetch_hits", nlohmann::json()), 0);
        r.kv_prefetch_misses += NumberOr(kv.value("prefetch_misses", nlohmann::json()), 0);
        r.kv_stall_s = std::max(r.kv_stall_s, NumberOr(kv.value("stall_seconds", nlohmann::json()), 0));
      }
    }
    if (j.contains("kv_bytes")) {
      const auto& kv = j["kv_bytes"];
      r.kv_device = NumberOr(kv.value("device", nlohmann::json()), 0);
      r.kv_host = NumberOr(kv.value("host", nlohmann::json()), 0);
      r.kv_remote = NumberOr(kv.value("remote", nlohmann::json()), 0);
    }
  } catch (const nlohmann::json::exception& e) {
    return DataLoss("{}: unexpected report.json: {}", path, e.what());
  }
  if (r.task == "generate") {
    ASSIGN_OR_RETURN(NpyArray t, ReadNpy(r.dir + "/tokens.npy"));
    if (t.dtype != DType::kI32 || t.shape.size() != 1 || t.numel() < generate) {
      return DataLoss("{}/tokens.npy: expected int32 tokens ending in {} generated ones", r.dir,
                      generate);
    }
    const int32_t* ids = t.as<int32_t>();
    r.generated.assign(ids + t.numel() - generate, ids + t.numel());
  }
  return Status::Ok();
}

// Hidden states of `r` against the dense run `ref` (both dumped with --dump-hidden).
Status HiddenDeviation(RunRecord& r, const RunRecord& ref) {
  ASSIGN_OR_RETURN(NpyArray a, ReadNpy(r.dir + "/hidden.npy"));
  ASSIGN_OR_RETURN(NpyArray b, ReadNpy(ref.dir + "/hidden.npy"));
  if (a.dtype != DType::kF32 || b.dtype != DType::kF32 || a.shape != b.shape) {
    return DataLoss("{}/hidden.npy and {}/hidden.npy differ in dtype or shape", r.dir, ref.dir);
  }
  const float* x = a.as<float>();
  const float* y = b.as<float>();
  r.rel_error = RelativeError(x, y, a.numel());
  double worst = 0;
  for (int64_t i = 0; i < a.numel(); ++i) worst = std::max(worst, std::fabs(double(x[i]) - double(y[i])));
  r.max_abs_error = worst;
  return Status::Ok();
}

void TokenAgreement(const std::vector<int32_t>& a, const std::vector<int32_t>& ref,
                    std::optional<bool>* agree, std::optional<int64_t>* matched) {
  int64_t k = 0;
  while (k < int64_t(a.size()) && k < int64_t(ref.size()) && a[size_t(k)] == ref[size_t(k)]) ++k;
  if (agree) *agree = a == ref;
  if (matched) *matched = k;
}

// Decides whether dense can run at r.n: an n^2 extrapolation of the prefill time (and the
// linear/n-scaled decode) from the largest smaller dense run of the same ranks and task, and the
// measured memory growth against MemAvailable. Sets r.status = "skipped" with the reason if not.
void EstimateDense(RunRecord& r, std::span<const RunRecord> done, const MatrixOptions& o) {
  double dense_spent = 0;  // seconds the dense runs so far took, start to exit
  for (const RunRecord& d : done) {
    if (d.kind == "dense") dense_spent += d.wall_s;
  }
  const RunRecord* base = nullptr;
  std::vector<const RunRecord*> dense;
  for (const RunRecord& d : done) {
    if (d.kind != "dense" || d.ranks != r.ranks || d.task != r.task || d.n >= r.n) continue;
    if (d.status == "timeout" || d.status == "failed" || d.status == "skipped") {
      if (!base || d.n > base->n) base = &d;
      continue;
    }
    dense.push_back(&d);
    if (!base || d.n > base->n) base = &d;
  }
  if (base && base->status != "ok") {
    r.status = "skipped";
    r.reason = fmt::format("the {}-token dense run ({} rank(s), {}) was {}; a longer one would be "
                           "too", base->n, r.ranks, r.task, base->status);
    return;
  }
  if (!base) {
    if (r.n <= kDenseCalibrationTokens) return;  // small enough to run unestimated
    r.status = "skipped";
    r.reason = fmt::format("no dense run of <= {} tokens at {} rank(s) to extrapolate its n^2 "
                           "time from (add a shorter length)", kDenseCalibrationTokens, r.ranks);
    return;
  }
  const double ratio = double(r.n) / double(base->n);
  double est = base->prefill_s * ratio * ratio;
  if (base->decode_ms_per_token) {
    est += *base->decode_ms_per_token * 1e-3 * ratio * double(o.query.size() + size_t(o.generate));
  }
  // Memory: the growth measured between dense runs (exponent clamped to [1, 2]), else linear.
  double mem_exp = 1.0;
  if (dense.size() >= 2) {
    std::vector<double> x, y;
    for (const RunRecord* d : dense) {
      x.push_back(double(d->n));
      y.push_back(d->peak_rss_max);
    }
    Result<PowerFit> f = FitPowerLaw(x, y);
    if (f.ok()) mem_exp = std::clamp(f->exponent, 1.0, 2.0);
  }
  r.est_prefill_s = est;
  r.est_peak_rss = base->peak_rss_max * std::pow(ratio, mem_exp);
  r.est_basis = fmt::format("{}-token dense run: {:.2f} s prefill x ({}/{})^2; peak {:.0f} MiB "
                            "per rank x ratio^{:.2f}", base->n, base->prefill_s, r.n, base->n,
                            base->peak_rss_max / 1048576.0, mem_exp);
  const double avail = matrix::MemAvailableBytes();
  if (o.dense_budget_s > 0 && dense_spent + est > o.dense_budget_s) {
    r.status = "skipped";
    r.reason = fmt::format("dense at {} tokens: estimated {:.1f} s (n^2 from the {}); with the "
                           "{:.0f} s dense runs have taken so far that is over the {:.0f} s dense "
                           "budget", r.n, est, r.est_basis, dense_spent, o.dense_budget_s);
    return;
  }
  const double limit = o.dense_limit_s > 0 ? o.dense_limit_s : 0.8 * o.time_limit_s;
  if (est > limit) {
    r.status = "skipped";
    r.reason = fmt::format("dense at {} tokens: estimated {:.1f} s (n^2 from the {}), over the "
                           "{:.1f} s dense time limit", r.n, est, r.est_basis, limit);
  } else if (avail > 0 && *r.est_peak_rss * r.ranks > 0.8 * avail) {
    r.status = "skipped";
    r.reason = fmt::format("dense at {} tokens: estimated {:.0f} MiB per rank x {} ranks is over "
                           "80% of the {:.0f} MiB available", r.n, *r.est_peak_rss / 1048576.0,
                           r.ranks, avail / 1048576.0);
  }
}

void PrintRun(size_t index, size_t total, const RunRecord& r) {
  std::string what;
  if (r.status == "ok") {
    what = fmt::format("prefill {:.2f} s ({:.0f} tokens/s), peak {:.0f} MiB/rank", r.prefill_s,
                       r.tokens_per_second, r.peak_rss_max / 1048576.0);
    if (r.decode_ms_per_token) what += fmt::format(", decode {:.2f} ms/token", *r.decode_ms_per_token);
  } else {
    what = fmt::format("{}: {}", r.status, r.reason);
  }
  fmt::print("[{}/{}] {} tokens, {} rank(s), {}, {}, {}: {}\n", index, total, HumanTokens(r.n),
             r.ranks, r.kind, r.task, r.kv, what);
  std::fflush(stdout);
}

}  // namespace

Status RunMatrix(const MatrixOptions& o) {
  Plan p;
  RETURN_IF_ERROR(Validate(o, &p));
  // Read before anything runs: a bad file is refused at once, not after the matrix.
  std::optional<nlohmann::json> accuracy;
  if (!o.longeval.empty()) {
    ASSIGN_OR_RETURN(accuracy, matrix::AccuracyAxis(o.longeval));
  }
  std::error_code ec;
  fs::create_directories(o.out + "/runs", ec);
  if (ec) return InvalidArgument("{}: cannot create the output directory: {}", o.out, ec.message());
  const std::string out = fs::absolute(o.out).string();
  matrix::MachineInfo machine = matrix::ReadMachineInfo();

  // KV variants: what the user asked for, intersected with what `longctx run` supports.
  ASSIGN_OR_RETURN(std::vector<std::string> supported, SupportedKvVariants(p.self, out));
  std::vector<std::string> kv_unavailable;
  for (const std::string& k : kKvVariants) {
    const bool wanted = Contains(o.kv, "auto") || Contains(o.kv, k);
    if (!wanted) continue;
    if (Contains(supported, k)) {
      p.kv.push_back(k);
    } else if (!Contains(o.kv, "auto")) {
      return FailedPrecondition("--kv {}: this build's `longctx run` has no --kv-device-budget / "
                                "--kv-codec (the tiered KV store)", k);
    } else {
      kv_unavailable.push_back(k);
    }
  }
  if (p.kv.empty()) return InvalidArgument("--kv: no variant selected");

  // The plan, in order: per length, per ranks, per task; dense first.
  std::vector<RunRecord> runs;
  for (int64_t n : p.lengths) {
    for (int ranks : o.ranks) {
      for (const std::string& task : p.tasks) {
        for (const std::string& kind : p.kinds) {
          std::vector<std::string> variants = {"resident"};
          if (task == "generate" && kind == "hybrid-union") variants = p.kv;
          for (const std::string& kv : variants) {
            RunRecord r;
            r.n = n;
            r.ranks = ranks;
            r.kind = kind;
            r.task = task;
            r.kv = kv;
            r.dir = fmt::format("{}/runs/{}_p{}_{}_{}_{}", out, HumanTokens(n), ranks, kind, task, kv);
            runs.push_back(std::move(r));
          }
        }
      }
    }
  }
  fmt::print("bench matrix: {} runs planned ({} lengths x {} rank counts x kinds {} x tasks {}; "
             "KV variants {}{}), time limit {:.0f} s per run, output {}\n",
             runs.size(), p.lengths.size(), o.ranks.size(), fmt::join(p.kinds, ","),
             fmt::join(p.tasks, ","), fmt::join(p.kv, ","),
             kv_unavailable.empty() ? std::string()
                                    : fmt::format(" (not in this build: {})", fmt::join(kv_unavailable, ",")),
             o.time_limit_s, out);
  std::fflush(stdout);

  const std::string docs = out + "/docs";
  fs::create_directories(docs, ec);
  if (ec) return InvalidArgument("{}: cannot create: {}", docs, ec.message());
  for (size_t i = 0; i < runs.size(); ++i) {
    RunRecord& r = runs[i];
    const std::string doc = fmt::format("{}/doc_{}.txt", docs, r.n);
    if (!fs::exists(doc)) {
      RETURN_IF_ERROR(WriteFileAtomically(doc, MakeSampleDocument(r.n))
                          .WithContext("the sample document"));
    }
    // Hidden states are dumped (understand) only where a dense reference exists to compare with.
    bool dump = false;
    const RunRecord* dense_ref = nullptr;
    if (r.task == "understand") {
      for (size_t j = 0; j < i; ++j) {
        const RunRecord& d = runs[j];
        if (d.kind == "dense" && d.status == "ok" && d.n == r.n && d.ranks == r.ranks &&
            d.task == r.task) {
          dense_ref = &d;
        }
      }
      dump = r.kind == "dense" || dense_ref != nullptr;
    }
    if (r.kind == "dense") {
      EstimateDense(r, std::span<const RunRecord>(runs.data(), i), o);
    }
    r.argv = BuildArgv(o, p, r, doc, dump);
    if (r.status == "skipped") {
      PrintRun(i + 1, runs.size(), r);
      continue;
    }
    fs::remove_all(r.dir, ec);
    fs::create_directories(r.dir, ec);
    if (ec) return InvalidArgument("{}: cannot create: {}", r.dir, ec.message());
    const std::string log = r.dir + "/log.txt";
    ASSIGN_OR_RETURN(matrix::ProcessResult pr, matrix::RunProcess(r.argv, log, o.time_limit_s));
    r.wall_s = pr.seconds;
    if (pr.timed_out) {
      r.status = "timeout";
      r.reason = fmt::format("killed after the {:.0f} s time limit", o.time_limit_s);
    } else if (pr.exit_code != 0) {
      r.status = "failed";
      r.reason = pr.signal ? fmt::format("killed by signal {}", pr.signal)
                           : fmt::format("exit {}: {}", pr.exit_code, matrix::LastLogLine(log));
    } else {
      Status st = Collect(r, o.generate);
      r.status = st.ok() ? "ok" : "failed";
      if (!st.ok()) r.reason = st.message();
    }
    if (r.status == "ok" && dump) {
      Status st = HiddenDeviation(r, dense_ref ? *dense_ref : r);
      if (!st.ok()) {
        r.status = "failed";
        r.reason = st.message();
      }
    }
    PrintRun(i + 1, runs.size(), r);
    // Generated tokens against dense (and a spilled variant against its resident run).
    if (r.status == "ok" && r.task == "generate") {
      for (size_t j = 0; j <= i; ++j) {
        const RunRecord& d = runs[j];
        if (d.status != "ok" || d.n != r.n || d.ranks != r.ranks || d.task != r.task) continue;
        if (d.kind == "dense") TokenAgreement(r.generated, d.generated, &r.tokens_agree, &r.tokens_matched);
        if (r.kv != "resident" && d.kind == r.kind && d.kv == "resident") {
          std::optional<bool> same;
          TokenAgreement(r.generated, d.generated, &same, nullptr);
          r.agrees_with_resident = same;
        }
      }
    }
    // Once the last run of this (n, ranks, task) group is done, its bulky files can go.
    const bool group_done = i + 1 == runs.size() || runs[i + 1].n != r.n ||
                            runs[i + 1].ranks != r.ranks || runs[i + 1].task != r.task;
    if (group_done && !o.keep_runs) {
      for (size_t j = 0; j <= i; ++j) {
        if (runs[j].n == r.n && runs[j].ranks == r.ranks && runs[j].task == r.task) {
          fs::remove_all(runs[j].dir, ec);
        }
      }
    }
  }
  if (!o.keep_runs) {
    fs::remove_all(docs, ec);
    fs::remove(out + "/runs/run-help.txt", ec);
    fs::remove(out + "/runs", ec);  // only if empty
  }
  machine.load_after = matrix::LoadAverage();

  // The report.
  nlohmann::json m;
  m["command"] = o.command_line.empty() ? OwnCommandLine() : o.command_line;
  m["machine"] = {{"host", machine.host},           {"cpu", machine.cpu},
                  {"cores", machine.cores},         {"mem_total_bytes", machine.mem_total},
                  {"mem_available_bytes", machine.mem_available},
                  {"date_utc", machine.date_utc},   {"loadavg_before", machine.load_before},
                  {"loadavg_after", machine.load_after}};
  m["options"] = {{"lengths", p.lengths},
                  {"ranks", o.ranks},
                  {"kinds", p.kinds},
                  {"tasks", p.tasks},
                  {"kv", p.kv},
                  {"kv_unavailable", kv_unavailable},
                  {"kv_device_budget", o.kv_device_budget},
                  {"model", o.model},
                  {"generate", o.generate},
                  {"query", o.query},
                  {"weighted_alpha", o.weighted_alpha},
                  {"time_limit_s", o.time_limit_s},
                  {"dense_limit_s", o.dense_limit_s > 0 ? o.dense_limit_s : 0.8 * o.time_limit_s},
                  {"dense_budget_s", o.dense_budget_s},
                  {"dense_calibration_tokens", kDenseCalibrationTokens}};
  nlohmann::json jruns = nlohmann::json::array();
  for (const RunRecord& r : runs) jruns.push_back(matrix::RunToJson(r));
  m["runs"] = jruns;
  m["fits"] = matrix::ComputeFits(runs);
  m["headlines"] = matrix::ComputeHeadlines(runs, o);
  if (accuracy) m["accuracy"] = std::move(*accuracy);
  m["plots"] = nlohmann::json::array();
  const std::vector<std::string> plot_files = {"memory_vs_length.png", "throughput_vs_length.png",
                                               "prefill_time_vs_length.png",
                                               "decode_latency_vs_length.png", "kv_bytes_per_tier.png"};
  if (o.plots) m["plots"] = plot_files;

  {
    RETURN_IF_ERROR(WriteFileAtomically(out + "/matrix.json", m.dump(1) + "\n"));
    RETURN_IF_ERROR(WriteFileAtomically(out + "/matrix.md", matrix::RenderMarkdown(m)));
  }

  fmt::print("\ngrowth exponents (least squares on log-log; y ~ n^e):\n");
  for (const std::string& line : matrix::FitLines(m["fits"])) fmt::print("  {}\n", line);
  fmt::print("\nheadlines (measured vs the seed's claims):\n");
  for (const auto& h : m["headlines"]) {
    fmt::print("  {}: {}\n", h.value("claim", ""), h.value("verdict", ""));
  }
  int failed = 0, skipped = 0;
  for (const RunRecord& r : runs) {
    failed += r.status == "failed" || r.status == "timeout";
    skipped += r.status == "skipped";
  }
  fmt::print("\n{} runs: {} ok, {} skipped (reasons in matrix.md), {} failed or timed out\n",
             runs.size(), runs.size() - size_t(failed + skipped), skipped, failed);

  if (o.plots) {
    const std::string script = out + "/plot_matrix.py";
    RETURN_IF_ERROR(WriteFileAtomically(script, kPlotMatrixPy));
    const std::string log = out + "/plots.log";
    ASSIGN_OR_RETURN(matrix::ProcessResult pr,
                     matrix::RunProcess({p.python, script, out + "/matrix.json", out}, log, 300));
    if (pr.exit_code != 0) {
      return FailedPrecondition("plots: {} failed: {} (needs python3-matplotlib; "
                                "launch/install-deps.sh installs it)", script,
                                matrix::LastLogLine(log));
    }
    for (const std::string& f : plot_files) {
      if (!fs::exists(out + "/" + f)) return Internal("plots: {}/{} was not written", out, f);
    }
    fmt::print("plots: {}\n", fmt::join(plot_files, ", "));
  }
  fmt::print("wrote {}/matrix.json and {}/matrix.md\n", out, out);
  return Status::Ok();
}

}  // namespace longctx::bench
