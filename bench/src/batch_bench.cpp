// `longctx bench batch` (batch_bench.h): one job of B documents against B one-document jobs.
#include "longctx/bench/batch_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "longctx/bench/matrix.h"
#include "longctx/core/file.h"
#include "matrix_internal.h"

namespace longctx::bench {
namespace {

using Json = nlohmann::json;

std::vector<std::string> Words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> w;
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

// One mode's best round: the job(s)' wall seconds, and the engine's seconds (prefill + answer,
// from report.json) — each the smallest over the rounds.
struct ModeFigures {
  std::string name;
  int jobs = 0;
  double wall_s = std::numeric_limits<double>::infinity();
  double engine_s = std::numeric_limits<double>::infinity();
  double load_s = 0;  // model load in the best round's report(s), summed over its jobs
  std::vector<std::string> answers;  // generated.txt per document (input order)

  ModeFigures(std::string n, int j) : name(std::move(n)), jobs(j) {}
};

Result<Json> ReadReport(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("{}: missing (the run wrote no report)", path);
  try {
    return Json::parse(in);
  } catch (const std::exception& e) {
    return DataLoss("{}: {}", path, e.what());
  }
}

Result<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("{}: missing", path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

Status RunBatchBench(const BatchBenchOptions& o) {
  if (o.documents < 1) return InvalidArgument("--docs must be >= 1, got {}", o.documents);
  if (o.tokens < 64) return InvalidArgument("--tokens must be >= 64, got {}", o.tokens);
  if (o.ranks < 1) return InvalidArgument("--ranks must be >= 1, got {}", o.ranks);
  if (o.reps < 1) return InvalidArgument("--reps must be >= 1, got {}", o.reps);
  if (o.doc_groups.empty()) return InvalidArgument("--doc-groups: give at least one G");
  for (int g : o.doc_groups) {
    if (g < 1 || o.ranks % g != 0) {
      return InvalidArgument("--doc-groups {} does not divide --ranks {}", g, o.ranks);
    }
  }
  std::string self = o.binary;  // the real path: under mpirun /proc/self/exe names the daemon
  if (self == "/proc/self/exe") {
    std::error_code ec;
    self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    if (ec) return ErrnoStatus(ec.value(), "/proc/self/exe");
  }
  std::vector<std::string> launcher;
  if (o.ranks > 1) {
    const std::string mpirun = matrix::FindOnPath("mpirun");
    if (mpirun.empty()) return FailedPrecondition("--ranks above 1 need mpirun on PATH");
    launcher.push_back(mpirun);
    for (const std::string& w : Words(o.mpirun_args)) launcher.push_back(w);
    launcher.insert(launcher.end(), {"-np", std::to_string(o.ranks)});
  }
  ASSIGN_OR_RETURN(matrix::ScratchDir scratch, matrix::ScratchDir::Create("longctx-bench-batch"));
  const std::string dir = scratch.path();
  // The documents: the sample text, each with its own first line (different documents).
  std::vector<std::string> docs;
  for (int i = 0; i < o.documents; ++i) {
    const std::string head = fmt::format("Document {} of the batch.\n", i);
    const std::string path = fmt::format("{}/doc{}.txt", dir, i);
    RETURN_IF_ERROR(WriteFileAtomically(
        path, head + MakeSampleDocument(std::max<int64_t>(1, o.tokens - int64_t(head.size())))));
    docs.push_back(path);
  }
  const int64_t total_tokens = o.tokens * o.documents;
  const matrix::MachineInfo machine = matrix::ReadMachineInfo();

  auto job = [&](const std::vector<std::string>& inputs, int groups,
                 const std::string& out) -> Result<Json> {
    std::vector<std::string> argv = launcher;
    argv.insert(argv.end(), {self, "run", "--model", o.model, "--progress", "off", "--threads",
                             std::to_string(o.threads), "--query", o.query, "--generate",
                             std::to_string(o.generate), "--out", out});
    for (const std::string& in : inputs) argv.insert(argv.end(), {"--input", in});
    if (groups > 1) argv.insert(argv.end(), {"--doc-groups", std::to_string(groups)});
    for (const std::string& w : Words(o.extra)) argv.push_back(w);
    const std::string log = out + ".log";
    ASSIGN_OR_RETURN(matrix::ProcessResult r, matrix::RunProcess(argv, log, 900.0));
    if (r.exit_code != 0) {
      return Internal("{} failed (exit {}, signal {}): {}", fmt::join(argv, " "), r.exit_code,
                      r.signal, matrix::LastLogLine(log));
    }
    ASSIGN_OR_RETURN(Json report, ReadReport(out + "/report.json"));
    report["_wall_s"] = r.seconds;
    return report;
  };

  ModeFigures singles{"one job per document", o.documents};
  std::vector<ModeFigures> batches;
  for (int g : o.doc_groups) batches.emplace_back(fmt::format("one job, --doc-groups {}", g), 1);
  for (int rep = 0; rep < o.reps; ++rep) {
    // One document per job, one after another.
    double wall = 0, engine = 0, load = 0;
    std::vector<std::string> answers;
    for (int i = 0; i < o.documents; ++i) {
      const std::string out = fmt::format("{}/single{}_r{}", dir, i, rep);
      ASSIGN_OR_RETURN(Json r, job({docs[size_t(i)]}, 1, out));
      wall += r["_wall_s"].get<double>();
      engine += r["seconds"]["prefill"].get<double>() + r["seconds"]["decode"].get<double>();
      load += r["seconds"]["load"].get<double>();
      ASSIGN_OR_RETURN(std::string a, ReadText(out + "/generated.txt"));
      answers.push_back(std::move(a));
    }
    if (wall < singles.wall_s) {
      singles.wall_s = wall;
      singles.load_s = load;
    }
    singles.engine_s = std::min(singles.engine_s, engine);
    singles.answers = answers;
    // Every document in one job, per G.
    for (size_t b = 0; b < o.doc_groups.size(); ++b) {
      const int g = o.doc_groups[b];
      const std::string out = fmt::format("{}/batch_g{}_r{}", dir, g, rep);
      ASSIGN_OR_RETURN(Json r, job(docs, g, out));
      ModeFigures& m = batches[b];
      if (r["_wall_s"].get<double>() < m.wall_s) {
        m.wall_s = r["_wall_s"].get<double>();
        m.load_s = r["seconds"]["load"].get<double>();
      }
      m.engine_s = std::min(m.engine_s, r["batch"]["seconds"].get<double>());
      m.answers.clear();
      for (int i = 0; i < o.documents; ++i) {
        ASSIGN_OR_RETURN(std::string a,
                         ReadText(fmt::format("{}/doc-{:03d}/generated.txt", out, i)));
        m.answers.push_back(std::move(a));
      }
    }
  }

  const std::string load_after = matrix::LoadAverage();
  fmt::print(
      "bench batch: {} documents x {} tokens, model {}, {} rank(s) x {} thread(s) per job, "
      "question {} bytes + {} generated tokens per document, best of {} round(s)\n",
      o.documents, o.tokens, o.model, o.ranks, o.threads, o.query.size(), o.generate, o.reps);
  fmt::print("machine: {}, {} cores, {}; load average before {} / after {}\n", machine.cpu,
             machine.cores, machine.date_utc, machine.load_before, load_after);
  fmt::print("{:<28} {:>4} {:>9} {:>11} {:>9} {:>12} {:>8} {:>10}  {}\n", "mode", "jobs", "wall s",
             "job tok/s", "engine s", "engine tok/s", "x job", "x engine", "answers");
  Json rows = Json::array();
  auto row = [&](const ModeFigures& m) {
    const double job_tps = double(total_tokens) / m.wall_s;
    const double eng_tps = double(total_tokens) / m.engine_s;
    const double x_job = singles.wall_s / m.wall_s, x_eng = singles.engine_s / m.engine_s;
    const bool same = m.answers == singles.answers;
    fmt::print("{:<28} {:>4} {:>9.2f} {:>11.0f} {:>9.3f} {:>12.0f} {:>8.2f} {:>10.2f}  {}\n",
               m.name, m.jobs, m.wall_s, job_tps, m.engine_s, eng_tps, x_job, x_eng,
               &m == &singles ? "(reference)"
               : same         ? "equal"
                              : "DIFFER");
    rows.push_back(Json{{"mode", m.name},
                        {"jobs", m.jobs},
                        {"wall_seconds", m.wall_s},
                        {"model_load_seconds", m.load_s},
                        {"job_tokens_per_s", job_tps},
                        {"engine_seconds", m.engine_s},
                        {"engine_tokens_per_s", eng_tps},
                        {"ratio_job", x_job},
                        {"ratio_engine", x_eng},
                        {"answers_equal", same}});
  };
  row(singles);
  for (const ModeFigures& m : batches) row(m);
  fmt::print(
      "x job / x engine: tokens/s of the mode over one job per document (wall: whole "
      "subprocesses; engine: report.json prefill + answer seconds)\n");
  if (!o.json.empty()) {
    Json j{{"documents", o.documents},
           {"tokens", o.tokens},
           {"model", o.model},
           {"ranks", o.ranks},
           {"threads", o.threads},
           {"generate", o.generate},
           {"reps", o.reps},
           {"machine",
            {{"cpu", machine.cpu},
             {"cores", machine.cores},
             {"date", machine.date_utc},
             {"load_before", machine.load_before},
             {"load_after", load_after}}},
           {"modes", rows}};
    RETURN_IF_ERROR(WriteFileAtomically(o.json, j.dump(2) + "\n"));
  }
  for (const ModeFigures& m : batches) {
    // G = 1 shards each document exactly as its one-document job does: the answers must agree.
    if (m.name == "one job, --doc-groups 1" && m.answers != singles.answers) {
      return Internal("the --doc-groups 1 batch's answers differ from the one-document jobs'");
    }
  }
  return Status::Ok();
}

}  // namespace longctx::bench
