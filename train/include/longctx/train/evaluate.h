// Task accuracy of a model on fresh documents (DESIGN.md §6): each document's context is
// prefilled and its question answered exactly as `longctx run --input ... --query ...
// --generate N` does it (worker::Engine: the question's tokens global, greedy decoding against
// the KV cache), and the answer is compared with the truth. Documents come from the held-out
// split of the filler by default, so no training document is ever evaluated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "longctx/comm/communicator.h"
#include "longctx/core/status.h"
#include "longctx/train/task_data.h"
#include "longctx/worker/engine.h"

namespace longctx::train {

struct EvalOptions {
  Task task = Task::kPasskey;
  int64_t tokens = 1024;   // whole document (context + question + answer)
  int64_t count = 10;      // documents
  uint64_t seed = 1;
  TaskOptions task_options;  // depth (< 0: random), split (default kEval)
  std::vector<std::string> filler;  // default: the Debian corpus
};

struct EvalDocument {
  double depth = 0.0;       // of the queried needle
  std::string answer;       // the truth
  std::string generated;    // what the model generated (as many tokens as the answer has)
  bool correct = false;
  double prefill_seconds = 0.0;  // the context's prefill (this rank's view of the collective)
  double answer_seconds = 0.0;   // the question's tokens and the generated ones
};

struct EvalReport {
  int64_t correct = 0, total = 0;
  double accuracy() const { return total ? double(correct) / double(total) : 0.0; }
  std::vector<EvalDocument> documents;
  double seconds = 0.0;
};

// True when `generated` gives the answer: the answer's text up to its final period (a pass key,
// a magic number, the variable list) is a prefix of the generated text.
bool AnswerMatches(const std::string& answer, const std::string& generated);

// Collective over engine.comm(): every rank calls it with the same options.
Result<EvalReport> EvaluateTask(worker::Engine& engine, const EvalOptions& options);
// The same over an already loaded corpus (options.filler is ignored): for callers that evaluate
// many cells (`longctx bench longeval`) and should parse the prose once.
Result<EvalReport> EvaluateTask(worker::Engine& engine, const EvalOptions& options,
                                const FillerCorpus& filler);

}  // namespace longctx::train
