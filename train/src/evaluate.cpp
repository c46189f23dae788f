#include "longctx/train/evaluate.h"

#include <chrono>

#include <fmt/format.h>

#include "longctx/attention/global_selection.h"

namespace longctx::train {

bool AnswerMatches(const std::string& answer, const std::string& generated) {
  std::string core = answer;
  while (!core.empty() && (core.back() == '.' || core.back() == ' ')) core.pop_back();
  return !core.empty() && generated.compare(0, core.size(), core) == 0;
}

Result<EvalReport> EvaluateTask(worker::Engine& engine, const EvalOptions& o) {
  if (o.filler.empty()) {
    ASSIGN_OR_RETURN(FillerCorpus f, FillerCorpus::LoadDefault());
    return EvaluateTask(engine, o, f);
  }
  ASSIGN_OR_RETURN(FillerCorpus f, FillerCorpus::Load(o.filler));
  return EvaluateTask(engine, o, f);
}

Result<EvalReport> EvaluateTask(worker::Engine& engine, const EvalOptions& o,
                                const FillerCorpus& filler) {
  if (o.count < 1) return InvalidArgument("--count {}: must be >= 1", o.count);
  const auto t0 = std::chrono::steady_clock::now();
  EvalReport report;
  for (int64_t i = 0; i < o.count; ++i) {
    ASSIGN_OR_RETURN(TaskDocument doc, MakeTaskDocument(o.task, o.tokens, DocumentSeed(o.seed, i),
                                                        filler, o.task_options));
    const std::string id = fmt::format("eval-{}", i);
    const std::span<const int32_t> context(doc.ids.data(), size_t(doc.question_begin));
    const std::vector<attention::TokenClass> classes = attention::ClassifyBytes(doc.context);
    worker::DocumentInfo info;
    RETURN_IF_ERROR(engine.Prefill(id, context, classes, {}, &info));
    worker::AnswerResult ans;
    RETURN_IF_ERROR(engine.Answer(id, doc.question, int64_t(doc.answer.size()), {}, &ans));
    RETURN_IF_ERROR(engine.Drop(id));
    EvalDocument d;
    d.depth = doc.depths.empty() ? 0.0 : doc.depths.front();
    d.answer = doc.answer;
    d.generated = ans.generated;
    d.correct = AnswerMatches(doc.answer, ans.generated);
    d.prefill_seconds = info.prefill_seconds;
    d.answer_seconds = ans.seconds;
    report.correct += d.correct ? 1 : 0;
    ++report.total;
    report.documents.push_back(std::move(d));
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

}  // namespace longctx::train
