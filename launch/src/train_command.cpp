// `longctx train`: the training loop (train/trainer.h) under mpirun or alone. Wiring only.
#include "commands.h"
#include "engine_flags.h"
#include "longctx/bench/matrix.h"
#include "longctx/train/trainer.h"

namespace longctx::cli {
namespace {

struct TrainFlags {
  EngineFlags engine;  // --model (initial weights), --seed, hybrid overrides, --threads
  train::TrainOptions o;
  std::string loss = "ce", tasks = "passkey,niah,multikey,vt,lm", mining = "off";
  std::string progress = "auto";
  std::string dilute_to, skip_to;
  std::optional<double> rope_theta;
};

Status RunTrain(TrainFlags& f) {
  ASSIGN_OR_RETURN(std::shared_ptr<comm::Communicator> world, comm::WorldCommunicator("auto"));
  ASSIGN_OR_RETURN(worker::EngineOptions eo, f.engine.Options(/*keep_kv=*/false));
  train::TrainOptions& o = f.o;
  o.model = eo.model;
  if (!f.dilute_to.empty()) {
    Result<int64_t> n = bench::ParseTokenCount(f.dilute_to);
    if (!n.ok()) return n.status().WithContext("--dilute-to");
    o.dilute_to = *n;
  }
  if (!f.skip_to.empty()) {
    Result<int64_t> n = bench::ParseTokenCount(f.skip_to);
    if (!n.ok()) return n.status().WithContext("--position-skip-to");
    o.skip_to = *n;
  }
  o.model_seed = eo.seed;
  o.seed = eo.seed;
  o.overrides = eo.overrides;
  o.threads = eo.threads;
  o.rope_theta = f.rope_theta;
  ASSIGN_OR_RETURN(o.loss, worker::ParseLossSpec(f.loss));
  o.tasks.clear();
  size_t pos = 0;
  while (pos <= f.tasks.size()) {
    const size_t comma = std::min(f.tasks.find(',', pos), f.tasks.size());
    o.tasks.push_back(f.tasks.substr(pos, comma - pos));
    pos = comma + 1;
  }
  if (f.mining != "on" && f.mining != "off") {
    return InvalidArgument("--mining {}: expected on or off", f.mining);
  }
  o.mining = f.mining == "on";
  if (f.progress != "auto" && f.progress != "off") {
    return InvalidArgument("--progress {}: expected auto or off", f.progress);
  }
  o.progress = f.progress == "auto";
  return train::Train(*world, o);
}

}  // namespace

Runner AddTrainCommand(CLI::App& app) {
  auto f = std::make_shared<TrainFlags>();
  f->engine.RegisterModel(app);
  train::TrainOptions& o = f->o;
  app.add_option("--out", o.out, "output: step-N/ and final/ checkpoints, train.jsonl, train.png")
      ->required();
  app.add_option("--curriculum", o.curriculum, "stages LENGTH:STEPS,... (e.g. 2K:400,16K:100)")
      ->capture_default_str();
  app.add_option("--tasks", f->tasks, "task mix: passkey,niah,multikey,vt,lm")->capture_default_str();
  app.add_option("--data", o.data, "text or .npy token files for the lm task");
  app.add_option("--filler", o.filler, "filler prose files (default: the Debian handbook)");
  app.add_option("--batch", o.batch, "sequences per step per data-parallel group")->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate of each stage")->capture_default_str();
  app.add_option("--min-lr", o.min_lr, "learning rate at the end of each stage's cosine")
      ->capture_default_str();
  app.add_option("--weight-decay", o.adam.weight_decay, "AdamW decoupled weight decay")
      ->capture_default_str();
  app.add_option("--clip", o.adam.clip_norm, "global gradient-norm clip (0: none)")
      ->capture_default_str();
  app.add_option("--beta1", o.adam.beta1, "AdamW beta1")->capture_default_str();
  app.add_option("--beta2", o.adam.beta2, "AdamW beta2")->capture_default_str();
  app.add_flag("--decay-embeddings", o.adam.decay_embeddings, "apply weight decay to the embedding");
  app.add_option("--loss", f->loss, "loss terms: ce,length:A,entropy:B,cache-l1:C")
      ->capture_default_str();
  app.add_option("--mining", f->mining, "hard-example mining: on|off")->capture_default_str();
  app.add_option("--save-every", o.save_every, "write step-N/ every N steps (0: final/ only)")
      ->capture_default_str();
  app.add_option("--resume", o.resume, "continue from a step-N/ checkpoint of the same run");
  app.add_option("--dp", o.dp, "data-parallel groups (divides the ranks)")->capture_default_str();
  app.add_option("--rope-theta", f->rope_theta, "override the model's rope_theta");
  app.add_option("--max-steps", o.max_steps, "stop after this many steps in total")
      ->capture_default_str();
  app.add_option("--dilute-to", f->dilute_to,
                 "simulated dilution: train task sequences as if their filler were this many "
                 "tokens (e.g. 1M; the needles' keys are handicapped by ln(N/n) nats in the "
                 "global queries' softmax; docs/training.md)");
  app.add_option("--position-skip-to", f->skip_to,
                 "positional skip (PoSE): in task sequences, move the RoPE positions from a "
                 "point between the last needle and the question by a random distance so the "
                 "question-needle distance reaches this many tokens (e.g. 1M; docs/training.md)");
  app.add_option("--progress", f->progress, "auto (a bar on a terminal) | off")->capture_default_str();
  return [f] { return RunTrain(*f); };
}

}  // namespace longctx::cli
