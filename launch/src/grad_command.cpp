// `longctx grad`: the loss and the gradient of every weight for one sequence (DESIGN.md §6),
// with the globals chosen as `longctx run` chooses them; under mpirun the sequence is sharded
// exactly as the prefill shards it. Wiring only: train::AccumulateSampleGradients computes.
#include <nlohmann/json.hpp>

#include "commands.h"
#include "engine_flags.h"
#include "longctx/core/file.h"
#include "longctx/core/npy.h"
#include "longctx/core/thread_pool.h"
#include "longctx/model/builtin.h"
#include "longctx/model/safetensors.h"
#include "longctx/train/sample_step.h"

#include <filesystem>

namespace longctx::cli {
namespace {

struct GradFlags {
  EngineFlags engine;  // --model, --seed, hybrid overrides, --threads
  std::string input_ids, loss_mask, out, loss = "ce";
  std::string handicap;  // "NATS@B:E[,B:E...]" (simulated dilution, as `train --dilute-to`)
  std::vector<int64_t> skip;  // AT DISTANCE (positional skip, as `train --position-skip-to`)
};

// "--handicap NATS@B:E,B:E" -> the sample's handicap (ranges checked by the train step).
Status ParseHandicap(const std::string& text, train::Sample* s) {
  const auto at = text.find('@');
  auto bad = [&] {
    return InvalidArgument("--handicap {}: expected NATS@BEGIN:END[,BEGIN:END...]", text);
  };
  if (at == std::string::npos) return bad();
  try {
    size_t used = 0;
    s->handicap_nats = std::stof(text.substr(0, at), &used);
    if (used != at) return bad();
    std::string rest = text.substr(at + 1);
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      const std::string item = rest.substr(0, comma);
      const auto colon = item.find(':');
      if (colon == std::string::npos) return bad();
      size_t u1 = 0, u2 = 0;
      const int64_t b = std::stoll(item.substr(0, colon), &u1);
      const int64_t e = std::stoll(item.substr(colon + 1), &u2);
      if (u1 != colon || u2 != item.size() - colon - 1) return bad();
      s->handicap_spans.emplace_back(b, e);
      rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    }
  } catch (const std::exception&) {
    return bad();
  }
  if (s->handicap_spans.empty()) return bad();
  return Status::Ok();
}

// A 1-D int32/int64 array as int64 values.
Result<std::vector<int64_t>> ReadIntVector(const std::string& path, std::string_view what) {
  ASSIGN_OR_RETURN(NpyArray a, ReadNpy(path));
  if (a.shape.size() != 1) {
    return InvalidArgument("{}: {} must be a 1-D array, got {} dimensions", path, what,
                           a.shape.size());
  }
  std::vector<int64_t> v(size_t(a.numel()));
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (a.dtype == DType::kI32) v[size_t(i)] = a.as<int32_t>()[i];
    else if (a.dtype == DType::kI64) v[size_t(i)] = a.as<int64_t>()[i];
    else return InvalidArgument("{}: {} must be int32 or int64, got {}", path, what, DTypeName(a.dtype));
  }
  return v;
}

Status RunGrad(const GradFlags& f) {
  ASSIGN_OR_RETURN(std::shared_ptr<comm::Communicator> world, comm::WorldCommunicator("auto"));
  comm::Communicator& comm = *world;
  ASSIGN_OR_RETURN(worker::LossWeights lw, worker::ParseLossSpec(f.loss));
  ASSIGN_OR_RETURN(worker::EngineOptions eo, f.engine.Options(/*keep_kv=*/false));
  // Every rank reads the inputs and loads the model; they agree on the outcome first.
  train::Sample sample;
  std::optional<worker::ParamBlock> params;
  Status st = [&]() -> Status {
    ASSIGN_OR_RETURN(std::vector<int64_t> ids, ReadIntVector(f.input_ids, "token ids"));
    if (ids.size() < 2) return InvalidArgument("{}: a sequence needs at least 2 tokens", f.input_ids);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] > INT32_MAX) {
        return OutOfRange("{}: token id {} at position {} is out of range", f.input_ids, ids[i], i);
      }
      sample.ids.push_back(int32_t(ids[i]));
    }
    if (!f.loss_mask.empty()) {
      ASSIGN_OR_RETURN(std::vector<int64_t> mask, ReadIntVector(f.loss_mask, "the loss mask"));
      if (mask.size() != ids.size()) {
        return InvalidArgument("{}: the loss mask has {} entries for {} tokens", f.loss_mask,
                               mask.size(), ids.size());
      }
      for (int64_t m : mask) sample.loss_mask.push_back(m != 0 ? 1 : 0);
    }
    if (!f.handicap.empty()) RETURN_IF_ERROR(ParseHandicap(f.handicap, &sample));
    if (!f.skip.empty()) {
      sample.skip_at = f.skip[0];
      sample.skip = f.skip[1];
    }
    ASSIGN_OR_RETURN(model::Model m, model::OpenModel(eo.model, eo.seed));
    RETURN_IF_ERROR(model::ApplyOverrides(eo.overrides, &m.config));
    const bool head = lw.length > 0 || m.weights.Contains(worker::kLengthHeadWeightName);
    ASSIGN_OR_RETURN(worker::ParamBlock p, worker::ParamBlock::FromModel(m, head));
    params.emplace(std::move(p));
    return Status::Ok();
  }();
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm, st));

  ThreadPool pool(eo.threads);
  worker::SetGemmThreads(pool.size());
  const attention::ExecOptions exec{&pool, attention::Isa::kAuto};
  std::vector<float> grads(params->size(), 0.0f);
  worker::LossTerms loss;
  std::vector<int64_t> globals;
  st = train::AccumulateSampleGradients(comm, *params, sample, lw, exec, grads.data(), &loss,
                                        &globals, nullptr);
  RETURN_IF_ERROR(comm::AgreeOnStatus(comm, st));
  RETURN_IF_ERROR(comm.AllReduce(grads.data(), grads.size(), comm::ReduceType::kF32,
                                 comm::ReduceOp::kSum, comm::DeadlineIn(comm::DefaultTimeout())));
  st = [&]() -> Status {
    if (comm.rank() != 0) return Status::Ok();
    std::error_code ec;
    std::filesystem::create_directories(f.out, ec);
    if (ec) return FailedPrecondition("--out {}: {}", f.out, ec.message());
    RETURN_IF_ERROR(model::WriteSafetensors(f.out + "/grads.safetensors", params->Refs(grads.data())));
    RETURN_IF_ERROR(WriteNpy(f.out + "/globals.npy", DType::kI64,
                             {int64_t(globals.size())}, globals.data()));
    nlohmann::json j;
    j["loss"] = loss.total;
    nlohmann::json terms;
    if (lw.ce > 0) terms["ce"] = loss.ce;
    if (lw.length > 0) terms["length"] = loss.length;
    if (lw.entropy > 0) terms["entropy"] = loss.entropy;
    if (lw.cache_l1 > 0) terms["cache_l1"] = loss.cache_l1;
    j["loss_terms"] = terms;
    j["targets"] = loss.targets;
    j["tokens"] = sample.ids.size();
    j["globals"] = globals.size();
    j["ranks"] = comm.size();
    return WriteFileAtomically(f.out + "/report.json", j.dump(2) + "\n");
  }();
  return comm::AgreeOnStatus(comm, st);
}

}  // namespace

Runner AddGradCommand(CLI::App& app) {
  auto f = std::make_shared<GradFlags>();
  f->engine.RegisterModel(app);
  app.add_option("--input-ids", f->input_ids, "token ids of the sequence (int32/int64 .npy)")
      ->required();
  app.add_option("--loss-mask", f->loss_mask,
                 "1 where the token is a target (int32/int64 .npy, one per token); default all");
  app.add_option("--loss", f->loss, "loss terms: ce,length:A,entropy:B,cache-l1:C")
      ->capture_default_str();
  app.add_option("--out", f->out, "output directory: grads.safetensors, globals.npy, report.json")
      ->required();
  app.add_option("--handicap", f->handicap,
                 "NATS@BEGIN:END[,...]: lower the logits of those keys by NATS in the global "
                 "queries' softmax (the simulated dilution of `train --dilute-to`)");
  app.add_option("--position-skip", f->skip,
                 "AT DISTANCE: RoPE positions of tokens >= AT moved by DISTANCE (the positional "
                 "skip of `train --position-skip-to`)")
      ->expected(2);
  return [f] { return RunGrad(*f); };
}

}  // namespace longctx::cli
