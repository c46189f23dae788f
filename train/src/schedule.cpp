#include "longctx/train/schedule.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "longctx/core/byte_size.h"

namespace longctx::train {
namespace {

// A length or step count: an integer > 0 with an optional K/M suffix (binary, as every size flag).
Result<int64_t> ParseCount(std::string_view s, std::string_view what) {
  Result<uint64_t> v = ParseByteSize(s, fmt::format("--curriculum: {}", what));
  if (!v.ok()) return v.status();
  if (*v == 0 || *v > (uint64_t{1} << 40)) {
    return InvalidArgument("--curriculum: bad {} '{}' (a positive integer, K/M suffix allowed)",
                           what, s);
  }
  return int64_t(*v);
}

}  // namespace

Result<std::vector<Stage>> ParseCurriculum(std::string_view text) {
  std::vector<Stage> stages;
  if (text.empty()) return InvalidArgument("--curriculum: empty (e.g. 2K:400,16K:100)");
  size_t pos = 0;
  while (true) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string_view item = text.substr(pos, comma - pos);
    const size_t colon = item.find(':');
    if (colon == std::string_view::npos) {
      return InvalidArgument("--curriculum: stage '{}' is not LENGTH:STEPS", item);
    }
    Stage st;
    const std::string_view len = item.substr(0, colon);
    const size_t dash = len.find('-');
    if (dash != std::string_view::npos) {
      ASSIGN_OR_RETURN(st.min_len, ParseCount(len.substr(0, dash), "length"));
      ASSIGN_OR_RETURN(st.seq_len, ParseCount(len.substr(dash + 1), "length"));
      if (st.min_len > st.seq_len) {
        return InvalidArgument("--curriculum: random-length stage '{}' has min > max", len);
      }
    } else {
      ASSIGN_OR_RETURN(st.seq_len, ParseCount(len, "length"));
      st.min_len = st.seq_len;
    }
    ASSIGN_OR_RETURN(st.steps, ParseCount(item.substr(colon + 1), "step count"));
    if (st.min_len < 2) return InvalidArgument("--curriculum: a sequence needs >= 2 tokens");
    stages.push_back(st);
    if (comma == text.size()) break;
    pos = comma + 1;
  }
  return stages;
}

std::string FormatCurriculum(const std::vector<Stage>& stages) {
  std::string out;
  for (const Stage& s : stages) {
    if (!out.empty()) out += ',';
    if (s.min_len != s.seq_len) out += fmt::format("{}-", s.min_len);
    out += fmt::format("{}:{}", s.seq_len, s.steps);
  }
  return out;
}

StagePosition Locate(const std::vector<Stage>& stages, int64_t step) {
  StagePosition p;
  int64_t first = 0;
  for (size_t i = 0; i < stages.size(); ++i) {
    if (step < first + stages[i].steps) {
      p.stage = int(i);
      p.step_in_stage = step - first;
      p.stage_steps = stages[i].steps;
      return p;
    }
    first += stages[i].steps;
  }
  p.done = true;
  p.stage = stages.empty() ? 0 : int(stages.size()) - 1;
  return p;
}

int64_t StepSequenceLength(const Stage& stage, uint64_t seed, int64_t step) {
  if (stage.min_len >= stage.seq_len) return stage.seq_len;
  // splitmix64 of (seed, step): no std:: distribution, the same draw on every library.
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + uint64_t(step) + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return stage.min_len + int64_t(z % uint64_t(stage.seq_len - stage.min_len + 1));
}

double StageLearningRate(int64_t i, int64_t steps, double max_lr, double min_lr) {
  const int64_t warmup = std::max<int64_t>(1, (steps + 9) / 10);
  if (i < warmup) return max_lr * double(i + 1) / double(warmup);
  const int64_t decay = std::max<int64_t>(1, steps - warmup);
  const double progress = std::min(1.0, double(i - warmup + 1) / double(decay));
  return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

TaskMix StageTaskMix(int stage, int stages, const std::array<bool, kMixTasks>& enabled) {
  // From simple retrieval to multi-step tasks: t = 0 at the first stage, 1 at the last.
  const double t = stages > 1 ? double(stage) / double(stages - 1) : 0.0;
  TaskMix mix = {0.35 - 0.15 * t,   // passkey
                 0.30 - 0.10 * t,   // niah
                 0.10 + 0.15 * t,   // multikey
                 0.05 + 0.15 * t,   // vt
                 0.20 - 0.05 * t};  // lm
  double sum = 0.0;
  for (int i = 0; i < kMixTasks; ++i) {
    if (!enabled[size_t(i)]) mix[size_t(i)] = 0.0;
    sum += mix[size_t(i)];
  }
  for (double& w : mix) w = sum > 0 ? w / sum : 0.0;
  return mix;
}

TaskMix MinedTaskMix(const TaskMix& base, const std::array<double, kMixTasks>& ema) {
  double mean = 0.0;
  int known = 0;
  for (int i = 0; i < kMixTasks; ++i) {
    if (base[size_t(i)] > 0 && ema[size_t(i)] > 0) {
      mean += ema[size_t(i)];
      ++known;
    }
  }
  if (known == 0) return base;
  mean /= known;
  TaskMix mix = base;
  double sum = 0.0;
  for (int i = 0; i < kMixTasks; ++i) {
    if (base[size_t(i)] > 0 && ema[size_t(i)] > 0) {
      mix[size_t(i)] = base[size_t(i)] * std::clamp(ema[size_t(i)] / mean, 0.5, 2.0);
    }
    sum += mix[size_t(i)];
  }
  for (double& w : mix) w /= sum;
  return mix;
}

}  // namespace longctx::train
