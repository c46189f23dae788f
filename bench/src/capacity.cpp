#include "longctx/bench/capacity.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "longctx/attention/global_selection.h"
#include "longctx/bench/matrix.h"
#include "longctx/core/file.h"
#include "longctx/model/builtin.h"
#include "longctx/model/config.h"
#include "matrix_internal.h"

namespace longctx::bench {
namespace {

using Json = nlohmann::ordered_json;

// Least squares for y = X beta (rows of X are the regressors), by the normal equations
// (k <= 3 unknowns, well-conditioned after scaling each column by its largest value).
Result<std::vector<double>> LeastSquares(const std::vector<std::vector<double>>& X,
                                         const std::vector<double>& y) {
  const size_t m = X.size(), k = X.empty() ? 0 : X[0].size();
  if (m < k || k == 0) return InvalidArgument("fit: {} runs for {} unknowns", m, k);
  std::vector<double> scale(k, 1e-300);
  for (const auto& row : X) {
    for (size_t j = 0; j < k; ++j) scale[j] = std::max(scale[j], std::fabs(row[j]));
  }
  std::vector<std::vector<double>> A(k, std::vector<double>(k + 1, 0.0));
  for (size_t i = 0; i < m; ++i) {
    for (size_t a = 0; a < k; ++a) {
      for (size_t b = 0; b < k; ++b) A[a][b] += X[i][a] / scale[a] * X[i][b] / scale[b];
      A[a][k] += X[i][a] / scale[a] * y[i];
    }
  }
  for (size_t c = 0; c < k; ++c) {  // Gauss-Jordan with partial pivoting
    size_t p = c;
    for (size_t r = c + 1; r < k; ++r) {
      if (std::fabs(A[r][c]) > std::fabs(A[p][c])) p = r;
    }
    if (std::fabs(A[p][c]) < 1e-12) return InvalidArgument("fit: the runs do not separate the terms");
    std::swap(A[c], A[p]);
    for (size_t r = 0; r < k; ++r) {
      if (r == c) continue;
      const double f = A[r][c] / A[c][c];
      for (size_t j = c; j <= k; ++j) A[r][j] -= f * A[c][j];
    }
  }
  std::vector<double> beta(k);
  for (size_t j = 0; j < k; ++j) beta[j] = A[j][k] / A[j][j] / scale[j];
  return beta;
}

// Fits y = X beta with beta >= 0: a negative coefficient (noise on a small term) is dropped and
// the rest refitted, so no prediction ever subtracts time or memory.
Result<std::vector<double>> NonNegativeFit(const std::vector<std::vector<double>>& X,
                                           const std::vector<double>& y) {
  const size_t k = X.empty() ? 0 : X[0].size();
  std::vector<bool> keep(k, true);
  for (size_t round = 0; round < k; ++round) {
    std::vector<size_t> cols;
    for (size_t j = 0; j < k; ++j) {
      if (keep[j]) cols.push_back(j);
    }
    if (cols.empty()) return std::vector<double>(k, 0.0);
    std::vector<std::vector<double>> Xs;
    for (const auto& row : X) {
      std::vector<double> r;
      for (size_t j : cols) r.push_back(row[j]);
      Xs.push_back(std::move(r));
    }
    ASSIGN_OR_RETURN(std::vector<double> b, LeastSquares(Xs, y));
    std::vector<double> beta(k, 0.0);
    bool negative = false;
    for (size_t i = 0; i < cols.size(); ++i) {
      beta[cols[i]] = b[i];
      if (b[i] < 0) {
        keep[cols[i]] = false;
        negative = true;
      }
    }
    if (!negative) return beta;
  }
  return std::vector<double>(k, 0.0);
}

std::vector<std::string> Words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> w;
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

// Runs `longctx run` (under mpirun when ranks > 1) on a document of n bytes; returns its
// report.json.
Result<nlohmann::json> MeasureRun(const std::string& binary, const std::string& model,
                                  const std::string& mpirun_args, int ranks, int threads,
                                  int64_t n, const std::string& query, int64_t generate,
                                  const std::string& dir,
                                  const std::vector<std::string>& extra = {}) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string doc = dir + "/doc.txt";
  RETURN_IF_ERROR(WriteFileAtomically(doc, MakeSampleDocument(n)));
  std::vector<std::string> argv;
  // The real path: under mpirun, "/proc/self/exe" would name the MPI daemon.
  std::string self = binary;
  if (self == "/proc/self/exe") {
    std::error_code link_ec;
    self = std::filesystem::read_symlink("/proc/self/exe", link_ec).string();
    if (link_ec) return ErrnoStatus(link_ec.value(), "/proc/self/exe");
  }
  if (ranks > 1) {
    const std::string mpirun = matrix::FindOnPath("mpirun");
    if (mpirun.empty()) return FailedPrecondition("--ranks above 1 need mpirun on PATH");
    argv.push_back(mpirun);
    for (const std::string& w : Words(mpirun_args)) argv.push_back(w);
    argv.insert(argv.end(), {"-np", std::to_string(ranks)});
  }
  argv.insert(argv.end(), {self, "run", "--model", model, "--input", doc, "--out", dir + "/out",
                           "--progress", "off", "--threads", std::to_string(threads), "--query",
                           query, "--generate", std::to_string(generate)});
  argv.insert(argv.end(), extra.begin(), extra.end());
  ASSIGN_OR_RETURN(matrix::ProcessResult r, matrix::RunProcess(argv, dir + "/log.txt", 1800.0));
  if (r.exit_code != 0) {
    return Internal("run of {} tokens on {} rank(s) failed (exit {}, signal {}): {}", n, ranks,
                    r.exit_code, r.signal, matrix::LastLogLine(dir + "/log.txt"));
  }
  std::ifstream in(dir + "/out/report.json");
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    return DataLoss("{}/out/report.json: {}", dir, e.what());
  }
}

constexpr const char* kQuery = "Who pays for the goods of lot 35?";  // 33 tokens (bytes)

}  // namespace

// ---- the model's shape ---------------------------------------------------------------------

int64_t ModelShape::Globals(int64_t n) const {
  attention::SelectionConfig s;
  s.global_ratio = global_ratio;
  s.global_max = -1;
  return attention::GlobalBudget(n, s);
}

double ModelShape::DenseFlopsPerRow() const {
  const double qkvo = double(hidden) * double(heads * head_dim) * 2 +
                      double(hidden) * double(kv_heads * head_dim) * 2;
  const double mlp = 3.0 * double(hidden) * double(intermediate);
  return 2.0 * double(layers) * (qkvo + mlp);
}

int64_t ModelShape::WeightBytes() const {
  const int64_t per_layer = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2 +
                            3 * hidden * intermediate + 2 * hidden;
  return 4 * (layers * per_layer + 2 * vocab * hidden + hidden);
}

int64_t ModelShape::KvBytesPerRow() const { return layers * 2 * kv_heads * head_dim * 4; }

Result<ModelShape> LoadModelShape(const std::string& model) {
  model::ModelConfig c;
  if (model.rfind("builtin:", 0) == 0) {
    ASSIGN_OR_RETURN(c, model::PresetConfig(model.substr(8)));
  } else {
    ASSIGN_OR_RETURN(c, model::LoadModelConfig(model));
  }
  ModelShape s;
  s.layers = c.num_hidden_layers;
  s.hidden = c.hidden_size;
  s.heads = c.num_attention_heads;
  s.kv_heads = c.num_key_value_heads;
  s.head_dim = c.head_dim;
  s.intermediate = c.intermediate_size;
  s.vocab = c.vocab_size;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) s.window = std::max(s.window, c.Window(l));
  s.global_ratio = c.hybrid.global_ratio;
  return s;
}

// ---- the profile ---------------------------------------------------------------------------

Status SaveProfile(const MachineProfile& p, const std::string& path) {
  const ModelShape& s = p.shape;
  Json j = {
      {"model", p.model}, {"cpu", p.cpu}, {"date_utc", p.date_utc}, {"cores", p.cores},
      {"threads", p.threads},
      {"prefill", {{"row_core_seconds", p.prefill_row_s},
                   {"row_exponent", p.prefill_row_exponent},
                   {"global_row_core_seconds", p.prefill_global_row_s},
                   {"thread_gain", p.thread_gain}}},
      {"decode", {{"token_core_seconds", p.decode_token_s},
                  {"scan_row_core_seconds", p.decode_scan_row_s}}},
      {"memory", {{"base_bytes", p.rss_base_bytes},
                  {"row_bytes", p.rss_row_bytes},
                  {"doc_token_bytes", p.rss_doc_token_bytes}}},
      {"link", {{"gbps", p.link_gbps}, {"latency_us", p.link_latency_us}}},
      {"shape", {{"layers", s.layers}, {"hidden", s.hidden}, {"heads", s.heads},
                 {"kv_heads", s.kv_heads}, {"head_dim", s.head_dim},
                 {"intermediate", s.intermediate}, {"vocab", s.vocab}, {"window", s.window},
                 {"global_ratio", s.global_ratio}}}};
  return WriteFileAtomically(path, j.dump(2) + "\n");
}

Result<MachineProfile> LoadProfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("{}: no such profile (make one with `longctx bench profile`)", path);
  MachineProfile p;
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    p.model = j.at("model").get<std::string>();
    p.cpu = j.value("cpu", "");
    p.date_utc = j.value("date_utc", "");
    p.cores = j.at("cores").get<int>();
    p.threads = j.at("threads").get<int>();
    p.prefill_row_s = j.at("prefill").at("row_core_seconds").get<double>();
    p.prefill_row_exponent = j.at("prefill").at("row_exponent").get<double>();
    p.thread_gain = j.at("prefill").at("thread_gain").get<double>();
    p.prefill_global_row_s = j.at("prefill").at("global_row_core_seconds").get<double>();
    p.decode_token_s = j.at("decode").at("token_core_seconds").get<double>();
    p.decode_scan_row_s = j.at("decode").at("scan_row_core_seconds").get<double>();
    p.rss_base_bytes = j.at("memory").at("base_bytes").get<double>();
    p.rss_row_bytes = j.at("memory").at("row_bytes").get<double>();
    p.rss_doc_token_bytes = j.at("memory").at("doc_token_bytes").get<double>();
    p.link_gbps = j.at("link").at("gbps").get<double>();
    p.link_latency_us = j.at("link").at("latency_us").get<double>();
    const auto& s = j.at("shape");
    p.shape.layers = s.at("layers").get<int64_t>();
    p.shape.hidden = s.at("hidden").get<int64_t>();
    p.shape.heads = s.at("heads").get<int64_t>();
    p.shape.kv_heads = s.at("kv_heads").get<int64_t>();
    p.shape.head_dim = s.at("head_dim").get<int64_t>();
    p.shape.intermediate = s.at("intermediate").get<int64_t>();
    p.shape.vocab = s.at("vocab").get<int64_t>();
    p.shape.window = s.at("window").get<int64_t>();
    p.shape.global_ratio = s.at("global_ratio").get<double>();
  } catch (const std::exception& e) {
    return InvalidArgument("{}: not a machine profile: {}", path, e.what());
  }
  if (p.cores < 1 || p.threads < 1 || p.link_gbps <= 0 || p.shape.layers < 1) {
    return InvalidArgument("{}: not a machine profile: cores, threads, link and shape must be "
                           "positive", path);
  }
  return p;
}

// ---- prediction ----------------------------------------------------------------------------

Result<PlanResult> Predict(const MachineProfile& p, const ModelShape& m, const PlanQuery& q) {
  if (q.tokens < 1 || q.ranks < 1) return InvalidArgument("--tokens and --ranks must be >= 1");
  if (q.threads < 0 || q.cores_per_node < 0 || q.ranks_per_node < 0 || q.flops < 0 ||
      q.efficiency <= 0 || q.efficiency > 1 || q.link_gbps < 0 || q.link_latency_us < 0) {
    return InvalidArgument("plan: threads, cores, ranks per node, flops and link figures must be "
                           ">= 0 and the efficiency in (0, 1]");
  }
  if (q.kv_codec != "f32" && q.kv_codec != "f16" && q.kv_codec != "int8") {
    return InvalidArgument("--kv-codec must be f32, f16 or int8, got {}", q.kv_codec);
  }
  PlanResult r;
  const int P = q.ranks;
  const int64_t n = q.tokens;
  r.rows_per_rank = (n + P - 1) / P;
  const double rows = double(r.rows_per_rank);
  const int64_t g = m.Globals(n);
  r.globals = g;
  const int cores = q.cores_per_node > 0 ? q.cores_per_node : p.cores;
  const int per_node = q.ranks_per_node > 0 ? std::min(q.ranks_per_node, P) : P;
  const int threads = q.threads > 0 ? q.threads : std::max(1, cores / per_node);
  // A rank's share of its node's cores; the threads beyond the first gain `thread_gain` of a
  // core each (measured), and an oversubscribed node gives each rank less than one.
  const double share = std::min(double(threads), double(cores) / double(per_node));
  r.cores_per_rank = share <= 1.0 ? share : 1.0 + (share - 1.0) * p.thread_gain;
  const double decode_cores = std::min(1.0, share);  // one token at a time: one core

  // Compute: the profile's core-seconds, scaled to this model by FLOPs per row (dense) and by
  // heads x head_dim x window (attention is inside the row term), or FLOPs at --flops.
  const double dense_ratio = m.DenseFlopsPerRow() / std::max(1.0, p.shape.DenseFlopsPerRow());
  const double attn_ratio = double(m.layers * m.heads * m.head_dim) /
                            double(std::max<int64_t>(1, p.shape.layers * p.shape.heads *
                                                            p.shape.head_dim));
  const double global_attn_flops_row = 4.0 * double(m.layers * m.heads * m.head_dim);
  double prefill_core_s;
  if (q.flops > 0) {
    const double attn_flops = global_attn_flops_row * rows * (double(m.window) + double(g));
    prefill_core_s = (m.DenseFlopsPerRow() * rows + attn_flops) / (q.flops * q.efficiency);
    r.cores_per_rank = 1.0;  // the device is the unit
  } else {
    prefill_core_s = p.prefill_row_s * dense_ratio * std::pow(rows, p.prefill_row_exponent) +
                     p.prefill_global_row_s * attn_ratio * double(g) * rows;
  }
  r.compute_seconds = prefill_core_s / r.cores_per_rank;

  // Bytes received per layer by the busiest rank (DESIGN.md §2, f32 K/V/Q): the halo of W-1
  // K/V rows from the left neighbour, the other ranks' global K/V and Q rows, and the partial
  // (O, LSE) of its own global queries from every other rank.
  if (P > 1) {
    const double kv_row = 2.0 * double(m.kv_heads * m.head_dim) * 4.0;
    const double q_row = double(m.heads * m.head_dim) * 4.0;
    const double partial_row = double(m.heads) * double(m.head_dim + 1) * 4.0;
    const double g_other = double(g) * double(P - 1) / double(P);
    const double g_own = double(g) / double(P);
    const double halo = double(std::min<int64_t>(m.window - 1, r.rows_per_rank)) * kv_row;
    r.comm_bytes_per_layer = int64_t(halo + g_other * (kv_row + q_row) +
                                     g_own * double(P - 1) * partial_row);
  }
  const double gbps = q.link_gbps > 0 ? q.link_gbps : p.link_gbps;
  const double lat = (q.link_latency_us > 0 ? q.link_latency_us : p.link_latency_us) * 1e-6;
  // Per layer: the halo, the global all-gathers and the partials: about 4 + 2 log2 P message
  // latencies on the critical path.
  const double msgs = P > 1 ? 4.0 + 2.0 * std::ceil(std::log2(double(P))) : 0.0;
  r.comm_seconds = double(m.layers) * (double(r.comm_bytes_per_layer) * 8.0 / (gbps * 1e9) +
                                       msgs * lat);
  r.prefill_seconds = r.compute_seconds + r.comm_seconds;

  // Decode: the question's tokens are global and scan every cached row of the rank; each
  // appended token also costs a fixed amount (dense layers, window) and a few latencies.
  const double Q = double(q.query_tokens), G = double(q.generate);
  if (Q + G > 0) {
    double decode_core_s;
    if (q.flops > 0) {
      decode_core_s = ((Q + G) * m.DenseFlopsPerRow() +
                       Q * rows * global_attn_flops_row +
                       G * double(m.window + g) * global_attn_flops_row) /
                      (q.flops * q.efficiency);
      if (q.mem_gbps > 0) {  // one token at a time is bound by memory, not FLOPs
        const double bytes = (Q + G) * double(m.WeightBytes()) / 2.0 +  // bf16 on a device
                             Q * rows * double(m.KvBytesPerRow()) / 2.0 +
                             G * double(m.window + g) * double(m.KvBytesPerRow()) / 2.0;
        decode_core_s = std::max(decode_core_s, bytes / (q.mem_gbps * 1e9));
      }
    } else {
      decode_core_s = (Q + G) * p.decode_token_s * dense_ratio +
                      Q * rows * p.decode_scan_row_s * attn_ratio;
    }
    const double decode_s = decode_core_s / (q.flops > 0 ? 1.0 : decode_cores) +
                            (Q + G) * double(m.layers) * (P > 1 ? 2.0 * msgs * lat : 0.0);
    r.decode_ms_per_token = 1e3 * decode_s / (Q + G);
  }

  // Memory per rank.
  r.weight_bytes = m.WeightBytes();
  const double kv_full = double(m.KvBytesPerRow()) * rows;
  double kv = kv_full;
  if (q.kv_device_budget >= 0 && kv_full > double(q.kv_device_budget)) {
    const double ratio = q.kv_codec == "int8" ? 0.25 + 4.0 / double(m.head_dim)  // + scales
                         : q.kv_codec == "f16" ? 0.5 : 1.0;
    kv = double(q.kv_device_budget) + (kv_full - double(q.kv_device_budget)) * ratio;
  }
  r.kv_bytes = int64_t(kv);
  const double act_row = std::max(0.0, p.rss_row_bytes - double(p.shape.KvBytesPerRow())) *
                         double(m.hidden) / double(std::max<int64_t>(1, p.shape.hidden));
  r.activation_bytes = int64_t(act_row * rows);
  r.peak_rss_bytes = int64_t(p.rss_base_bytes - double(p.shape.WeightBytes()) +
                             double(r.weight_bytes) + double(r.activation_bytes) + kv +
                             p.rss_doc_token_bytes * double(n));
  return r;
}

std::string PlanJson(const PlanQuery& q, const PlanResult& r) {
  Json j = {{"tokens", q.tokens},
            {"ranks", q.ranks},
            {"rows_per_rank", r.rows_per_rank},
            {"globals", r.globals},
            {"prefill_seconds", r.prefill_seconds},
            {"decode_ms_per_token", r.decode_ms_per_token},
            {"peak_rss_bytes", r.peak_rss_bytes},
            {"comm_bytes_per_layer", r.comm_bytes_per_layer},
            {"detail", {{"compute_seconds", r.compute_seconds},
                        {"comm_seconds", r.comm_seconds},
                        {"cores_per_rank", r.cores_per_rank},
                        {"weight_bytes", r.weight_bytes},
                        {"activation_bytes", r.activation_bytes},
                        {"kv_bytes", r.kv_bytes}}}};
  return j.dump(2) + "\n";
}

// ---- the profile runs ----------------------------------------------------------------------

Status RunProfileBench(const ProfileOptions& o) {
  if (o.tokens.size() < 2) return InvalidArgument("--tokens: at least 2 lengths to fit");
  if (o.threads < 1) return InvalidArgument("--threads must be >= 1");
  ASSIGN_OR_RETURN(ModelShape shape, LoadModelShape(o.model));
  ASSIGN_OR_RETURN(matrix::ScratchDir scratch, matrix::ScratchDir::Create("longctx-profile"));
  const std::string& tmpl = scratch.path();
  const matrix::MachineInfo machine = matrix::ReadMachineInfo();
  std::vector<std::vector<double>> Xd, Xm;
  std::vector<double> yd, ym;
  std::vector<double> log_n, log_t;                     // runs without globals
  std::vector<std::tuple<double, double, double>> glob;  // (n, g, core-seconds) with globals
  fmt::print("# profile of {} on {} ({} cores), 1 rank x {} thread(s)\n", o.model, machine.cpu,
             machine.cores, o.threads);
  fmt::print("{:>9} {:>6} {:>4} {:>10} {:>12} {:>12}\n", "tokens", "globs", "thr", "prefill_s",
             "decode_ms", "peak_rss_MiB");
  constexpr int64_t kGenerate = 16;
  // Each length twice: with the model's global budget and with none (--global-max 0; the
  // sinks and the question stay global), so that the fit can tell the per-row cost from the
  // per-(global x row) cost: the budget grows only with log n, too little to separate them.
  // Then the middle length once more with twice the threads: what a second thread gains.
  struct ProfileRun {
    int64_t n;
    bool with_globals;
    int threads;
  };
  std::vector<ProfileRun> runs;
  for (int64_t n : o.tokens) {
    if (n < 1024) return InvalidArgument("--tokens values must be >= 1024");
    runs.push_back({n, true, o.threads});
    runs.push_back({n, false, o.threads});
  }
  const int64_t mid = o.tokens[o.tokens.size() / 2];
  if (machine.cores >= 2 * o.threads) runs.push_back({mid, true, 2 * o.threads});
  double mid_core_s = 0, mid_double_s = 0;
  for (const ProfileRun& run : runs) {
    const int64_t n = run.n;
    ASSIGN_OR_RETURN(nlohmann::json rep,
                     MeasureRun(o.binary, o.model, "", 1, run.threads, n, kQuery, kGenerate,
                                fmt::format("{}/n{}_{}_{}", tmpl, n, int(run.with_globals),
                                            run.threads),
                                run.with_globals ? std::vector<std::string>{}
                                                 : std::vector<std::string>{"--global-max", "0"}));
    const double wall = rep.at("seconds").at("prefill").get<double>();
    // The document's globals (the question's tokens are global too, but only in the decode).
    const double g = rep.at("globals").get<double>() - rep.at("query_tokens").get<double>();
    const double Q = rep.at("query_tokens").get<double>();
    const double appended = Q + rep.at("generated_tokens").get<double>();
    const double decode = rep.at("seconds").at("decode").get<double>();
    const double rss = rep.at("per_rank").at(0).at("peak_rss_bytes").get<double>();
    fmt::print("{:>9} {:>6} {:>4} {:>10.3f} {:>12.2f} {:>12.1f}\n", n, g, run.threads, wall,
               1e3 * decode / appended, rss / 1048576.0);
    std::fflush(stdout);
    if (run.threads != o.threads) {
      mid_double_s = wall;
      continue;
    }
    const double core_s = wall * o.threads;
    if (run.with_globals) {
      glob.emplace_back(double(n), g, core_s);
      if (n == mid) mid_core_s = wall;
    } else {
      log_n.push_back(std::log(double(n)));
      log_t.push_back(std::log(core_s));
    }
    // The decode is one token at a time: the threads do not shorten it (measured).
    Xd.push_back({appended, Q * double(n)});
    yd.push_back(decode);
    Xm.push_back({1.0, double(n)});
    ym.push_back(rss);
  }
  // Rows without globals: core-seconds = b n^alpha (alpha > 1: longer shards fall out of the
  // caches), a straight line in log-log.
  std::vector<std::vector<double>> Xl;
  for (double x : log_n) Xl.push_back({1.0, x});
  ASSIGN_OR_RETURN(std::vector<double> bl, LeastSquares(Xl, log_t));
  const double alpha = bl[1], b = std::exp(bl[0]);
  // The globals' share: core-seconds - b n^alpha = c g n.
  std::vector<std::vector<double>> Xg;
  std::vector<double> yg;
  for (auto [n, g, t] : glob) {
    Xg.push_back({g * n});
    yg.push_back(t - b * std::pow(n, alpha));
  }
  ASSIGN_OR_RETURN(std::vector<double> bg, NonNegativeFit(Xg, yg));
  ASSIGN_OR_RETURN(std::vector<double> bd, NonNegativeFit(Xd, yd));
  ASSIGN_OR_RETURN(std::vector<double> bm, NonNegativeFit(Xm, ym));
  MachineProfile p;
  p.model = o.model;
  p.cpu = machine.cpu;
  p.date_utc = machine.date_utc;
  p.cores = machine.cores;
  p.threads = o.threads;
  p.prefill_row_s = b;
  p.prefill_row_exponent = alpha;
  p.prefill_global_row_s = bg[0];
  p.thread_gain = mid_double_s > 0 ? std::clamp(mid_core_s / mid_double_s - 1.0, 0.0, 1.0) : 1.0;
  p.decode_token_s = bd[0];
  p.decode_scan_row_s = bd[1];
  // On one rank the rows are the document: what is per document token (the text and its ids,
  // read whole by every rank) cannot be told from what is per row. longctx run reads the
  // document (1 byte per token) and its int32 ids whole on each rank, then keeps its rows.
  p.rss_doc_token_bytes = 5.0;
  p.rss_base_bytes = bm[0];
  p.rss_row_bytes = std::max(0.0, bm[1] - p.rss_doc_token_bytes);
  p.link_gbps = o.link_gbps;
  p.link_latency_us = o.link_latency_us;
  p.shape = shape;
  RETURN_IF_ERROR(SaveProfile(p, o.out));
  fmt::print("# fit (core-seconds): prefill = {:.3g} n^{:.3f} + {:.3g} g n; a second thread "
             "gains {:.2f} of a core; decode = {:.3g} (Q+G) + {:.3g} Q n; peak RSS = {:.1f} MiB + "
             "{:.0f} B x rows + {:.0f} B x n\n",
             b, alpha, bg[0], p.thread_gain, bd[0], bd[1], p.rss_base_bytes / 1048576.0,
             p.rss_row_bytes, p.rss_doc_token_bytes);
  fmt::print("# wrote {}\n", o.out);
  return Status::Ok();
}

// ---- predictions against measured runs -----------------------------------------------------

Status RunPlanBench(const PlanBenchOptions& o) {
  ASSIGN_OR_RETURN(MachineProfile profile, LoadProfile(o.profile));
  ASSIGN_OR_RETURN(ModelShape shape, LoadModelShape(o.model));
  ASSIGN_OR_RETURN(matrix::ScratchDir scratch, matrix::ScratchDir::Create("longctx-plan"));
  const std::string& tmpl = scratch.path();
  const matrix::MachineInfo machine = matrix::ReadMachineInfo();
  fmt::print("# {} on {} ({} cores); profile {} ({}); threads per rank = cores / ranks\n",
             o.model, machine.cpu, machine.cores, o.profile, profile.date_utc);
  fmt::print("{:>9} {:>3} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>8} {:>8} {:>6} | {:>9} "
             "{:>9} {:>6}\n", "tokens", "P", "prefill_s", "pred", "err", "dec_ms", "pred", "err",
             "rss_MiB", "pred", "err", "comm_B/l", "pred", "err");
  Json rows = Json::array();
  double worst = 0;
  for (int64_t n : o.tokens) {
    for (int P : o.ranks) {
      if (P < 1) return InvalidArgument("--ranks values must be >= 1");
      const int threads = std::max(1, machine.cores / P);
      ASSIGN_OR_RETURN(nlohmann::json rep,
                       MeasureRun(o.binary, o.model, o.mpirun_args, P, threads, n, kQuery, 16,
                                  fmt::format("{}/n{}_p{}", tmpl, n, P)));
      PlanQuery q;
      q.tokens = n;
      q.ranks = P;
      q.threads = threads;
      q.query_tokens = rep.at("query_tokens").get<int64_t>();
      q.generate = rep.at("generated_tokens").get<int64_t>();
      ASSIGN_OR_RETURN(PlanResult pr, Predict(profile, shape, q));
      const double prefill = rep.at("seconds").at("prefill").get<double>();
      const double decode = rep.at("decode_ms_per_token").is_number()
                                ? rep.at("decode_ms_per_token").get<double>() : 0.0;
      double rss = 0, comm = 0;
      for (const auto& x : rep.at("per_rank")) {
        rss = std::max(rss, x.at("peak_rss_bytes").get<double>());
      }
      comm = rep.value("comm_bytes_per_layer", 0.0);
      auto err = [](double pred, double meas) {
        return meas > 0 ? (pred - meas) / meas : (pred == 0 ? 0.0 : 1.0);
      };
      const double e1 = err(pr.prefill_seconds, prefill), e2 = err(pr.decode_ms_per_token, decode),
                   e3 = err(double(pr.peak_rss_bytes), rss),
                   e4 = err(double(pr.comm_bytes_per_layer), comm);
      for (double e : {e1, e2, e3, e4}) worst = std::max(worst, std::fabs(e));
      fmt::print("{:>9} {:>3} | {:>9.3f} {:>9.3f} {:>+5.0f}% | {:>9.2f} {:>9.2f} {:>+5.0f}% | "
                 "{:>8.1f} {:>8.1f} {:>+5.0f}% | {:>9.0f} {:>9} {:>+5.0f}%\n",
                 n, P, prefill, pr.prefill_seconds, 100 * e1, decode, pr.decode_ms_per_token,
                 100 * e2, rss / 1048576.0, double(pr.peak_rss_bytes) / 1048576.0, 100 * e3, comm,
                 pr.comm_bytes_per_layer, 100 * e4);
      std::fflush(stdout);
      rows.push_back({{"tokens", n}, {"ranks", P}, {"threads", threads},
                      {"measured", {{"prefill_seconds", prefill}, {"decode_ms_per_token", decode},
                                    {"peak_rss_bytes", rss}, {"comm_bytes_per_layer", comm}}},
                      {"predicted", nlohmann::ordered_json::parse(PlanJson(q, pr))}});
    }
  }
  fmt::print("# worst relative error: {:.0f}%\n", 100 * worst);
  if (!o.json.empty()) {
    Json out = {{"machine", {{"cpu", machine.cpu}, {"cores", machine.cores},
                             {"date_utc", machine.date_utc}, {"load_before", machine.load_before},
                             {"load_after", matrix::LoadAverage()}}},
                {"profile", o.profile},
                {"model", o.model},
                {"runs", rows},
                {"worst_relative_error", worst}};
    RETURN_IF_ERROR(WriteFileAtomically(o.json, out.dump(2) + "\n"));
  }
  return Status::Ok();
}

}  // namespace longctx::bench
