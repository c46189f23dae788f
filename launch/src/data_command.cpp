// `longctx data`: writes a synthetic task data set (train/task_data.h) — for each document
// doc-<i>.txt (the context, for `longctx run --input`), doc-<i>.ids.npy (int32 ids of context +
// question + answer), doc-<i>.mask.npy (uint8 loss mask) — and index.jsonl, one JSON line per
// document with its question, answer, needle depths and seed.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "longctx/core/byte_size.h"
#include "longctx/core/file.h"
#include "longctx/train/task_data.h"

namespace longctx::cli {
namespace {

struct DataFlags {
  std::string task, tokens, out, split = "train";
  int64_t count = 1;
  uint64_t seed = 0;
  std::vector<std::string> filler;
  double depth = -1;
  int64_t keys = 4, hops = 2;
};

Status RunData(const DataFlags& f) {
  ASSIGN_OR_RETURN(const train::Task task, train::ParseTask(f.task));
  ASSIGN_OR_RETURN(const uint64_t tokens, ParseByteSize(f.tokens, "--tokens"));
  if (tokens == 0 || tokens > (uint64_t(1) << 31)) {
    return InvalidArgument("--tokens must be in [1, 2^31], got '{}'", f.tokens);
  }
  if (f.count < 0) return InvalidArgument("--count must be >= 0, got {}", f.count);
  train::TaskOptions options;
  options.depth = f.depth;
  options.keys = f.keys;
  options.hops = f.hops;
  ASSIGN_OR_RETURN(options.split, train::ParseSplit(f.split));
  // Check the task's options and length before reading any filler or touching --out.
  RETURN_IF_ERROR(train::CheckTaskOptions(task, options));
  if (const int64_t min = train::MinTokens(task, options); int64_t(tokens) < min) {
    return InvalidArgument("--tokens {}: too short for {}, which needs at least {} tokens", tokens,
                           train::TaskName(task), min);
  }
  ASSIGN_OR_RETURN(const train::FillerCorpus corpus, f.filler.empty()
                                                         ? train::FillerCorpus::LoadDefault()
                                                         : train::FillerCorpus::Load(f.filler));
  std::error_code ec;
  std::filesystem::create_directories(f.out, ec);
  if (ec) {
    return FailedPrecondition("--out {}: cannot create the directory: {}", f.out, ec.message());
  }

  std::string index;
  for (int64_t i = 0; i < f.count; ++i) {
    ASSIGN_OR_RETURN(const train::TaskDocument doc,
                     train::MakeTaskDocument(task, int64_t(tokens), train::DocumentSeed(f.seed, i),
                                             corpus, options));
    RETURN_IF_ERROR(train::WriteTaskDocumentFiles(f.out, i, doc));
    index += train::IndexJsonLine(i, doc);
    index += '\n';
  }
  RETURN_IF_ERROR(WriteFileAtomically(f.out + "/index.jsonl", index));
  fmt::print(
      "longctx data: {} {} document(s) of {} tokens ({} split, {} filler paragraphs) in "
      "{}\n",
      f.count, train::TaskName(task), tokens, train::SplitName(options.split),
      corpus.paragraphs(options.split), f.out);
  return Status::Ok();
}

}  // namespace

Runner AddDataCommand(CLI::App& app) {
  auto f = std::make_shared<DataFlags>();
  app.add_option("--task", f->task, "passkey | niah | multikey | vt | lm")->required();
  app.add_option("--tokens", f->tokens, "tokens per document (4096, 16K, 1M)")->required();
  app.add_option("--count", f->count, "documents to write")->capture_default_str();
  app.add_option("--seed", f->seed, "seed of the data set (document i uses a hash of it and i)")
      ->capture_default_str();
  app.add_option("--out", f->out, "output directory")->required();
  app.add_option("--filler", f->filler,
                 "plain-text (or .html) files of prose to use as filler instead of the "
                 "debian-handbook package");
  app.add_option("--depth", f->depth, "needle depth in [0, 1] (default: random per document)");
  app.add_option("--keys", f->keys, "multikey: distractor needles")->capture_default_str();
  app.add_option("--hops", f->hops, "vt: copies per variable chain")->capture_default_str();
  app.add_option("--split", f->split, "train | eval: which filler paragraphs (eval: held out)")
      ->capture_default_str();
  return [f] { return RunData(*f); };
}

}  // namespace longctx::cli
