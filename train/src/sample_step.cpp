#include "longctx/train/sample_step.h"

namespace longctx::train {

Result<std::vector<int64_t>> SampleGlobals(const model::ModelConfig& c, const Sample& s) {
  const std::vector<attention::TokenClass> classes = attention::ClassifyByteIds(s.ids);
  for (int64_t p : s.marked) {
    if (p < 0 || p >= int64_t(s.ids.size())) {
      return InvalidArgument("marked global position {} is outside [0, {})", p, s.ids.size());
    }
  }
  // A model without query globals (window-only) trains as it answers: the question is local.
  if (!c.hybrid.query_globals) return attention::SelectGlobals(classes, worker::SelectionFor(c));
  return attention::SelectGlobals(classes, worker::SelectionFor(c), s.marked);
}

Status AccumulateSampleGradients(comm::Communicator& comm, const worker::ParamBlock& params,
                                 const Sample& s, const worker::LossWeights& lw,
                                 const attention::ExecOptions& exec, float* grads,
                                 worker::LossTerms* loss, std::vector<int64_t>* globals_out,
                                 worker::TrainStepStats* stats) {
  const model::ModelConfig& c = params.config();
  ASSIGN_OR_RETURN(std::vector<int64_t> globals, SampleGlobals(c, s));
  ASSIGN_OR_RETURN(std::vector<int64_t> bounds,
                   worker::TrainShardBounds(c, int64_t(s.ids.size()), globals, comm.size()));
  worker::TrainSequence seq{s.ids, s.loss_mask, globals,
                            worker::KeyHandicap{s.handicap_spans, s.handicap_nats}, s.skip_at,
                            s.skip};
  RETURN_IF_ERROR(worker::ForwardBackward(comm, c, params.WeightsView(), params.length_head(),
                                          bounds, seq, lw, exec, params.Grads(grads), loss,
                                          stats));
  if (globals_out) *globals_out = std::move(globals);
  return Status::Ok();
}

}  // namespace longctx::train
