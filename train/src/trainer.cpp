#include "longctx/train/trainer.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "longctx/core/file.h"
#include "longctx/core/log.h"
#include "longctx/core/thread_pool.h"
#include "longctx/model/builtin.h"
#include "longctx/train/checkpoint.h"
#include "longctx/train/sample_step.h"
#include "longctx/train/schedule.h"
#include "longctx/train/task_data.h"

namespace longctx::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::array<Task, kMixTasks> kMixOrder = {Task::kPasskey, Task::kNiah, Task::kMultikey,
                                                   Task::kVt, Task::kLm};

int64_t PeakRssBytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

// A uniform double in [0, 1) from the generator's raw output (no std:: distribution, so the
// draw is the same with every standard library).
double Uniform(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

// Where the training sequences come from: task documents over filler prose, and plain token
// files for language modelling.
class SampleSource {
 public:
  static Result<SampleSource> Open(const TrainOptions& o, const std::vector<Stage>& stages) {
    SampleSource src;
    if (o.dilute_to < 0) return InvalidArgument("--dilute-to must be >= 0, not {}", o.dilute_to);
    if (o.dilute_to > 0 && o.loss.entropy > 0) {
      return InvalidArgument("--dilute-to cannot be combined with the entropy loss");
    }
    src.dilute_to_ = o.dilute_to;
    if (o.skip_to < 0) return InvalidArgument("--position-skip-to must be >= 0, not {}", o.skip_to);
    src.skip_to_ = o.skip_to;
    for (const std::string& name : o.tasks) {
      ASSIGN_OR_RETURN(Task t, ParseTask(name));
      for (int i = 0; i < kMixTasks; ++i) {
        if (kMixOrder[size_t(i)] == t) src.enabled_[size_t(i)] = true;
      }
    }
    for (const std::string& path : o.data) {
      ASSIGN_OR_RETURN(std::vector<int32_t> ids, LoadTokenFile(path));
      src.stream_.insert(src.stream_.end(), ids.begin(), ids.end());
    }
    const bool need_filler = std::any_of(src.enabled_.begin(), src.enabled_.begin() + 4,
                                         [](bool b) { return b; }) ||
                             (src.enabled_[4] && src.stream_.empty());
    if (need_filler) {
      if (o.filler.empty()) {
        ASSIGN_OR_RETURN(FillerCorpus f, FillerCorpus::LoadDefault());
        src.filler_.emplace(std::move(f));
      } else {
        ASSIGN_OR_RETURN(FillerCorpus f, FillerCorpus::Load(o.filler));
        src.filler_.emplace(std::move(f));
      }
    }
    // Every stage must be long enough for every task it may draw.
    for (size_t s = 0; s < stages.size(); ++s) {
      for (int i = 0; i < kMixTasks; ++i) {
        if (!src.enabled_[size_t(i)]) continue;
        const Task t = kMixOrder[size_t(i)];
        const int64_t need = t == Task::kLm && !src.stream_.empty() ? 2 : MinTokens(t);
        if (stages[s].min_len < need) {
          return InvalidArgument(
              "--curriculum: stage {} ({} tokens) is shorter than the {} task's minimum of {} "
              "tokens (drop the task with --tasks or lengthen the stage)",
              s + 1, stages[s].min_len, TaskName(t), need);
        }
      }
      if (src.enabled_[4] && !src.stream_.empty() && int64_t(src.stream_.size()) < stages[s].seq_len) {
        return InvalidArgument("--data: {} tokens in all, fewer than stage {}'s {} tokens",
                               src.stream_.size(), s + 1, stages[s].seq_len);
      }
    }
    return src;
  }

  const std::array<bool, kMixTasks>& enabled() const { return enabled_; }

  // The sample of task mix slot `slot`, `tokens` long, from `seed`.
  Result<Sample> Make(int slot, int64_t tokens, uint64_t seed) const {
    Sample s;
    const Task t = kMixOrder[size_t(slot)];
    if (t == Task::kLm && !stream_.empty()) {
      std::mt19937_64 rng(seed);
      const uint64_t span = stream_.size() - uint64_t(tokens) + 1;
      const size_t at = size_t(rng() % span);
      s.ids.assign(stream_.begin() + int64_t(at), stream_.begin() + int64_t(at) + tokens);
      return s;
    }
    TaskOptions opt;
    ASSIGN_OR_RETURN(TaskDocument doc, MakeTaskDocument(t, tokens, seed, *filler_, opt));
    s.ids = std::move(doc.ids);
    s.loss_mask = std::move(doc.loss_mask);
    for (int64_t p = doc.question_begin; p < doc.answer_begin; ++p) s.marked.push_back(p);
    if (dilute_to_ > tokens && !doc.needle_begins.empty()) {
      for (size_t i = 0; i < doc.needle_begins.size(); ++i) {
        s.handicap_spans.emplace_back(doc.needle_begins[i], doc.needle_ends[i]);
      }
      std::sort(s.handicap_spans.begin(), s.handicap_spans.end());
      size_t w = 0;  // merge touching or overlapping needles (vt chains may abut)
      for (size_t i = 1; i < s.handicap_spans.size(); ++i) {
        if (s.handicap_spans[i].first <= s.handicap_spans[w].second) {
          s.handicap_spans[w].second = std::max(s.handicap_spans[w].second, s.handicap_spans[i].second);
        } else {
          s.handicap_spans[++w] = s.handicap_spans[i];
        }
      }
      s.handicap_spans.resize(w + 1);
      s.handicap_nats = float(std::log(double(dilute_to_) / double(tokens)));
    }
    if (skip_to_ > tokens && !doc.needle_ends.empty()) {
      // The skip point: uniform in (last needle's end, question start]; the distance: uniform
      // in [0, skip_to - tokens]. Drawn from the sample's seed, apart from the document's draws.
      std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
      const int64_t last = *std::max_element(doc.needle_ends.begin(), doc.needle_ends.end());
      const int64_t room = doc.question_begin - last;
      if (room >= 1) {
        s.skip_at = last + 1 + int64_t(rng() % uint64_t(room));
        s.skip = int64_t(rng() % uint64_t(skip_to_ - tokens + 1));
      }
    }
    return s;
  }

 private:
  std::array<bool, kMixTasks> enabled_{};
  int64_t dilute_to_ = 0;
  int64_t skip_to_ = 0;
  std::vector<int32_t> stream_;
  std::optional<FillerCorpus> filler_;
};

// Index of the slot drawn from `mix` with u in [0, 1).
int DrawSlot(const TaskMix& mix, double u) {
  double acc = 0.0;
  int last = 0;
  for (int i = 0; i < kMixTasks; ++i) {
    if (mix[size_t(i)] <= 0) continue;
    last = i;
    acc += mix[size_t(i)];
    if (u < acc) return i;
  }
  return last;
}

// Keeps the lines of an existing train.jsonl up to `steps` (a resumed run continues it).
Status TruncateLog(const std::string& path, int64_t steps) {
  std::ifstream in(path);
  if (!in) return Status::Ok();
  std::string kept, line;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).at("step").get<int64_t>() <= steps) kept += line + "\n";
    } catch (const std::exception&) {
      break;  // a torn last line of a killed run
    }
  }
  return WriteFileAtomically(path, kept);
}

// The loss curves as a PNG beside train.jsonl (python3-matplotlib; skipped with a warning when
// it is missing).
void PlotCurves(const std::string& out) {
  const std::string script = fmt::format(R"PY(
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = [json.loads(l) for l in open("{0}/train.jsonl") if l.strip()]
if not rows: sys.exit(0)
fig, ax = plt.subplots(1, 2, figsize=(11, 4))
steps = [r["step"] for r in rows]
for key in ["loss", "ce", "length", "entropy", "cache_l1"]:
    if key in rows[0]:
        ax[0].plot(steps, [r[key] for r in rows], label=key, lw=0.8)
ax[0].set_xlabel("step"); ax[0].set_ylabel("loss"); ax[0].set_yscale("log"); ax[0].legend()
ax[1].plot(steps, [r["lr"] for r in rows], color="gray"); ax[1].set_xlabel("step"); ax[1].set_ylabel("lr")
for r0, r1 in zip(rows, rows[1:]):
    if r1["stage"] != r0["stage"]:
        for a in ax: a.axvline(r1["step"], color="k", ls=":", lw=0.6)
fig.tight_layout(); fig.savefig(sys.stdout.buffer, dpi=110, format="png")
)PY",
                                         out);
  const std::string py = out + "/.plot_train.py";
  if (!WriteFileAtomically(py, script).ok()) return;
  // Debian's interpreter, where python3-matplotlib lives (an earlier python3 on PATH may lack it).
  const char* python = ::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
  // The PNG comes back on the script's stdout and is written here, through WriteFileAtomically
  // (the script writes no file of its own).
  const std::string cmd = fmt::format("{} '{}' 2>/dev/null", python, py);
  std::string png;
  if (std::FILE* pipe = ::popen(cmd.c_str(), "r")) {
    char buf[65536];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, pipe)) > 0) png.append(buf, got);
    if (::pclose(pipe) != 0) png.clear();
  }
  if (png.empty()) {
    LONGCTX_LOG_WARN("train: no loss-curve PNG (python3-matplotlib missing?)");
  } else if (Status st = WriteFileAtomically(out + "/train.png", png); !st.ok()) {
    LONGCTX_LOG_WARN("train: no loss-curve PNG: {}", st.ToString());
  }
  std::error_code ec;
  fs::remove(py, ec);
}

}  // namespace

Status Train(comm::Communicator& world, const TrainOptions& o) {
  const int P = world.size(), me = world.rank();
  const auto deadline = [] { return comm::DeadlineIn(comm::DefaultTimeout()); };
  // ---- setup: schedule, model, optimizer, data -------------------------------------------------
  if (o.dp < 1 || P % o.dp != 0) {
    return InvalidArgument("--dp {}: must divide the {} ranks", o.dp, P);
  }
  if (o.batch < 1) return InvalidArgument("--batch {}: must be >= 1", o.batch);
  if (o.out.empty()) return InvalidArgument("--out is required");
  if (!(o.lr > 0) || !(o.min_lr >= 0) || o.min_lr > o.lr) {
    return InvalidArgument("--lr {} / --min-lr {}: need 0 <= min-lr <= lr, lr > 0", o.lr, o.min_lr);
  }
  ASSIGN_OR_RETURN(std::vector<Stage> stages, ParseCurriculum(o.curriculum));
  const int group_size = P / o.dp, group = me / group_size;
  ASSIGN_OR_RETURN(std::unique_ptr<comm::Communicator> seq_comm, world.Split(group, me));

  std::optional<worker::ParamBlock> params;
  AdamW opt;
  TrainState state;
  std::optional<SampleSource> source;
  Status st = [&]() -> Status {
    ASSIGN_OR_RETURN(model::Model m,
                     model::OpenModel(o.resume.empty() ? o.model : o.resume, o.model_seed));
    if (o.resume.empty()) {
      RETURN_IF_ERROR(model::ApplyOverrides(o.overrides, &m.config));
      if (o.rope_theta) {
        if (!(*o.rope_theta > 0)) return InvalidArgument("--rope-theta must be > 0");
        m.config.rope_theta = *o.rope_theta;
      }
    }
    const bool head = o.loss.length > 0 || m.weights.Contains(worker::kLengthHeadWeightName);
    ASSIGN_OR_RETURN(worker::ParamBlock p, worker::ParamBlock::FromModel(m, head));
    params.emplace(std::move(p));
    opt = AdamW(params->size());
    state.curriculum = FormatCurriculum(stages);
    state.seed = o.seed;
    if (!o.resume.empty()) {
      TrainState saved;
      RETURN_IF_ERROR(LoadOptimizerState(o.resume, *params, &opt, &saved));
      if (saved.curriculum != state.curriculum || saved.seed != state.seed) {
        return InvalidArgument(
            "--resume {}: the checkpoint was made with --curriculum {} --seed {}, this run has "
            "--curriculum {} --seed {}",
            o.resume, saved.curriculum, saved.seed, state.curriculum, state.seed);
      }
      state = saved;
    }
    ASSIGN_OR_RETURN(SampleSource src, SampleSource::Open(o, stages));
    source.emplace(std::move(src));
    if (me == 0) {
      std::error_code ec;
      fs::create_directories(o.out, ec);
      if (ec) return FailedPrecondition("--out {}: {}", o.out, ec.message());
      if (o.resume.empty()) {
        fs::remove(o.out + "/train.jsonl", ec);
      } else {
        RETURN_IF_ERROR(TruncateLog(o.out + "/train.jsonl", state.step));
      }
    }
    return Status::Ok();
  }();
  RETURN_IF_ERROR(comm::AgreeOnStatus(world, st));

  ThreadPool pool(o.threads);
  worker::SetGemmThreads(pool.size());
  const attention::ExecOptions exec{&pool, attention::Isa::kAuto};
  std::vector<float> grads(params->size());
  int64_t total_steps = 0;
  for (const Stage& s : stages) total_steps += s.steps;
  if (o.max_steps >= 0) total_steps = std::min(total_steps, o.max_steps);
  std::FILE* log = nullptr;
  if (me == 0) {
    // An append-only log, one fflush()ed JSON line per step (not AtomicFile: rewriting it each
    // step would cost O(steps^2)); a torn last line of a killed run is dropped on resume
    // (TruncateLog, which rewrites it atomically). O_NOFOLLOW: a symlink cannot redirect it.
    const std::string path = o.out + "/train.jsonl";
    const int fd =
        ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0 || (log = ::fdopen(fd, "a")) == nullptr) {
      const int err = errno;
      if (fd >= 0) ::close(fd);
      return ErrnoStatus(err, "open " + path);
    }
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> log_guard(log, [](std::FILE* f) {
    return f ? std::fclose(f) : 0;
  });
  const bool bar = o.progress && me == 0 && isatty(fileno(stderr));
  std::string last_saved = o.resume;

  // ---- the loop ---------------------------------------------------------------------------------
  for (int64_t step = state.step; step < total_steps; ++step) {
    const auto t_step = Clock::now();
    const StagePosition pos = Locate(stages, step);
    const int64_t seq_len = StepSequenceLength(stages[size_t(pos.stage)], o.seed, step);
    const double lr = StageLearningRate(pos.step_in_stage, pos.stage_steps, o.lr, o.min_lr);
    TaskMix mix = StageTaskMix(pos.stage, int(stages.size()), source->enabled());
    if (o.mining) mix = MinedTaskMix(mix, state.ema_loss);

    // Data + forward + loss + backward, sequence by sequence; the gradients accumulate.
    std::fill(grads.begin(), grads.end(), 0.0f);
    // [0..4] loss terms summed over the group's sequences, [5..9] per-slot loss sums,
    // [10..14] per-slot counts.
    std::array<double, 15> sums{};
    worker::TrainStepStats ts_sum;
    for (int64_t b = 0; b < o.batch; ++b) {
      const uint64_t dseed = DocumentSeed(o.seed, (step * o.dp + group) * o.batch + b);
      std::mt19937_64 rng(dseed);
      const int slot = DrawSlot(mix, Uniform(rng));
      worker::LossTerms loss;
      worker::TrainStepStats ts;
      st = [&]() -> Status {
        ASSIGN_OR_RETURN(Sample sample, source->Make(slot, seq_len, dseed));
        return AccumulateSampleGradients(*seq_comm, *params, sample, o.loss, exec, grads.data(),
                                         &loss, nullptr, &ts);
      }();
      RETURN_IF_ERROR(comm::AgreeOnStatus(world, st).WithContext(fmt::format("step {}", step + 1)));
      sums[0] += loss.total;
      sums[1] += loss.ce;
      sums[2] += loss.length;
      sums[3] += loss.entropy;
      sums[4] += loss.cache_l1;
      sums[size_t(5 + slot)] += loss.total;
      sums[size_t(10 + slot)] += 1.0;
      ts_sum.forward_seconds += ts.forward_seconds;
      ts_sum.backward_seconds += ts.backward_seconds;
      ts_sum.attention_seconds += ts.attention_seconds;
      ts_sum.gemm_seconds += ts.gemm_seconds;
    }
    // Reduce: the weight gradients over every rank (sequence shards and data-parallel groups),
    // the loss sums over the groups (each group's ranks hold the same values).
    const double sequences = double(o.batch) * double(o.dp);
    RETURN_IF_ERROR(world.AllReduce(grads.data(), grads.size(), comm::ReduceType::kF32,
                                    comm::ReduceOp::kSum, deadline()));
    RETURN_IF_ERROR(world.AllReduce(sums.data(), sums.size(), comm::ReduceType::kF64,
                                    comm::ReduceOp::kSum, deadline()));
    for (double& x : sums) x /= double(group_size);
    const double mean_loss = sums[0] / sequences;
    if (!std::isfinite(mean_loss)) {
      return Internal("step {}: the loss is {}; stopped without saving (last checkpoint: {})",
                      step + 1, mean_loss, last_saved.empty() ? "none" : last_saved);
    }
    const float inv = float(1.0 / sequences);
    for (float& g : grads) g *= inv;
    // Clip + AdamW step (every rank applies the same update to the same weights).
    const double grad_norm = opt.Step(*params, grads.data(), lr, o.adam);
    for (int i = 0; i < kMixTasks; ++i) {
      if (sums[size_t(10 + i)] == 0) continue;
      const double m = sums[size_t(5 + i)] / sums[size_t(10 + i)];
      double& ema = state.ema_loss[size_t(i)];
      ema = ema == 0.0 ? m : 0.9 * ema + 0.1 * m;
    }
    state.step = step + 1;
    state.adam_steps = opt.steps();
    state.tokens_seen += double(seq_len) * sequences;
    const double seconds = std::chrono::duration<double>(Clock::now() - t_step).count();

    // Log.
    if (me == 0) {
      nlohmann::json j;
      j["step"] = state.step;
      j["stage"] = pos.stage + 1;
      j["seq_len"] = seq_len;
      j["tokens_seen"] = state.tokens_seen;
      j["lr"] = lr;
      j["loss"] = mean_loss;
      if (o.loss.ce > 0) j["ce"] = sums[1] / sequences;
      if (o.loss.length > 0) j["length"] = sums[2] / sequences;
      if (o.loss.entropy > 0) j["entropy"] = sums[3] / sequences;
      if (o.loss.cache_l1 > 0) j["cache_l1"] = sums[4] / sequences;
      nlohmann::json tasks;
      for (int i = 0; i < kMixTasks; ++i) {
        if (sums[size_t(10 + i)] > 0) {
          tasks[std::string(TaskName(kMixOrder[size_t(i)]))] = sums[size_t(5 + i)] / sums[size_t(10 + i)];
        }
      }
      j["task_loss"] = tasks;
      j["grad_norm"] = grad_norm;
      j["tokens_per_s"] = double(seq_len) * sequences / seconds;
      j["seconds"] = seconds;
      j["forward_s"] = ts_sum.forward_seconds;
      j["backward_s"] = ts_sum.backward_seconds;
      j["attention_s"] = ts_sum.attention_seconds;
      j["gemm_s"] = ts_sum.gemm_seconds;
      j["peak_rss"] = PeakRssBytes();
      const std::string line = j.dump() + "\n";
      if (std::fputs(line.c_str(), log) < 0 || std::fflush(log) != 0) {
        return ErrnoStatus(errno, "write " + o.out + "/train.jsonl");
      }
      if (bar) {
        const int width = 30, filled = int(width * state.step / std::max<int64_t>(1, total_steps));
        std::fprintf(stderr, "\r[%s%s] step %lld/%lld stage %d len %lld loss %.4f lr %.2e %.0f tok/s ",
                     std::string(size_t(filled), '#').c_str(),
                     std::string(size_t(width - filled), '.').c_str(), (long long)state.step,
                     (long long)total_steps, pos.stage + 1, (long long)seq_len, mean_loss, lr,
                     double(seq_len) * sequences / seconds);
        std::fflush(stderr);
      }
    }
    // Save.
    if (o.save_every > 0 && state.step % o.save_every == 0) {
      const std::string dir = fmt::format("{}/step-{}", o.out, state.step);
      st = me == 0 ? SaveCheckpoint(dir, *params, opt, state) : Status::Ok();
      RETURN_IF_ERROR(comm::AgreeOnStatus(world, st));
      last_saved = dir;
    }
  }
  if (bar) std::fprintf(stderr, "\n");
  st = me == 0 ? SaveCheckpoint(o.out + "/final", *params, opt, state) : Status::Ok();
  RETURN_IF_ERROR(comm::AgreeOnStatus(world, st));
  if (me == 0) PlotCurves(o.out);
  return Status::Ok();
}

}  // namespace longctx::train
