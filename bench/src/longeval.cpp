#include "longctx/bench/longeval.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <unistd.h>

#include "longctx/core/byte_size.h"
#include "longctx/core/file.h"
#include "longctx/model/builtin.h"
#include "longctx/train/evaluate.h"
#include "longctx/train/task_data.h"
#include "matrix_internal.h"

#ifndef LONGCTX_LONGEVAL_PLOT_SCRIPT
#define LONGCTX_LONGEVAL_PLOT_SCRIPT ""
#endif

namespace longctx::bench {
namespace {

using json = nlohmann::json;

struct Cell {
  std::string variant, task;
  int64_t tokens = 0;
  double depth = 0;
  int64_t correct = 0, total = 0;
  double seconds = 0, prefill_seconds = 0;  // all documents; prefill summed
  std::vector<std::string> generated, answers;
};

// The engine options of a variant at length n; nullopt when the variant does not run there.
// `sinks`: the model's sink count after the user's overrides (the cut variant's budget).
Result<std::optional<worker::EngineOptions>> VariantOptions(const LongevalOptions& o,
                                                            const std::string& variant,
                                                            int64_t n, int64_t sinks) {
  worker::EngineOptions eo = o.engine;
  if (variant == "hybrid") return std::optional(eo);
  if (variant == "cut") {
    eo.overrides.sinks = sinks;
    eo.overrides.global_max = sinks;
    return std::optional(eo);
  }
  if (variant == "window") {
    if (o.window_model.empty()) return std::optional<worker::EngineOptions>();
    eo.model = o.window_model;
    return std::optional(eo);
  }
  if (variant == "dense") {
    if (n > o.dense_max) return std::optional<worker::EngineOptions>();
    eo.overrides.window = std::vector<int64_t>{n};
    return std::optional(eo);
  }
  return InvalidArgument("--variants: unknown variant \"{}\" (hybrid, cut, window, dense)",
                         variant);
}

// The sink count the model runs with: its config's, or the --sinks override.
Result<int64_t> ModelSinks(const worker::EngineOptions& eo) {
  ASSIGN_OR_RETURN(model::Model m, model::OpenModel(eo.model, eo.seed));
  RETURN_IF_ERROR(model::ApplyOverrides(eo.overrides, &m.config));
  return m.config.hybrid.sinks;
}

json CellJson(const Cell& c) {
  return {{"variant", c.variant}, {"task", c.task},       {"tokens", c.tokens},
          {"depth", c.depth},     {"correct", c.correct}, {"total", c.total},
          {"accuracy", c.total ? double(c.correct) / double(c.total) : 0.0},
          {"seconds", c.seconds}, {"prefill_seconds", c.prefill_seconds},
          {"generated", c.generated}, {"answers", c.answers}};
}

std::string Percent(int64_t correct, int64_t total) {
  return total ? fmt::format("{:.0f}", 100.0 * double(correct) / double(total)) : "-";
}

// One table per (task): rows = variant x length, columns = depths, then all depths.
std::string Markdown(const LongevalOptions& o, const std::vector<Cell>& cells,
                     const std::vector<int64_t>& lengths, int ranks) {
  std::string md = fmt::format(
      "# longeval: {} ({} ranks)\n\nAccuracy in % (documents right / documents) by needle depth "
      "(share of the filler before the needle).\n",
      o.engine.model, ranks);
  for (const std::string& task : o.tasks) {
    md += fmt::format("\n## {}\n\n| variant | tokens |", task);
    for (double d : o.depths) md += fmt::format(" {:.0f}% |", 100 * d);
    md += " all | docs | s/doc |\n|---|---:|";
    for (size_t i = 0; i <= o.depths.size() + 2; ++i) md += "---:|";
    md += "\n";
    for (const std::string& v : o.variants) {
      for (int64_t n : lengths) {
        int64_t ok = 0, tot = 0;
        double secs = 0;
        std::string row = fmt::format("| {} | {} |", v, n);
        bool any = false;
        for (double d : o.depths) {
          const Cell* c = nullptr;
          for (const Cell& x : cells) {
            if (x.variant == v && x.task == task && x.tokens == n && x.depth == d) c = &x;
          }
          if (c) {
            any = true;
            ok += c->correct;
            tot += c->total;
            secs += c->seconds;
            row += fmt::format(" {} |", Percent(c->correct, c->total));
          } else {
            row += " - |";
          }
        }
        if (!any) continue;
        md += row + fmt::format(" **{}** | {} | {:.1f} |\n", Percent(ok, tot), tot,
                                tot ? secs / double(tot) : 0.0);
      }
    }
  }
  return md;
}

}  // namespace

Status RunLongeval(const LongevalOptions& o, comm::Communicator& comm) {
  std::vector<int64_t> lengths;
  for (const std::string& s : o.lengths) {
    ASSIGN_OR_RETURN(uint64_t n, ParseByteSize(s, "--lengths"));
    if (n < 2 || n > (uint64_t(1) << 31)) {
      return InvalidArgument("--lengths: {} is outside [2, 2^31]", s);
    }
    lengths.push_back(int64_t(n));
  }
  if (o.counts.size() != 1 && o.counts.size() != lengths.size()) {
    return InvalidArgument("--count: {} values for {} lengths (give one, or one per length)",
                           o.counts.size(), lengths.size());
  }
  for (int64_t c : o.counts) {
    if (c < 1) return InvalidArgument("--count: {} must be >= 1", c);
  }
  for (double d : o.depths) {
    if (!(d >= 0.0 && d <= 1.0)) return InvalidArgument("--depths: {} is not in [0, 1]", d);
  }
  std::vector<train::Task> tasks;
  for (const std::string& t : o.tasks) {
    ASSIGN_OR_RETURN(train::Task task, train::ParseTask(t));
    if (task == train::Task::kLm) return InvalidArgument("--tasks: lm has no answer to check");
    tasks.push_back(task);
    for (int64_t n : lengths) {
      if (n < train::MinTokens(task)) {
        return InvalidArgument("--lengths: {} tokens is below the {} task's minimum of {}", n, t,
                               train::MinTokens(task));
      }
    }
  }
  for (const std::string& v : o.variants) {  // names checked before any work
    RETURN_IF_ERROR(VariantOptions(o, v, 2, 0).status());
  }
  int64_t sinks = 0;
  if (std::find(o.variants.begin(), o.variants.end(), "cut") != o.variants.end()) {
    ASSIGN_OR_RETURN(sinks, ModelSinks(o.engine));
  }
  ASSIGN_OR_RETURN(train::FillerCorpus filler, train::FillerCorpus::LoadDefault());
  const bool root = comm.rank() == 0;
  if (root) {
    std::error_code ec;
    std::filesystem::create_directories(o.out, ec);
    if (ec) return FailedPrecondition("{}: cannot create the directory: {}", o.out, ec.message());
  }
  std::vector<Cell> cells;
  const auto t_all = std::chrono::steady_clock::now();
  for (const std::string& v : o.variants) {
    for (size_t li = 0; li < lengths.size(); ++li) {
      const int64_t n = lengths[li];
      ASSIGN_OR_RETURN(std::optional<worker::EngineOptions> eo, VariantOptions(o, v, n, sinks));
      if (!eo) {
        if (root) fmt::print("# {} at {} tokens: skipped\n", v, n);
        continue;
      }
      ASSIGN_OR_RETURN(std::unique_ptr<worker::Engine> engine, worker::Engine::Open(comm, *eo));
      const int64_t count = o.counts.size() == 1 ? o.counts[0] : o.counts[li];
      for (size_t ti = 0; ti < tasks.size(); ++ti) {
        for (size_t di = 0; di < o.depths.size(); ++di) {
          train::EvalOptions eval;
          eval.task = tasks[ti];
          eval.tokens = n;
          eval.count = count;
          // Each (task, length, depth) has its own documents, the same for every variant.
          eval.seed = train::DocumentSeed(o.seed, int64_t((ti * 64 + li) * 64 + di));
          eval.task_options.depth = o.depths[di];
          eval.task_options.split = train::Split::kEval;
          ASSIGN_OR_RETURN(train::EvalReport r, train::EvaluateTask(*engine, eval, filler));
          Cell c;
          c.variant = v;
          c.task = o.tasks[ti];
          c.tokens = n;
          c.depth = o.depths[di];
          c.correct = r.correct;
          c.total = r.total;
          c.seconds = r.seconds;
          for (const train::EvalDocument& d : r.documents) {
            c.prefill_seconds += d.prefill_seconds;
            c.generated.push_back(d.generated);
            c.answers.push_back(d.answer);
          }
          if (root) {
            fmt::print("{:<6} {:<8} {:>8} depth {:>4.0f}%: {:>2}/{:<2} right ({:.1f} s)\n", v,
                       o.tasks[ti], n, 100 * o.depths[di], c.correct, c.total, c.seconds);
            std::fflush(stdout);
          }
          cells.push_back(std::move(c));
        }
      }
    }
  }
  if (!root) return Status::Ok();
  json j;
  j["model"] = o.engine.model;
  j["window_model"] = o.window_model;
  j["ranks"] = comm.size();
  j["seed"] = o.seed;
  j["depths"] = o.depths;
  j["lengths"] = lengths;
  j["tasks"] = o.tasks;
  j["variants"] = o.variants;
  j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_all).count();
  j["cells"] = json::array();
  for (const Cell& c : cells) j["cells"].push_back(CellJson(c));
  const std::string json_path = o.out + "/longeval.json";
  RETURN_IF_ERROR(WriteFileAtomically(
      json_path, j.dump(1, ' ', false, json::error_handler_t::replace) + "\n"));
  const std::string md = Markdown(o, cells, lengths, comm.size());
  RETURN_IF_ERROR(WriteFileAtomically(o.out + "/longeval.md", md));
  fmt::print("\n{}\nwrote {} and {}/longeval.md\n", md, json_path, o.out);
  if (o.plots) {
    const std::string script = LONGCTX_LONGEVAL_PLOT_SCRIPT;
    if (script.empty() || access(script.c_str(), R_OK) != 0 ||
        access(o.python.c_str(), X_OK) != 0) {
      fmt::print("# heat maps skipped: {} or {} is not there\n", o.python, script);
    } else {
      ASSIGN_OR_RETURN(matrix::ProcessResult p,
                       matrix::RunProcess({o.python, script, o.out, json_path},
                                          o.out + "/plot.log", 300));
      if (p.exit_code != 0) {
        fmt::print("# heat maps failed: {}\n", matrix::LastLogLine(o.out + "/plot.log"));
      } else {
        fmt::print("wrote {}/heatmap-*.png\n", o.out);
      }
    }
  }
  return Status::Ok();
}

}  // namespace longctx::bench
