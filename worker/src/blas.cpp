#include "longctx/worker/blas.h"

#include <cblas.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

namespace longctx::worker {
namespace {

// Set on the re-executed process: the kernel the library had chosen before longctx chose.
constexpr const char* kChoseEnv = "LONGCTX_BLAS_REEXEC_FROM";

std::string CpuBest() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
    return "avx512";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
  return "generic";
}

// OpenBLAS x86-64 kernels that use AVX2 (or better). Anything else on an AVX2 CPU is a
// fallback: Prescott, Core2, Nehalem, Sandybridge (AVX only), Bulldozer, ...
bool KernelUsesAvx2(std::string_view k) {
  for (std::string_view good : {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids",
                                "Excavator", "Steamroller"}) {
    if (k == good) return true;
  }
  return false;
}

std::string DetectedKernel() {
  if (const char* pretend = std::getenv("LONGCTX_TEST_BLAS_KERNEL")) return pretend;
  const char* k = openblas_get_corename();
  return k ? k : "";
}

bool IsAmd() {
  __builtin_cpu_init();
  return __builtin_cpu_is("amd");
}

}  // namespace

BlasInfo CurrentBlas() {
  BlasInfo b;
  const char* config = openblas_get_config();
  b.library = config ? config : "";
  b.kernel = DetectedKernel();
  b.cpu_best = CpuBest();
  if (const char* from = std::getenv(kChoseEnv)) {
    b.chosen_by = std::string("longctx (library chose ") + from + ")";
  } else if (std::getenv("OPENBLAS_CORETYPE")) {
    b.chosen_by = "user";
  } else {
    b.chosen_by = "library";
  }
  return b;
}

void ChooseBlasKernel(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") || std::getenv(kChoseEnv)) return;  // never override
  if (const char* off = std::getenv("LONGCTX_BLAS_AUTO"); off && std::string_view(off) == "0") {
    return;
  }
  const std::string best = CpuBest();
  const std::string detected = DetectedKernel();
  if (best == "generic" || KernelUsesAvx2(detected)) return;
  std::string want;
  if (best == "avx512") {
    __builtin_cpu_init();
    // Not Cooperlake even where avx512_bf16 exists: its sgemm measured 10-25% slower than
    // SkylakeX's on a Sapphire Rapids class Xeon (docs/performance.md).
    want = "SkylakeX";
  } else {
    want = IsAmd() ? "Zen" : "Haswell";
  }
  ::setenv("OPENBLAS_CORETYPE", want.c_str(), 1);
  ::setenv(kChoseEnv, detected.c_str(), 1);
  ::unsetenv("LONGCTX_TEST_BLAS_KERNEL");
  ::execv("/proc/self/exe", argv);
  // The re-exec failed: keep the library's choice, and let CurrentBlas report it honestly.
  ::unsetenv("OPENBLAS_CORETYPE");
  ::unsetenv(kChoseEnv);
}

Status VerifyGemm() {
  constexpr int M = 37, N = 29, K = 53;
  std::vector<float> a(size_t(M) * K), b(size_t(K) * N), c(size_t(M) * N);
  uint32_t s = 12345;
  auto next = [&] {
    s = s * 1664525u + 1013904223u;
    return float(int32_t(s >> 9) - (1 << 22)) / float(1 << 22);
  };
  for (float& x : a) x = next();
  for (float& x : b) x = next();
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      // Stored transposed when ta/tb: A is [K, M], B is [N, K].
      auto A = [&](int i, int k) { return ta ? a[size_t(k) * M + i] : a[size_t(i) * K + k]; };
      auto B = [&](int k, int j) { return tb ? b[size_t(j) * K + k] : b[size_t(k) * N + j]; };
      cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                  M, N, K, 1.0f, a.data(), ta ? M : K, b.data(), tb ? K : N, 0.0f, c.data(), N);
      for (int i = 0; i < M; ++i) {
        for (int j = 0; j < N; ++j) {
          double ref = 0.0, mag = 0.0;
          for (int k = 0; k < K; ++k) {
            ref += double(A(i, k)) * double(B(k, j));
            mag += std::fabs(double(A(i, k)) * double(B(k, j)));
          }
          if (!(std::fabs(double(c[size_t(i) * N + j]) - ref) <= 1e-5 * mag + 1e-6)) {
            const char* k = openblas_get_corename();
            return Internal("the BLAS kernel {} computes a wrong sgemm (C[{}][{}] = {} vs {}); "
                            "set OPENBLAS_CORETYPE to a kernel this CPU runs",
                            k ? k : "?", i, j, c[size_t(i) * N + j], ref);
          }
        }
      }
    }
  }
  return Status::Ok();
}

}  // namespace longctx::worker
