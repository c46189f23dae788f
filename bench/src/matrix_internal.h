// Pieces of `longctx bench matrix` shared by its source files (private to longctx_bench): one
// run's record, the subprocess runner, and the report writers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "longctx/bench/matrix.h"
#include "longctx/core/status.h"

namespace longctx::bench::matrix {

// One cell of the matrix: what ran (or why not) and what it measured.
struct RunRecord {
  int64_t n = 0;  // document tokens (the question and generated tokens come on top)
  int ranks = 1;
  std::string kind;  // dense | window | hybrid-union | hybrid-weighted
  std::string task;  // understand | generate
  std::string kv;    // resident | spilled-f32 | spilled-int8
  std::string status = "planned";  // ok | skipped | failed | timeout
  std::string reason;              // one line: why skipped / failed
  std::vector<std::string> argv;   // the command that ran (or would have)
  std::string dir;                 // its output directory
  double wall_s = 0;               // the subprocess, start to exit (includes mpirun start-up)
  nlohmann::json report;           // the run's report.json (status ok)

  // Figures from report.json (status ok).
  double prefill_s = 0, tokens_per_second = 0;
  std::optional<double> decode_ms_per_token;
  double peak_rss_max = 0;   // bytes, the largest rank
  double comm_recv_max = 0;  // bytes received by the busiest rank, whole run
  double kv_device = 0, kv_host = 0, kv_remote = 0;  // bytes, all ranks
  // The tiered KV cache (report.json per_rank[].kv, where present): peak bytes per tier of the
  // busiest rank, and the block traffic summed over ranks.
  double kv_peak_device = 0, kv_peak_host = 0, kv_peak_remote = 0;
  double kv_demotions = 0, kv_loads = 0, kv_prefetch_hits = 0, kv_prefetch_misses = 0;
  double kv_stall_s = 0;  // the longest any rank waited for blocks
  std::vector<int32_t> generated;                    // greedy tokens (task generate)

  // Deviation from the dense run of the same (n, ranks, task), where dense ran.
  std::optional<double> rel_error;      // hidden states (understand), ||x - dense|| / ||dense||
  std::optional<double> max_abs_error;  // hidden states (understand)
  std::optional<bool> tokens_agree;     // all generated tokens equal dense's (generate)
  std::optional<int64_t> tokens_matched;  // generated tokens equal before the first difference
  std::optional<bool> agrees_with_resident;  // spilled variants: tokens equal the resident run

  // Dense only, when skipped or planned: the estimate that decided it.
  std::optional<double> est_prefill_s, est_peak_rss;
  std::string est_basis;  // what the estimate extrapolates from
};

// The machine and its load, for the report.
struct MachineInfo {
  std::string host, cpu, date_utc;
  int cores = 0;
  double mem_total = 0, mem_available = 0;  // bytes
  std::string load_before, load_after;      // /proc/loadavg
};
MachineInfo ReadMachineInfo();
std::string LoadAverage();
double MemAvailableBytes();

struct ProcessResult {
  int exit_code = -1;  // when it exited
  int signal = 0;      // when a signal ended it
  bool timed_out = false;
  double seconds = 0;
};
// Runs argv[0] (a path) with stdout and stderr to `log_path`, in its own process group; after
// `limit_s` seconds the group gets SIGTERM, then SIGKILL 5 s later.
Result<ProcessResult> RunProcess(const std::vector<std::string>& argv, const std::string& log_path,
                                 double limit_s);
// A fresh directory under the system temp dir ("<prefix>-XXXXXX"), removed with its contents
// when the object goes, unless LONGCTX_KEEP_RUNS is set (for looking at a failed run's files).
class ScratchDir {
 public:
  static Result<ScratchDir> Create(const std::string& prefix);
  ScratchDir(ScratchDir&& other) noexcept : path_(std::exchange(other.path_, "")) {}
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ScratchDir& operator=(ScratchDir&&) = delete;
  ~ScratchDir();
  const std::string& path() const { return path_; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};
// The last non-empty line of a log file (for a failed run's one-line reason), bounded.
std::string LastLogLine(const std::string& path);
// An executable named `name` on PATH, or "".
std::string FindOnPath(const std::string& name);

// Report writers (matrix_report.cpp). Fits per (task, kind, kv, ranks) of prefill time, peak
// memory and decode latency; headlines per claim of the seed.
nlohmann::json ComputeFits(const std::vector<RunRecord>& runs);
nlohmann::json ComputeHeadlines(const std::vector<RunRecord>& runs, const MatrixOptions& o);
nlohmann::json RunToJson(const RunRecord& r);
std::string RenderMarkdown(const nlohmann::json& matrix);
// The matrix's task axis from a longeval.json: rows {kind, variant, tokens, task, correct,
// total, accuracy}, pooled over needle depths; kinds map hybrid-union <- hybrid, window <- cut
// (the same weights with only the sinks and the question global), dense <- dense.
Result<nlohmann::json> AccuracyAxis(const std::string& longeval_json);
// One line per fit, as printed at the end of the matrix.
std::vector<std::string> FitLines(const nlohmann::json& fits);

}  // namespace longctx::bench::matrix
