#include "longctx/core/file.h"
#include "longctx/bench/attention_bench.h"
#include "longctx/bench/comm_bench.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "longctx/attention/attention_backward.h"
#include "longctx/attention/hybrid_attention.h"
#include "longctx/core/npy.h"
#include "longctx/core/thread_pool.h"
#include "matrix_internal.h"

namespace longctx::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Deterministic, fast pseudo-random fill in [-1, 1) (splitmix64).
void Fill(std::vector<float>& x, uint64_t seed) {
  uint64_t s = seed;
  for (float& e : x) {
    s += 0x9e3779b97f4a7c15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    e = float(int64_t(z >> 40) - (1ll << 23)) / float(1 << 23);
  }
}

// OpenBLAS sgemm GFLOP/s, square m=n=k=2048, best of 3 after a warm-up.
double SgemmGflops(int threads) {
  constexpr int kN = 2048;
  openblas_set_num_threads(threads);
  std::vector<float> a(size_t(kN) * kN), b(size_t(kN) * kN), c(size_t(kN) * kN);
  Fill(a, 1);
  Fill(b, 2);
  double best = 1e30;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kN, kN, kN, 1.0f, a.data(), kN,
                b.data(), kN, 0.0f, c.data(), kN);
    const double s = Seconds(t0);
    if (rep > 0) best = std::min(best, s);
  }
  return 2.0 * kN * kN * double(kN) / best * 1e-9;
}

// Deterministic q/k/v [n, heads|kv_heads, d] stored in `dtype`: f32 values in qf/kf/vf and,
// for f16/bf16, their narrowed copies, which the views then point at.
struct BenchInputs {
  std::vector<float> qf, kf, vf;
  std::vector<uint16_t> q16, k16, v16;
  attention::TokenView q, k, v;
};

std::unique_ptr<BenchInputs> MakeBenchInputs(int64_t n, int64_t heads, int64_t kv_heads,
                                             int64_t d, DType dtype) {
  auto in = std::make_unique<BenchInputs>();
  in->qf.resize(size_t(n * heads * d));
  in->kf.resize(size_t(n * kv_heads * d));
  in->vf.resize(size_t(n * kv_heads * d));
  Fill(in->qf, 11);
  Fill(in->kf, 12);
  Fill(in->vf, 13);
  const void *qp = in->qf.data(), *kp = in->kf.data(), *vp = in->vf.data();
  if (dtype != DType::kF32) {
    for (auto [x, y] : {std::pair{&in->qf, &in->q16}, std::pair{&in->kf, &in->k16},
                        std::pair{&in->vf, &in->v16}}) {
      y->resize(x->size());
      for (size_t i = 0; i < x->size(); ++i) {
        (*y)[i] = dtype == DType::kF16 ? FloatToHalf((*x)[i]) : FloatToBF16((*x)[i]);
      }
    }
    qp = in->q16.data();
    kp = in->k16.data();
    vp = in->v16.data();
  }
  in->q = attention::TokenView::Dense(qp, dtype, n, heads, d);
  in->k = attention::TokenView::Dense(kp, dtype, n, kv_heads, d);
  in->v = attention::TokenView::Dense(vp, dtype, n, kv_heads, d);
  return in;
}

}  // namespace

Status RunAttentionBench(const AttentionBenchOptions& o) {
  ASSIGN_OR_RETURN(attention::Isa isa, attention::ParseIsa(o.isa));
  if (isa == attention::Isa::kAuto) isa = attention::BestIsa();
  if (!attention::IsaSupported(isa)) return InvalidArgument("--isa {} is not supported", o.isa);
  DType dtype;
  if (o.dtype == "f32") dtype = DType::kF32;
  else if (o.dtype == "f16") dtype = DType::kF16;
  else if (o.dtype == "bf16") dtype = DType::kBF16;
  else return InvalidArgument("--dtype must be f32, f16 or bf16, got '{}'", o.dtype);
  if (o.heads < 1 || o.kv_heads < 1 || o.heads % o.kv_heads != 0) {
    return InvalidArgument("--heads must be a positive multiple of --kv-heads");
  }
  for (const auto& g : o.globals) {
    if (g != "none" && g != "log") return InvalidArgument("--globals takes none and/or log");
  }
  if (o.reps < 1) return InvalidArgument("--reps must be >= 1");

  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  const char* chose = std::getenv("LONGCTX_BLAS_REEXEC_FROM");
  fmt::print("# BLAS: {}; kernel {} (chosen by {}{}{})\n", openblas_get_config(),
             openblas_get_corename(),
             chose ? "longctx; the library chose " : (coretype ? "the user" : "the library"),
             chose ? chose : "", coretype && !chose ? " via OPENBLAS_CORETYPE" : "");
  std::vector<double> sgemm(o.threads.size());
  for (size_t t = 0; t < o.threads.size(); ++t) {
    if (o.threads[t] < 1) return InvalidArgument("--threads values must be >= 1");
    sgemm[t] = SgemmGflops(o.threads[t]);
    fmt::print("# OpenBLAS sgemm 2048^3, {} thread(s): {:.1f} GFLOP/s\n", o.threads[t], sgemm[t]);
  }
  fmt::print("# isa={} dtype={} heads={}/{} causal fusion=union; GFLOP/s counts allowed pairs x "
             "4d only (backward: x 10d, FlashAttention-2's 2.5x; f32 only)\n",
             attention::IsaName(isa), o.dtype, o.heads, o.kv_heads);
  fmt::print("{:>7} {:>4} {:>5} {:>5} {:>3} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7}\n", "n", "d", "W",
             "globs", "thr", "seconds", "GFLOP/s", "/sgemm", "bwd_s", "bwd_GF/s", "bwd/fwd");
  std::fflush(stdout);

  std::string json = "[\n";
  bool first_json = true;
  for (int64_t n : o.n) {
    for (int64_t d : o.head_dim) {
      if (n < 1 || d < 1) return InvalidArgument("--n and --d values must be >= 1");
      // Inputs stored in the benchmarked dtype.
      const std::unique_ptr<BenchInputs> in = MakeBenchInputs(n, o.heads, o.kv_heads, d, dtype);
      const attention::TokenView &q = in->q, &k = in->k, &v = in->v;
      std::vector<float> out(size_t(n * o.heads * d)), lse(size_t(n * o.heads));
      for (int64_t w : o.window) {
        for (const auto& gmode : o.globals) {
          const std::vector<int64_t> globals = gmode == "log" ? EvenGlobals(n, LogGlobalCount(n)) : std::vector<int64_t>{};
          attention::AttentionSpec spec;
          spec.window = w;
          const double flops =
              4.0 * double(d) * double(attention::AllowedPairs(n, o.heads, globals, spec));
          for (size_t t = 0; t < o.threads.size(); ++t) {
            ThreadPool pool(o.threads[t]);
            attention::ExecOptions exec{&pool, isa};
            double best = 1e30;
            for (int rep = 0; rep <= o.reps; ++rep) {
              const auto t0 = Clock::now();
              RETURN_IF_ERROR(attention::HybridAttention(q, k, v, globals, spec, out.data(),
                                                         lse.data(), exec));
              if (rep > 0) best = std::min(best, Seconds(t0));
            }
            const double gf = flops / best * 1e-9;
            // Backward (f32 only): HybridAttentionBackward from this forward's out/lse.
            double bwd = 0.0;
            if (dtype == DType::kF32) {
              std::vector<float> dout(out.size()), dq(out.size()), dk(in->kf.size()), dv(in->vf.size());
              Fill(dout, 14);
              bwd = 1e30;
              for (int rep = 0; rep <= o.reps; ++rep) {
                const auto t0 = Clock::now();
                RETURN_IF_ERROR(attention::HybridAttentionBackward(
                    q, k, v, globals, spec, out.data(), lse.data(), dout.data(), dq.data(),
                    dk.data(), dv.data(), exec));
                if (rep > 0) bwd = std::min(bwd, Seconds(t0));
              }
            }
            const double bgf = bwd > 0.0 ? 2.5 * flops / bwd * 1e-9 : 0.0;
            fmt::print("{:>7} {:>4} {:>5} {:>5} {:>3} {:>9.4f} {:>9.2f} {:>6.1f}% {:>9.4f} {:>9.2f} "
                       "{:>7.2f}\n", n, d, w, globals.size(), o.threads[t], best, gf,
                       100.0 * gf / sgemm[t], bwd, bgf, bwd / best);
            std::fflush(stdout);
            json += fmt::format(
                "{}  {{\"n\": {}, \"d\": {}, \"window\": {}, \"globals\": {}, \"threads\": {}, "
                "\"heads\": {}, \"kv_heads\": {}, \"dtype\": \"{}\", \"isa\": \"{}\", "
                "\"seconds\": {:.6f}, \"gflops\": {:.3f}, \"sgemm_gflops\": {:.3f}, "
                "\"ratio_to_sgemm\": {:.4f}, \"bwd_seconds\": {:.6f}, \"bwd_gflops\": {:.3f}, "
                "\"bwd_to_fwd\": {:.3f}}}",
                first_json ? "" : ",\n", n, d, w, globals.size(), o.threads[t], o.heads,
                o.kv_heads, o.dtype, attention::IsaName(isa), best, gf, sgemm[t], gf / sgemm[t], bwd,
                bgf, bwd / best);
            first_json = false;
          }
        }
      }
    }
  }
  json += "\n]\n";
  // Re-measure sgemm: if the machine's load changed during the run, the ratios say so.
  for (size_t t = 0; t < o.threads.size(); ++t) {
    fmt::print("# OpenBLAS sgemm again at the end, {} thread(s): {:.1f} GFLOP/s\n", o.threads[t],
               SgemmGflops(o.threads[t]));
  }
  if (!o.json.empty()) {
    RETURN_IF_ERROR(WriteFileAtomically(o.json, json).WithContext("--json"));
  }
  return Status::Ok();
}

// ---- --whole-process ---------------------------------------------------------------------

Status RunWholeProcessAttentionBench(const AttentionBenchOptions& o) {
  ASSIGN_OR_RETURN(attention::Isa isa, attention::ParseIsa(o.isa));
  if (isa == attention::Isa::kAuto) isa = attention::BestIsa();
  if (!attention::IsaSupported(isa)) return InvalidArgument("--isa {} is not supported", o.isa);
  if (o.dtype != "f32" && o.dtype != "f16") {
    return InvalidArgument("--whole-process takes --dtype f32 or f16 (.npy has no bfloat16)");
  }
  const DType dtype = o.dtype == "f32" ? DType::kF32 : DType::kF16;
  if (o.heads < 1 || o.kv_heads < 1 || o.heads % o.kv_heads != 0) {
    return InvalidArgument("--heads must be a positive multiple of --kv-heads");
  }
  if (o.reps < 1) return InvalidArgument("--reps must be >= 1");
  for (int t : o.threads) {
    if (t < 1) return InvalidArgument("--threads values must be >= 1");
  }
  std::optional<matrix::ScratchDir> scratch;  // when no --workdir is given
  if (o.workdir.empty()) {
    ASSIGN_OR_RETURN(matrix::ScratchDir made, matrix::ScratchDir::Create("longctx-wp"));
    scratch.emplace(std::move(made));
  }
  const std::string dir = scratch ? scratch->path() : o.workdir;

  fmt::print("# whole process: `{} attention` (map .npy inputs, check them, compute, stream the "
             "output .npy and commit it) vs the kernel alone (HybridAttention, in this process, "
             "same inputs and threads); best of {} after a warm-up; isa={} dtype={} heads={}/{}\n",
             o.binary, o.reps, attention::IsaName(isa), o.dtype, o.heads, o.kv_heads);
  fmt::print("{:>7} {:>4} {:>5} {:>5} {:>3} {:>10} {:>10} {:>8}\n", "n", "d", "W", "globs", "thr",
             "kernel_s", "process_s", "ratio");
  std::fflush(stdout);
  std::string json = "[\n";
  bool first_json = true;
  for (int64_t n : o.n) {
    for (int64_t d : o.head_dim) {
      if (n < 1 || d < 1) return InvalidArgument("--n and --d values must be >= 1");
      const std::unique_ptr<BenchInputs> in = MakeBenchInputs(n, o.heads, o.kv_heads, d, dtype);
      const attention::TokenView &q = in->q, &k = in->k, &v = in->v;
      const std::string qpath = dir + "/q.npy", kpath = dir + "/k.npy", vpath = dir + "/v.npy",
                        gpath = dir + "/globals.npy", opath = dir + "/out.npy",
                        lpath = dir + "/lse.npy", log = dir + "/attention.log";
      RETURN_IF_ERROR(WriteNpy(qpath, dtype, {n, o.heads, d}, q.data));
      RETURN_IF_ERROR(WriteNpy(kpath, dtype, {n, o.kv_heads, d}, k.data));
      RETURN_IF_ERROR(WriteNpy(vpath, dtype, {n, o.kv_heads, d}, v.data));
      for (int64_t w : o.window) {
        for (const auto& gmode : o.globals) {
          if (gmode != "none" && gmode != "log") {
            return InvalidArgument("--globals takes none and/or log");
          }
          const std::vector<int64_t> globals =
              gmode == "log" ? EvenGlobals(n, LogGlobalCount(n)) : std::vector<int64_t>{};
          if (!globals.empty()) {
            RETURN_IF_ERROR(WriteNpy(gpath, DType::kI64, {int64_t(globals.size())},
                                     globals.data()));
          }
          attention::AttentionSpec spec;
          spec.window = w;
          for (int threads : o.threads) {
            // The kernel alone: the output buffer is allocated and faulted once, outside the
            // timing, as a library user holding its buffers would have it.
            std::vector<float> out(size_t(n * o.heads * d)), lse(size_t(n * o.heads));
            ThreadPool pool(threads);
            attention::ExecOptions exec{&pool, isa};
            double kernel = 1e30;
            for (int rep = 0; rep <= o.reps; ++rep) {
              const auto t0 = Clock::now();
              RETURN_IF_ERROR(attention::HybridAttention(q, k, v, globals, spec, out.data(),
                                                         lse.data(), exec));
              if (rep > 0) kernel = std::min(kernel, Seconds(t0));
            }
            std::vector<std::string> argv = {o.binary, "attention", "--q", qpath, "--k", kpath,
                                             "--v", vpath, "--out", opath, "--lse", lpath,
                                             "--window", std::to_string(w), "--threads",
                                             std::to_string(threads), "--isa",
                                             std::string(attention::IsaName(isa))};
            if (!globals.empty()) {
              argv.push_back("--globals");
              argv.push_back(gpath);
            }
            double process = 1e30;
            for (int rep = 0; rep <= o.reps; ++rep) {
              ASSIGN_OR_RETURN(matrix::ProcessResult r, matrix::RunProcess(argv, log, 600.0));
              if (r.exit_code != 0) {
                return Internal("{} attention failed (exit {}, signal {}): {}", o.binary,
                                r.exit_code, r.signal, matrix::LastLogLine(log));
              }
              if (rep > 0) process = std::min(process, r.seconds);
            }
            // The child's result must be the kernel's, bit for bit.
            ASSIGN_OR_RETURN(MappedNpy written, MappedNpy::Open(opath));
            if (written.data_bytes() != int64_t(out.size() * sizeof(float)) ||
                std::memcmp(written.data(), out.data(), out.size() * sizeof(float)) != 0) {
              return Internal("the process's output differs from the kernel's");
            }
            fmt::print("{:>7} {:>4} {:>5} {:>5} {:>3} {:>10.4f} {:>10.4f} {:>7.2f}x\n", n, d, w,
                       globals.size(), threads, kernel, process, process / kernel);
            std::fflush(stdout);
            json += fmt::format(
                "{}  {{\"n\": {}, \"d\": {}, \"window\": {}, \"globals\": {}, "
                "\"threads\": {}, \"heads\": {}, \"kv_heads\": {}, \"dtype\": \"{}\", "
                "\"isa\": \"{}\", \"kernel_seconds\": {:.6f}, \"process_seconds\": {:.6f}, "
                "\"process_to_kernel\": {:.4f}}}",
                first_json ? "" : ",\n", n, d, w, globals.size(), threads, o.heads, o.kv_heads,
                o.dtype, attention::IsaName(isa), kernel, process, process / kernel);
            first_json = false;
          }
        }
      }
    }
  }
  json += "\n]\n";
  if (!o.json.empty()) RETURN_IF_ERROR(WriteFileAtomically(o.json, json));
  return Status::Ok();
}

}  // namespace longctx::bench
