// `longctx bench matrix`: the evaluation matrix. Every (length, ranks, attention kind, task, KV
// variant) runs as a `longctx run` subprocess (under mpirun for ranks > 1) with a time limit;
// the matrix then measures the deviation of the approximations from dense attention, fits the
// growth exponent of time and memory in the length, and writes DIR/matrix.json, DIR/matrix.md
// (tables and one headline per claim of the seed design, measured vs claimed) and PNG plots.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "longctx/core/status.h"

namespace longctx::bench {

struct MatrixOptions {
  std::vector<std::string> lengths = {"2K", "16K", "128K", "1M"};  // tokens; K = 1024, M = 1024K
  std::vector<int> ranks = {1, 2, 4};
  // dense | window | hybrid-union | hybrid-weighted (dense always runs first: it is the reference)
  std::vector<std::string> kinds = {"dense", "window", "hybrid-union", "hybrid-weighted"};
  std::vector<std::string> tasks = {"understand", "generate"};
  // resident | spilled-f32 | spilled-int8, or "auto": every variant this build's `longctx run`
  // supports (the spilled ones need the tiered KV store's --kv-* flags). The spilled variants run
  // for the generate task of hybrid-union (the only runs that keep a KV cache worth spilling).
  std::vector<std::string> kv = {"auto"};
  std::string kv_device_budget = "16M";  // per rank, for the spilled variants (it must hold the
                                         // persistent set: every global token pins its block)
  std::string out = "longctx-matrix";
  std::string model = "builtin:tiny";
  int64_t generate = 32;  // greedy tokens decoded after the question (task generate)
  std::string query = "Who pays for the goods of lot 35?";
  double weighted_alpha = 0.7;  // hybrid-weighted = --fusion weighted:A
  double time_limit_s = 600;    // per run: killed after this
  double dense_limit_s = 0;     // dense is skipped when its n^2 time estimate exceeds this
                                // (0 = 80% of time_limit_s) or its memory estimate exceeds 80%
                                // of the memory available
  double dense_budget_s = 0;    // all dense runs together: one is skipped when the seconds dense
                                // has taken so far plus its estimate exceed this (0 = no budget)
  int threads = 0;              // per rank; 0 = cores / ranks (at least 1)
  std::string mpirun_args =
      "--oversubscribe --allow-run-as-root --mca btl self,vader,tcp --mca btl_tcp_if_include lo "
      "--mca oob_tcp_if_include lo --mca pml ob1";
  bool keep_runs = false;  // keep DIR/runs/* (report.json, hidden.npy, logs) after collecting
  bool plots = true;
  std::string python = "";  // the interpreter for the plots; "" = /usr/bin/python3, else PATH
  std::string command_line;  // as typed, recorded in the report
  // A `longctx bench longeval` longeval.json of the same model: the task axis's accuracies
  // (hybrid-union <- hybrid, window <- cut, dense <- dense), pooled over depths, per length.
  std::string longeval;
};

// Runs the whole matrix. Bad options are kInvalidArgument before anything runs; a run that fails
// or times out is recorded (and reported) without stopping the matrix.
Status RunMatrix(const MatrixOptions& options);

// ---- pure pieces (unit-tested) ----------------------------------------------------------------

// "2048", "2K" (2048), "1M" (1048576), "1.5K" is refused: a positive whole number of tokens.
Result<int64_t> ParseTokenCount(std::string_view text);

// Least squares on log-log: y ~ c * x^exponent. Needs >= 2 distinct positive x and positive y.
struct PowerFit {
  double exponent = 0;
  double coefficient = 0;
  double r2 = 0;  // of the log-log fit
  int points = 0;
};
Result<PowerFit> FitPowerLaw(const std::vector<double>& x, const std::vector<double>& y);

// ||a - b|| / ||b|| (Frobenius, accumulated in double); 0 when both are zero.
double RelativeError(const float* a, const float* b, int64_t count);

// The structured sample "contract" of launch/make_document.sh, exactly `bytes` bytes: numbered
// clauses with commas, semicolons, colons, questions, exclamations and blank-line paragraphs.
std::string MakeSampleDocument(int64_t bytes);

}  // namespace longctx::bench
