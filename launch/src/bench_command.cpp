// `longctx bench attention ...`: wires the benchmark options to the CLI.
#include <memory>

#include "commands.h"
#include "longctx/bench/attention_bench.h"

namespace longctx::cli {

Runner AddBenchCommand(CLI::App& app) {
  app.require_subcommand(1);
  auto o = std::make_shared<bench::AttentionBenchOptions>();
  CLI::App* att = app.add_subcommand("attention", "hybrid-attention kernel vs same-run sgemm");
  att->add_option("--n", o->n, "sequence lengths")->delimiter(',')->capture_default_str();
  att->add_option("--d", o->head_dim, "head dims")->delimiter(',')->capture_default_str();
  att->add_option("--window", o->window, "windows")->delimiter(',')->capture_default_str();
  att->add_option("--threads", o->threads, "thread counts")->delimiter(',')->capture_default_str();
  att->add_option("--globals", o->globals, "none and/or log (16*ceil(log2 n) globals)")
      ->delimiter(',')->capture_default_str();
  att->add_option("--heads", o->heads, "query heads")->capture_default_str();
  att->add_option("--kv-heads", o->kv_heads, "kv heads")->capture_default_str();
  att->add_option("--reps", o->reps, "timed repetitions after a warm-up")->capture_default_str();
  att->add_option("--dtype", o->dtype, "f32 | f16 | bf16 inputs")->capture_default_str();
  att->add_option("--isa", o->isa, "auto | avx512 | avx2 | generic")->capture_default_str();
  att->add_option("--json", o->json, "also write the results as JSON");
  return [o] { return bench::RunAttentionBench(*o); };
}

}  // namespace longctx::cli
