// The training engine's small pure parts against plain references: the loss and curriculum
// parsers, the stage schedule, the task mix and mining, AdamW against the textbook formula in
// double, checkpoints (round trip, atomic replacement, mismatches), and the whole model's
// forward + backward on one process against central finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "longctx/comm/communicator.h"
#include "longctx/model/builtin.h"
#include "longctx/test/temp_dir.h"
#include "longctx/train/checkpoint.h"
#include "longctx/train/optimizer.h"
#include "longctx/train/sample_step.h"
#include "longctx/train/schedule.h"
#include "longctx/worker/param_block.h"
#include "longctx/worker/train_step.h"

namespace longctx::train {
namespace {

namespace fs = std::filesystem;

TEST(LossSpec, ParsesTermsAndWeights) {
  auto w = worker::ParseLossSpec("ce,length:0.5,entropy:0.01,cache-l1:2");
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_EQ(w->ce, 1.0);
  EXPECT_EQ(w->length, 0.5);
  EXPECT_EQ(w->entropy, 0.01);
  EXPECT_EQ(w->cache_l1, 2.0);
  auto only = worker::ParseLossSpec("length");
  ASSERT_TRUE(only.ok());
  EXPECT_EQ(only->ce, 0.0);
  EXPECT_EQ(only->length, 1.0);
  for (const char* bad : {"", "ce,", "xent", "ce:abc", "ce:-1", "length:", "ce:nan"}) {
    EXPECT_FALSE(worker::ParseLossSpec(bad).ok()) << bad;
  }
}

TEST(Curriculum, ParsesStagesAndLocatesSteps) {
  auto s = ParseCurriculum("2K:400,16K:100,64:3");
  ASSERT_TRUE(s.ok()) << s.status().message();
  ASSERT_EQ(s->size(), 3u);
  EXPECT_EQ((*s)[0].seq_len, 2048);
  EXPECT_EQ((*s)[1].seq_len, 16384);
  EXPECT_EQ((*s)[2].steps, 3);
  EXPECT_EQ(FormatCurriculum(*s), "2048:400,16384:100,64:3");
  StagePosition p = Locate(*s, 0);
  EXPECT_EQ(p.stage, 0);
  p = Locate(*s, 400);
  EXPECT_EQ(p.stage, 1);
  EXPECT_EQ(p.step_in_stage, 0);
  p = Locate(*s, 502);
  EXPECT_EQ(p.stage, 2);
  EXPECT_EQ(p.step_in_stage, 2);
  EXPECT_TRUE(Locate(*s, 503).done);
  for (const char* bad : {"", "2K", "2K:0", "0:5", "1:5", "2X:4", "2K:4,", "-3:2", "2K:4:5"}) {
    EXPECT_FALSE(ParseCurriculum(bad).ok()) << bad;
  }
}

TEST(Curriculum, RandomLengthStages) {
  auto s = ParseCurriculum("256-2K:50,4K:5");
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ((*s)[0].min_len, 256);
  EXPECT_EQ((*s)[0].seq_len, 2048);
  EXPECT_EQ((*s)[1].min_len, 4096);
  EXPECT_EQ(FormatCurriculum(*s), "256-2048:50,4096:5");
  int64_t lo = 1 << 30, hi = 0;
  for (int64_t step = 0; step < 200; ++step) {
    const int64_t n = StepSequenceLength((*s)[0], 9, step);
    EXPECT_EQ(n, StepSequenceLength((*s)[0], 9, step));  // a pure function of (seed, step)
    lo = std::min(lo, n);
    hi = std::max(hi, n);
  }
  EXPECT_GE(lo, 256);
  EXPECT_LE(hi, 2048);
  EXPECT_LT(lo, 600);   // the draws spread over the range
  EXPECT_GT(hi, 1700);
  EXPECT_EQ(StepSequenceLength((*s)[1], 9, 3), 4096);
  EXPECT_FALSE(ParseCurriculum("2K-256:5").ok());
  EXPECT_FALSE(ParseCurriculum("1-8:5").ok());
}

TEST(Schedule, WarmupThenCosinePerStage) {
  const int64_t steps = 100;  // 10 warmup steps
  EXPECT_DOUBLE_EQ(StageLearningRate(0, steps, 1.0, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(StageLearningRate(9, steps, 1.0, 0.1), 1.0);
  EXPECT_NEAR(StageLearningRate(99, steps, 1.0, 0.1), 0.1, 1e-12);
  double prev = 1.0;
  for (int64_t i = 10; i < steps; ++i) {  // monotone decay after the warmup
    const double lr = StageLearningRate(i, steps, 1.0, 0.1);
    EXPECT_LE(lr, prev + 1e-15);
    EXPECT_GE(lr, 0.1 - 1e-12);
    prev = lr;
  }
  // Midway through the cosine: (max + min) / 2.
  EXPECT_NEAR(StageLearningRate(10 + 45 - 1, steps, 1.0, 0.0), 0.5, 0.02);
  EXPECT_DOUBLE_EQ(StageLearningRate(0, 1, 2.0, 0.0), 2.0);  // a one-step stage
}

TEST(TaskMix, MovesTowardMultiStepTasksAndMines) {
  const std::array<bool, kMixTasks> all = {true, true, true, true, true};
  const TaskMix first = StageTaskMix(0, 3, all), last = StageTaskMix(2, 3, all);
  double s0 = 0, s1 = 0;
  for (int i = 0; i < kMixTasks; ++i) {
    s0 += first[size_t(i)];
    s1 += last[size_t(i)];
  }
  EXPECT_NEAR(s0, 1.0, 1e-12);
  EXPECT_NEAR(s1, 1.0, 1e-12);
  EXPECT_GT(first[0] + first[1], last[0] + last[1]);  // retrieval first
  EXPECT_LT(first[2] + first[3], last[2] + last[3]);  // multi-key and vt later
  const std::array<bool, kMixTasks> only_passkey = {true, false, false, false, false};
  EXPECT_EQ(StageTaskMix(1, 3, only_passkey)[0], 1.0);
  // Mining: the task with the higher loss gets more weight, within [0.5, 2] x.
  const TaskMix mined = MinedTaskMix(first, {4.0, 1.0, 1.0, 1.0, 1.0});
  EXPECT_GT(mined[0] / first[0], mined[1] / first[1]);
  EXPECT_EQ(MinedTaskMix(first, {0, 0, 0, 0, 0}), first);
}

Result<worker::ParamBlock> TinyParams(bool head) {
  ASSIGN_OR_RETURN(model::Model m, model::BuiltinWeights("builtin:tiny"));
  return worker::ParamBlock::FromModel(m, head);
}

// The backward covers plain Llama/Mistral layers: the families' extras are refused by name.
TEST(ParamBlock, RefusesFeaturesWithoutABackward) {
  for (auto [preset, feature] : {std::pair{"qwen2", "the q/k/v biases of model_type qwen2"},
                                 std::pair{"qwen3", "the q/k RMSNorm of model_type qwen3"},
                                 std::pair{"llama3", "rope_type llama3"}}) {
    auto m = model::BuiltinWeights(std::string("builtin:") + preset);
    ASSERT_TRUE(m.ok()) << m.status().message();
    auto p = worker::ParamBlock::FromModel(*m, false);
    ASSERT_FALSE(p.ok()) << preset;
    EXPECT_EQ(p.status().code(), StatusCode::kUnimplemented);
    EXPECT_NE(p.status().message().find(std::string("training does not support ") + feature),
              std::string::npos)
        << p.status().message();
  }
  auto mistral = model::BuiltinWeights("builtin:mistral");
  ASSERT_TRUE(mistral.ok());
  EXPECT_TRUE(worker::ParamBlock::FromModel(*mistral, false).ok());
}

TEST(AdamW, MatchesTheFormulaInDouble) {
  auto p = TinyParams(false);
  ASSERT_TRUE(p.ok()) << p.status().message();
  std::vector<double> w(p->data(), p->data() + p->size()), m(w.size(), 0), v(w.size(), 0);
  AdamW opt(p->size());
  AdamWConfig cfg;
  cfg.clip_norm = 0;  // no clipping: compare the update alone
  std::mt19937_64 rng(3);
  for (int t = 1; t <= 3; ++t) {
    std::vector<float> g(p->size());
    for (float& x : g) x = float(int64_t(rng() % 2001) - 1000) * 1e-4f;
    const double lr = 1e-2;
    opt.Step(*p, g.data(), lr, cfg);
    for (const worker::ParamTensor& pt : p->tensors()) {
      for (size_t i = pt.offset; i < pt.offset + pt.numel; ++i) {
        m[i] = 0.9 * m[i] + 0.1 * g[i];
        v[i] = 0.95 * v[i] + 0.05 * double(g[i]) * g[i];
        const double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.95, t));
        w[i] -= lr * (mh / (std::sqrt(vh) + 1e-8) + (pt.decay ? 0.1 * w[i] : 0.0));
      }
    }
  }
  double max_err = 0;
  for (size_t i = 0; i < w.size(); ++i) max_err = std::max(max_err, std::fabs(w[i] - p->data()[i]));
  EXPECT_LT(max_err, 1e-5);
  // Norms and the embedding do not decay; projections do.
  EXPECT_FALSE(p->Find("model.embed_tokens.weight")->decay);
  EXPECT_FALSE(p->Find("model.norm.weight")->decay);
  EXPECT_TRUE(p->Find("model.layers.0.self_attn.q_proj.weight")->decay);
}

TEST(AdamW, ClipsByTheGlobalNorm) {
  auto p = TinyParams(false);
  ASSERT_TRUE(p.ok());
  std::vector<float> g(p->size(), 1.0f);
  AdamW opt(p->size());
  AdamWConfig cfg;
  cfg.clip_norm = 2.0;
  const double norm = opt.Step(*p, g.data(), 0.0, cfg);
  EXPECT_NEAR(norm, std::sqrt(double(p->size())), 1e-6 * norm);
  EXPECT_NEAR(GlobalNorm(g.data(), g.size()), 2.0, 1e-5);
}

TEST(Checkpoint, RoundTripsAndReplacesWhole) {
  const test::TempDir tmp("longctx_ckpt");
  const fs::path dir = tmp.path() / "checkpoints";  // made by SaveCheckpoint
  auto p = TinyParams(true);
  ASSERT_TRUE(p.ok());
  AdamW opt(p->size());
  for (size_t i = 0; i < p->size(); ++i) {
    opt.m()[i] = float(i) * 1e-3f;
    opt.v()[i] = float(i) * 1e-4f;
  }
  opt.set_steps(7);
  TrainState st;
  st.step = 7;
  st.adam_steps = 7;
  st.curriculum = "64:10";
  st.seed = 5;
  st.ema_loss = {1.25, 0, 0.1, 0, 3.0};
  st.tokens_seen = 448;
  ASSERT_TRUE(SaveCheckpoint((dir / "step-7").string(), *p, opt, st).ok());
  // Saving again over it replaces it whole; no temporary directory stays behind.
  ASSERT_TRUE(SaveCheckpoint((dir / "step-7").string(), *p, opt, st).ok());
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "step-7");
  }
  EXPECT_EQ(entries, 1);
  // `longctx run` loads it as a model: config.json + model.safetensors with the length head.
  auto m = model::OpenModel((dir / "step-7").string());
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_TRUE(m->weights.Contains(worker::kLengthHeadWeightName));
  auto q = worker::ParamBlock::FromModel(*m, true);
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->size(), p->size());
  EXPECT_EQ(0, std::memcmp(q->data(), p->data(), p->size() * sizeof(float)));
  AdamW back;
  TrainState st2;
  ASSERT_TRUE(LoadOptimizerState((dir / "step-7").string(), *q, &back, &st2).ok());
  EXPECT_EQ(back.m(), opt.m());
  EXPECT_EQ(back.v(), opt.v());
  EXPECT_EQ(back.steps(), 7);
  EXPECT_EQ(st2.ema_loss, st.ema_loss);
  EXPECT_EQ(st2.curriculum, "64:10");
  // A checkpoint of another model shape is refused by name.
  auto other = worker::ParamBlock::FromModel(*m, false);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(LoadOptimizerState((dir / "step-7").string(), *other, &back, &st2).ok());
  fs::remove((dir / "step-7" / "optimizer.safetensors"));
  Status missing = LoadOptimizerState((dir / "step-7").string(), *q, &back, &st2);
  EXPECT_FALSE(missing.ok());
}

// Central differences of the whole model's loss (float32 forward: steps of 1e-2 on chosen
// weights) against the backward's gradient, on one process. The float64 torch reference
// (tests/python/test_grad_reference.py) is the tight check; this one keeps the unit label
// honest without python.
TEST(ForwardBackward, MatchesFiniteDifferences) {
  auto comm = comm::WorldCommunicator("self");
  ASSERT_TRUE(comm.ok());
  Sample s;
  const std::string text =
      "The pass key is 4242. Remember it.\n\nIt rained; then it stopped. What is the key? 4242.";
  for (char ch : text) s.ids.push_back(int32_t(uint8_t(ch)));
  s.loss_mask.assign(s.ids.size(), 1);
  for (int64_t i = int64_t(text.find("What")); i < int64_t(text.size()) - 6; ++i) s.marked.push_back(i);
  for (const char* fusion : {"union", "weighted:0.7"}) {
    auto m = model::BuiltinWeights("builtin:tiny");
    ASSERT_TRUE(m.ok());
    model::HybridOverrides ov;
    ov.window = std::vector<int64_t>{8};
    ov.fusion = fusion;
    ASSERT_TRUE(model::ApplyOverrides(ov, &m->config).ok());
    auto p = worker::ParamBlock::FromModel(*m, true);
    ASSERT_TRUE(p.ok());
    worker::ParamBlock& P = *p;
    worker::LossWeights lw;
    lw.length = 0.3;
    lw.entropy = 0.2;
    lw.cache_l1 = 0.5;
    const attention::ExecOptions exec{};
    std::vector<float> grads(P.size(), 0.0f);
    worker::LossTerms loss;
    ASSERT_TRUE(AccumulateSampleGradients(**comm, P, s, lw, exec, grads.data(), &loss, nullptr,
                                          nullptr)
                    .ok());
    EXPECT_GT(loss.entropy, 0.0);
    auto loss_at = [&]() {
      std::vector<float> scratch(P.size(), 0.0f);
      worker::LossTerms l;
      EXPECT_TRUE(AccumulateSampleGradients(**comm, P, s, lw, exec, scratch.data(), &l, nullptr,
                                            nullptr)
                      .ok());
      return l.total;
    };
    std::mt19937_64 rng(11);
    for (const worker::ParamTensor& t : P.tensors()) {
      for (int trial = 0; trial < 2; ++trial) {
        const size_t i = t.offset + size_t(rng() % t.numel);
        if (std::fabs(grads[i]) < 1e-4) continue;  // below float32 finite-difference resolution
        const float w0 = P.data()[i], h = 1e-2f * std::max(1.0f, std::fabs(w0));
        P.data()[i] = w0 + h;
        const double up = loss_at();
        P.data()[i] = w0 - h;
        const double down = loss_at();
        P.data()[i] = w0;
        const double fd = (up - down) / (2.0 * double(h));
        EXPECT_NEAR(fd, grads[i], 2e-2 * std::fabs(grads[i]) + 2e-4)
            << fusion << " " << t.name << "[" << i - t.offset << "]";
      }
    }
  }
}

}  // namespace
}  // namespace longctx::train
