// `longctx bench longeval`: long-context accuracy (issue 14 item 4). For each variant of the
// model, task, document length and needle depth, `count` fresh documents from the held-out
// prose are answered exactly as `longctx run --query` answers them (train::EvaluateTask), and
// the share answered right is reported: a table, longeval.json and heat maps of accuracy by
// length x depth. Collective under mpirun (each document is sharded over the ranks).
//
// Variants:
//   hybrid  the model as it is (its budgeted globals, the question's tokens global)
//   cut     the same weights with the budget cut to the sinks (global_max = sinks): only the
//           sinks and the question's tokens are global
//   window  `window_model`: a model of the same size trained window-only (query_globals off,
//           no budget), run as it was trained
//   dense   the same weights with the window widened to the document (full causal attention),
//           only where n <= dense_max
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "longctx/comm/communicator.h"
#include "longctx/core/status.h"
#include "longctx/worker/engine.h"

namespace longctx::bench {

struct LongevalOptions {
  worker::EngineOptions engine;   // model, threads, --kv-* tiers (every variant runs with them)
  std::string window_model;       // the window-only trained model ("": the variant is skipped)
  std::vector<std::string> variants = {"hybrid", "cut", "window", "dense"};
  std::vector<std::string> tasks = {"passkey", "multikey", "vt"};
  std::vector<std::string> lengths = {"2K", "16K", "128K", "1M"};  // tokens (K/M suffixes)
  std::vector<double> depths = {0.0, 0.25, 0.5, 0.75, 1.0};
  std::vector<int64_t> counts = {10};  // documents per cell: one value, or one per length
  int64_t dense_max = 16384;           // the dense variant runs only up to this length
  uint64_t seed = 1;                   // of the documents (each cell has its own sub-seed)
  std::string out = "longeval";        // longeval.json, longeval.md, heatmap-*.png
  std::string python = "/usr/bin/python3";  // with matplotlib, for the heat maps
  bool plots = true;
};

Status RunLongeval(const LongevalOptions& options, comm::Communicator& comm);

}  // namespace longctx::bench
