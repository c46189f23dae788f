// longctx: hybrid sliding-window + global-token attention over million-token documents.
// Entry point: parses the subcommand, runs it, and turns any error into one line on stderr
// and a non-zero exit code (1: the command failed, 2: bad usage).
#include <cstdio>
#include <exception>
#include <map>

#include <fmt/format.h>

#include "commands.h"
#include "longctx/core/log.h"
#include "longctx/worker/blas.h"

int main(int argc, char** argv) {
  // Before anything else: a misdetected BLAS kernel is corrected by executing again with
  // OPENBLAS_CORETYPE set (it is read only when the library loads).
  longctx::worker::ChooseBlasKernel(argv);
  longctx::InitLogging();
  CLI::App app{
      "longctx: hybrid sliding-window + global-token attention for million-token documents"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "longctx 0.1.0");
  std::map<CLI::App*, longctx::cli::Runner> runners;
  runners[app.add_subcommand("run", "the main job: a document through the model, sharded")] =
      nullptr;
  runners[app.add_subcommand("attention", "hybrid attention of Q/K/V .npy arrays")] = nullptr;
  runners[app.add_subcommand("mkmodel", "write a built-in model as a HF-layout directory")] =
      nullptr;
  runners[app.add_subcommand("bench", "benchmarks (longctx bench attention)")] = nullptr;
  runners[app.add_subcommand("plan", "predict memory, traffic and time for N tokens on P ranks")] =
      nullptr;
  runners[app.add_subcommand("store", "a memory-only KV store process lending a host pool")] =
      nullptr;
  runners[app.add_subcommand("coordinator", "the control-plane service (jobs, worker groups)")] =
      nullptr;
  runners[app.add_subcommand("submit", "send a document and/or a question to the coordinator")] =
      nullptr;
  runners[app.add_subcommand("status", "worker groups and jobs of the coordinator")] = nullptr;
  runners[app.add_subcommand("worker", "a worker group serving the coordinator (under mpirun)")] =
      nullptr;
  runners[app.add_subcommand("data", "write a synthetic task data set (passkey, niah, vt, lm)")] =
      nullptr;
  runners[app.add_subcommand("grad", "the loss and gradients of one sequence (training)")] =
      nullptr;
  runners[app.add_subcommand("train", "train a model: curriculum, AdamW, sequence parallel")] =
      nullptr;
  runners[app.add_subcommand("eval", "task accuracy of a model on fresh documents")] = nullptr;
  runners[app.add_subcommand("tokenize", "text -> token ids (.npy) with a tokenizer.json")] =
      nullptr;
  runners[app.add_subcommand("detokenize", "token ids (.npy) -> text with a tokenizer.json")] =
      nullptr;
  for (auto& [sub, runner] : runners) {
    if (sub->get_name() == "tokenize") runner = longctx::cli::AddTokenizeCommand(*sub);
    if (sub->get_name() == "detokenize") runner = longctx::cli::AddDetokenizeCommand(*sub);
    if (sub->get_name() == "attention") runner = longctx::cli::AddAttentionCommand(*sub);
    if (sub->get_name() == "bench") runner = longctx::cli::AddBenchCommand(*sub);
    if (sub->get_name() == "plan") runner = longctx::cli::AddPlanCommand(*sub);
    if (sub->get_name() == "run") runner = longctx::cli::AddRunCommand(*sub);
    if (sub->get_name() == "mkmodel") runner = longctx::cli::AddMkmodelCommand(*sub);
    if (sub->get_name() == "store") runner = longctx::cli::AddStoreCommand(*sub);
    if (sub->get_name() == "coordinator") runner = longctx::cli::AddCoordinatorCommand(*sub);
    if (sub->get_name() == "submit") runner = longctx::cli::AddSubmitCommand(*sub);
    if (sub->get_name() == "status") runner = longctx::cli::AddStatusCommand(*sub);
    if (sub->get_name() == "worker") runner = longctx::cli::AddWorkerCommand(*sub);
    if (sub->get_name() == "data") runner = longctx::cli::AddDataCommand(*sub);
    if (sub->get_name() == "grad") runner = longctx::cli::AddGradCommand(*sub);
    if (sub->get_name() == "train") runner = longctx::cli::AddTrainCommand(*sub);
    if (sub->get_name() == "eval") runner = longctx::cli::AddEvalCommand(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    for (char& c : what) {
      if (c == '\n') c = ' ';
    }
    fmt::print(stderr, "longctx: error: {} (see --help)\n", what);
    return 2;
  }
  try {
    for (auto& [sub, runner] : runners) {
      if (!sub->parsed()) continue;
      // Commands whose time is GEMMs check the BLAS kernel against a plain loop first (~1 ms).
      const std::string& name = sub->get_name();
      longctx::Status st;
      if (name == "run" || name == "worker" || name == "train" || name == "grad" ||
          name == "eval" || name == "bench") {
        st = longctx::worker::VerifyGemm();
      }
      if (st.ok()) st = runner();
      if (!st.ok()) {
        // An empty message means another rank of the job has reported this failure.
        if (!st.message().empty()) {
          fmt::print(stderr, "longctx {}: error: {}\n", sub->get_name(), st.message());
        }
        return st.code() == longctx::StatusCode::kInvalidArgument ? 2 : 1;
      }
      return 0;
    }
  } catch (const std::exception& e) {  // e.g. std::bad_alloc on an input too large for memory
    fmt::print(stderr, "longctx: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
