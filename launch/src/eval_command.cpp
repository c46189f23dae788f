// `longctx eval`: task accuracy of a model on fresh documents, each answered exactly as
// `longctx run --query` answers (train/evaluate.h). Takes run's engine flags, --kv-* included,
// so the same accuracy can be measured with the KV cache resident or spilled. Wiring only.
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "engine_flags.h"
#include "longctx/core/byte_size.h"
#include "longctx/core/file.h"
#include "longctx/train/evaluate.h"

namespace longctx::cli {
namespace {

struct EvalFlags {
  EngineFlags engine;
  std::string task = "passkey", split = "eval", json;
  std::string tokens = "1024";
  int64_t count = 10;
  uint64_t data_seed = 1;
  double depth = -1;
  std::vector<std::string> filler;
};

Status RunEval(const EvalFlags& f) {
  ASSIGN_OR_RETURN(std::shared_ptr<comm::Communicator> world, comm::WorldCommunicator("auto"));
  comm::Communicator& c = *world;
  train::EvalOptions o;
  ASSIGN_OR_RETURN(o.task, train::ParseTask(f.task));
  ASSIGN_OR_RETURN(o.task_options.split, train::ParseSplit(f.split));
  ASSIGN_OR_RETURN(const uint64_t tokens, ParseByteSize(f.tokens, "--tokens"));
  if (tokens < 2 || tokens > (uint64_t(1) << 31)) {
    return InvalidArgument("--tokens must be in [2, 2^31], got '{}'", f.tokens);
  }
  o.tokens = int64_t(tokens);
  o.count = f.count;
  o.seed = f.data_seed;
  o.task_options.depth = f.depth;
  o.filler = f.filler;
  RETURN_IF_ERROR(train::CheckTaskOptions(o.task, o.task_options));
  ASSIGN_OR_RETURN(worker::EngineOptions eo, f.engine.Options(/*keep_kv=*/true));
  ASSIGN_OR_RETURN(eo.remote, f.engine.kv.JoinRemote(c));
  RemoteTierGuard remote_guard(c, eo.remote);
  ASSIGN_OR_RETURN(std::unique_ptr<worker::Engine> engine, worker::Engine::Open(c, eo));
  Result<train::EvalReport> r = train::EvaluateTask(*engine, o);
  RETURN_IF_ERROR(comm::AgreeOnStatus(c, r.status()));
  if (c.rank() != 0) return Status::Ok();
  for (size_t i = 0; i < r->documents.size(); ++i) {
    const train::EvalDocument& d = r->documents[i];
    fmt::print("doc {:>3}  depth {:.2f}  {}  answer {:?}  generated {:?}\n", i, d.depth,
               d.correct ? "ok   " : "wrong", d.answer, d.generated);
  }
  fmt::print("{} {} tokens ({} split, {} ranks): {}/{} correct, accuracy {:.1f}% ({:.1f} s)\n",
             f.task, o.tokens, f.split, c.size(), r->correct, r->total, 100.0 * r->accuracy(),
             r->seconds);
  if (!f.json.empty()) {
    nlohmann::json j;
    j["model"] = eo.model;
    j["task"] = f.task;
    j["tokens"] = o.tokens;
    j["split"] = f.split;
    j["ranks"] = c.size();
    j["correct"] = r->correct;
    j["total"] = r->total;
    j["accuracy"] = r->accuracy();
    j["seconds"] = r->seconds;
    for (const train::EvalDocument& d : r->documents) {
      j["documents"].push_back({{"depth", d.depth}, {"answer", d.answer},
                                {"generated", d.generated}, {"correct", d.correct}});
    }
    RETURN_IF_ERROR(WriteFileAtomically(
        f.json, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
  }
  return Status::Ok();
}

}  // namespace

Runner AddEvalCommand(CLI::App& app) {
  auto f = std::make_shared<EvalFlags>();
  f->engine.Register(app);
  app.add_option("--task", f->task, "passkey | niah | multikey | vt")->capture_default_str();
  app.add_option("--tokens", f->tokens, "tokens per document (K/M suffix)")->capture_default_str();
  app.add_option("--count", f->count, "documents")->capture_default_str();
  app.add_option("--data-seed", f->data_seed, "seed of the documents")->capture_default_str();
  app.add_option("--depth", f->depth, "needle depth in [0, 1] (default: random)");
  app.add_option("--split", f->split, "filler split: eval (held out) | train")->capture_default_str();
  app.add_option("--filler", f->filler, "filler prose files (default: the Debian handbook)");
  app.add_option("--json", f->json, "write the per-document results here");
  return [f] { return RunEval(*f); };
}

}  // namespace longctx::cli
