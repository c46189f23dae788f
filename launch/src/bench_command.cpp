// `longctx bench attention|comm|matrix ...`: wires the benchmark options to the CLI.
#include <memory>

#include "commands.h"
#include "engine_flags.h"
#include "longctx/bench/attention_bench.h"
#include "longctx/bench/batch_bench.h"
#include "longctx/bench/capacity.h"
#include "longctx/bench/comm_bench.h"
#include "longctx/bench/kvstore_bench.h"
#include "longctx/bench/longeval.h"
#include "longctx/bench/matrix.h"
#include "longctx/bench/tokenize_bench.h"
#include "longctx/bench/train_bench.h"
#include "longctx/comm/communicator.h"

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
  att->add_flag("--whole-process", o->whole_process,
                "time the whole `longctx attention` process (.npy in, .npy out) against the "
                "kernel alone on the same inputs");
  att->add_option("--workdir", o->workdir, "--whole-process: directory for the .npy files");
  att->add_option("--binary", o->binary, "--whole-process: the longctx binary to time")
      ->capture_default_str();

  auto po = std::make_shared<bench::ProfileOptions>();
  CLI::App* pf = app.add_subcommand(
      "profile", "the machine profile of the capacity model (longctx plan): 1-rank runs, fitted");
  pf->add_option("--model", po->model, "model directory or builtin:NAME")->capture_default_str();
  pf->add_option("--out", po->out, "profile JSON to write")->capture_default_str();
  pf->add_option("--tokens", po->tokens, "document lengths (>= 3)")->delimiter(',')
      ->capture_default_str();
  pf->add_option("--threads", po->threads, "threads of the runs")->capture_default_str();
  pf->add_option("--link-gbps", po->link_gbps, "interconnect Gbit/s to assume")
      ->capture_default_str();
  pf->add_option("--link-latency-us", po->link_latency_us, "message latency to assume")
      ->capture_default_str();
  auto pb = std::make_shared<bench::PlanBenchOptions>();
  CLI::App* pl = app.add_subcommand(
      "plan", "the capacity model's predictions against measured runs (ranks x tokens)");
  pl->add_option("--model", pb->model, "model directory or builtin:NAME")->capture_default_str();
  pl->add_option("--profile", pb->profile, "profile JSON (bench profile)")->capture_default_str();
  pl->add_option("--ranks", pb->ranks, "rank counts")->delimiter(',')->capture_default_str();
  pl->add_option("--tokens", pb->tokens, "document lengths")->delimiter(',')
      ->capture_default_str();
  pl->add_option("--json", pb->json, "also write the table as JSON");
  pl->add_option("--mpirun-args", pb->mpirun_args, "mpirun flags before -np")
      ->capture_default_str();

  auto c = std::make_shared<bench::CommBenchOptions>();
  CLI::App* cm = app.add_subcommand(
      "comm", "distributed-attention traffic vs its minimum, bare MPI and a full K/V all-gather "
              "(run under mpirun)");
  cm->add_option("--n", c->n, "sequence lengths")->delimiter(',')->capture_default_str();
  cm->add_option("--d", c->head_dim, "head dims")->delimiter(',')->capture_default_str();
  cm->add_option("--window", c->window, "windows")->delimiter(',')->capture_default_str();
  cm->add_option("--globals", c->globals, "none and/or log")->delimiter(',')->capture_default_str();
  cm->add_option("--heads", c->heads, "query heads")->capture_default_str();
  cm->add_option("--kv-heads", c->kv_heads, "kv heads")->capture_default_str();
  cm->add_option("--reps", c->reps, "timed repetitions after a warm-up")->capture_default_str();
  cm->add_flag("!--no-naive", c->naive, "skip the full K/V all-gather comparison");
  cm->add_option("--json", c->json, "also write the results as JSON (rank 0)");

  auto mo = std::make_shared<bench::MatrixOptions>();
  CLI::App* mx = app.add_subcommand(
      "matrix", "the evaluation matrix: length x ranks x attention kind x task x KV variant as "
                "`longctx run` subprocesses; DIR/matrix.json, matrix.md and PNG plots");
  mx->add_option("--lengths", mo->lengths, "document lengths in tokens (2048, 2K, 1M)")
      ->delimiter(',')->capture_default_str();
  mx->add_option("--ranks", mo->ranks, "rank counts (mpirun above 1)")->delimiter(',')
      ->capture_default_str();
  mx->add_option("--kinds", mo->kinds, "dense, window, hybrid-union, hybrid-weighted")
      ->delimiter(',')->capture_default_str();
  mx->add_option("--tasks", mo->tasks, "understand (prefill), generate (question + decoding)")
      ->delimiter(',')->capture_default_str();
  mx->add_option("--kv", mo->kv, "auto, or resident, spilled-f32, spilled-int8")->delimiter(',')
      ->capture_default_str();
  mx->add_option("--kv-device-budget", mo->kv_device_budget, "per rank, spilled variants")
      ->capture_default_str();
  mx->add_option("--out", mo->out, "output directory")->capture_default_str();
  mx->add_option("--model", mo->model, "the model of every run")->capture_default_str();
  mx->add_option("--generate", mo->generate, "greedy tokens per generate run")->capture_default_str();
  mx->add_option("--query", mo->query, "the question of the generate runs")->capture_default_str();
  mx->add_option("--weighted-alpha", mo->weighted_alpha, "A of hybrid-weighted (weighted:A)")
      ->capture_default_str();
  mx->add_option("--time-limit", mo->time_limit_s, "seconds per run (killed after it)")
      ->capture_default_str();
  mx->add_option("--dense-limit", mo->dense_limit_s,
                 "skip dense when its n^2 time estimate exceeds this (0 = 80% of --time-limit)")
      ->capture_default_str();
  mx->add_option("--dense-budget", mo->dense_budget_s,
                 "seconds for all dense runs together (0 = no budget)")->capture_default_str();
  mx->add_option("--threads", mo->threads, "threads per rank (0 = cores / ranks)")
      ->capture_default_str();
  mx->add_option("--mpirun-args", mo->mpirun_args, "mpirun flags before -np")->capture_default_str();
  mx->add_flag("--keep-runs", mo->keep_runs, "keep each run's directory (report.json, hidden.npy)");
  mx->add_flag("!--no-plots", mo->plots, "skip the PNG plots");
  mx->add_option("--python", mo->python, "python3 with matplotlib for the plots");
  mx->add_option("--longeval", mo->longeval,
                 "a longeval.json of the same model: the task axis's accuracies");

  auto ko = std::make_shared<bench::KvstoreBenchOptions>();
  CLI::App* kv = app.add_subcommand(
      "kvstore", "the UCX KV store's put/get GB/s vs ucx_perftest and Redis, codec speed");
  kv->add_option("--sizes", ko->sizes, "encoded block sizes")->delimiter(',')
      ->capture_default_str();
  kv->add_option("--transports", ko->transports, "UCX_TLS values: sm, tcp")->delimiter(',')
      ->capture_default_str();
  kv->add_option("--bytes", ko->bytes_per_point, "data moved per measurement")
      ->capture_default_str();
  kv->add_option("--batch", ko->batch, "blocks per PutBatch/GetBatch")->capture_default_str();
  kv->add_option("--reps", ko->reps, "measurements per point (the best is kept)")
      ->capture_default_str();
  kv->add_flag("!--no-perftest", ko->perftest, "skip the ucx_perftest peer");
  kv->add_flag("!--no-redis", ko->redis, "skip the Redis peer");
  kv->add_flag("!--no-mac", ko->mac,
               "the client keeps no MAC of its blocks (to measure what it costs)");
  kv->add_option("--json", ko->json, "also write the results as JSON");

  auto to = std::make_shared<bench::TokenizeBenchOptions>();
  CLI::App* tk = app.add_subcommand(
      "tokenize", "tokenizer.json encode speed vs the Rust tokenizers library (node binding)");
  tk->add_option("--tokenizer", to->tokenizer, "tokenizer.json or a directory holding one")
      ->required();
  tk->add_option("--input", to->input, "the text (about 4 MB)")->required();
  tk->add_option("--reps", to->reps, "encodes per measurement (the best is kept)")
      ->capture_default_str();
  tk->add_option("--threads", to->threads, "threads of the parallel encode")->capture_default_str();
  tk->add_option("--reference", to->reference, "node_modules holding the tokenizers package");
  tk->add_option("--node", to->node, "the node binary")->capture_default_str();
  tk->add_option("--json", to->json, "also write the results as JSON");

  auto tro = std::make_shared<bench::TrainBenchOptions>();
  CLI::App* tr = app.add_subcommand(
      "train", "forward+backward tokens/s vs the same model in torch float32, with the time split "
               "into GEMMs, attention and communication (mpirun: sequence parallel)");
  tr->add_option("--model", tro->model, "builtin:tiny, builtin:small or a model directory")
      ->capture_default_str();
  tr->add_option("--tokens", tro->tokens, "sequence lengths")->delimiter(',')->capture_default_str();
  tr->add_option("--threads", tro->threads, "threads per rank (0 = cores / ranks on the node)")
      ->capture_default_str();
  tr->add_option("--repeats", tro->repeats, "timed steps after a warm-up")->capture_default_str();
  tr->add_option("--peer", tro->peer, "auto (the torch peer on 1 rank) | off")->capture_default_str();
  tr->add_option("--python", tro->python, "python3 with torch")->capture_default_str();
  tr->add_option("--peer-script", tro->peer_script, "torch_train.py (default: the source tree's)");
  tr->add_option("--seed", tro->seed, "seed of the prose documents")->capture_default_str();
  tr->add_option("--json", tro->json, "also write the results as JSON (rank 0)");

  auto le = std::make_shared<bench::LongevalOptions>();
  auto le_engine = std::make_shared<EngineFlags>();
  CLI::App* lv = app.add_subcommand(
      "longeval", "task accuracy by length x needle depth for the model and its window-only and "
                  "dense variants (mpirun: sharded); longeval.json, longeval.md, heat maps");
  le_engine->Register(*lv);
  lv->add_option("--window-model", le->window_model, "a model trained window-only (variant window)");
  lv->add_option("--variants", le->variants, "hybrid, cut, window, dense")->delimiter(',')
      ->capture_default_str();
  lv->add_option("--tasks", le->tasks, "passkey, niah, multikey, vt")->delimiter(',')
      ->capture_default_str();
  lv->add_option("--lengths", le->lengths, "document tokens (2K, 1M)")->delimiter(',')
      ->capture_default_str();
  lv->add_option("--depths", le->depths, "needle depths in [0, 1]")->delimiter(',')
      ->capture_default_str();
  lv->add_option("--count", le->counts, "documents per cell: one value or one per length")
      ->delimiter(',')->capture_default_str();
  lv->add_option("--dense-max", le->dense_max, "longest document of the dense variant")
      ->capture_default_str();
  lv->add_option("--data-seed", le->seed, "seed of the documents")->capture_default_str();
  lv->add_option("--out", le->out, "output directory")->capture_default_str();
  lv->add_option("--python", le->python, "python3 with matplotlib")->capture_default_str();
  lv->add_flag("!--no-plots", le->plots, "skip the heat maps");

  auto bo = std::make_shared<bench::BatchBenchOptions>();
  CLI::App* bt = app.add_subcommand(
      "batch", "tokens/s of B documents in one `longctx run` job (--doc-groups G) against one "
               "job per document, as a same-run ratio");
  bt->add_option("--model", bo->model, "model directory or builtin:NAME")->capture_default_str();
  bt->add_option("--docs", bo->documents, "documents B")->capture_default_str();
  bt->add_option("--tokens", bo->tokens, "tokens (bytes) per document")->capture_default_str();
  bt->add_option("--ranks", bo->ranks, "ranks of every job (mpirun above 1)")
      ->capture_default_str();
  bt->add_option("--doc-groups", bo->doc_groups, "G of the batch jobs (each divides --ranks)")
      ->delimiter(',')->capture_default_str();
  bt->add_option("--threads", bo->threads, "threads per rank")->capture_default_str();
  bt->add_option("--query", bo->query, "the question of every document")->capture_default_str();
  bt->add_option("--generate", bo->generate, "greedy tokens per document")->capture_default_str();
  bt->add_option("--reps", bo->reps, "rounds; the best per mode is kept")->capture_default_str();
  bt->add_option("--run-args", bo->extra, "more `longctx run` flags for every job");
  bt->add_option("--json", bo->json, "also write the results as JSON");
  bt->add_option("--mpirun-args", bo->mpirun_args, "mpirun flags before -np")
      ->capture_default_str();

  return [o, c, att, cm, mo, mx, ko, kv, to, tk, tro, tr, le, le_engine, lv, po, pf, pb, pl, bo,
          bt]() -> Status {
    if (bt->parsed()) return bench::RunBatchBench(*bo);
    if (lv->parsed()) {
      ASSIGN_OR_RETURN(std::shared_ptr<comm::Communicator> w, comm::WorldCommunicator("auto"));
      ASSIGN_OR_RETURN(le->engine, le_engine->Options(/*keep_kv=*/true));
      ASSIGN_OR_RETURN(le->engine.remote, le_engine->kv.JoinRemote(*w));
      RemoteTierGuard guard(*w, le->engine.remote);
      return bench::RunLongeval(*le, *w);
    }
    if (tr->parsed()) {
      ASSIGN_OR_RETURN(std::shared_ptr<comm::Communicator> w, comm::WorldCommunicator("auto"));
      return bench::RunTrainBench(*tro, *w);
    }
    if (tk->parsed()) return bench::RunTokenizeBench(*to);
    if (kv->parsed()) return bench::RunKvstoreBench(*ko);
    if (att->parsed()) {
      return o->whole_process ? bench::RunWholeProcessAttentionBench(*o)
                              : bench::RunAttentionBench(*o);
    }
    if (mx->parsed()) return bench::RunMatrix(*mo);
    if (pf->parsed()) return bench::RunProfileBench(*po);
    if (pl->parsed()) return bench::RunPlanBench(*pb);
    ASSIGN_OR_RETURN(std::shared_ptr<comm::Communicator> world, comm::WorldCommunicator("auto"));
    return bench::RunCommBench(*c, *world);
  };
}

}  // namespace longctx::cli
