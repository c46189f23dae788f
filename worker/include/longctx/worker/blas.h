// The BLAS that runs every GEMM of prefill, decode and training, and the kernel it chose.
//
// Debian's OpenBLAS picks its kernel when the library loads, from the CPU id. On CPUs newer
// than the library it can misdetect the CPU and fall back to a generic SSE3 kernel
// ("Prescott") that runs 5-8x slower than the AVX2 / AVX-512 kernels the CPU can run
// (docs/performance.md). OpenBLAS reads OPENBLAS_CORETYPE only while it loads, so the only
// way to correct it from inside longctx is to execute the program again with the variable
// set, before anything else has happened: ChooseBlasKernel does that, first thing in main().
#pragma once

#include <string>

#include "longctx/core/status.h"

namespace longctx::worker {

struct BlasInfo {
  std::string library;   // openblas_get_config(), e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ..."
  std::string kernel;    // openblas_get_corename(), e.g. "Zen", "SkylakeX", "Prescott"
  std::string cpu_best;  // the best kernel family this CPU runs: "avx512", "avx2" or "generic"
  // Who chose the kernel: "library" (OpenBLAS's own detection), "user" (OPENBLAS_CORETYPE was
  // set before longctx started) or "longctx (library chose X)" (re-executed, see above).
  std::string chosen_by;
};

BlasInfo CurrentBlas();

// When OpenBLAS runs a kernel without AVX2 on a CPU with AVX2 or AVX-512 and the user has not
// set OPENBLAS_CORETYPE, re-executes /proc/self/exe with the same arguments and
// OPENBLAS_CORETYPE set to the kernel the CPU deserves (SkylakeX for AVX-512,
// Zen or Haswell for AVX2); returns when nothing needs doing or the re-exec failed (then the
// library's choice stays, and CurrentBlas says so). Never overrides a core type the user set.
// LONGCTX_BLAS_AUTO=0 turns it off. Test hook: LONGCTX_TEST_BLAS_KERNEL=NAME pretends the
// library detected NAME.
void ChooseBlasKernel(char** argv);

// Checks the BLAS against a plain triple loop on a small odd-sized sgemm (all four
// transpose combinations); a wrong kernel is kInternal naming it.
Status VerifyGemm();

}  // namespace longctx::worker
