#include <cstdlib>
#include <string>

#include "kernel.h"

namespace longctx::attention {

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAuto: return "auto";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kGeneric: return "generic";
  }
  return "?";
}

Result<Isa> ParseIsa(std::string_view name) {
  for (Isa isa : {Isa::kAuto, Isa::kAvx512, Isa::kAvx2, Isa::kGeneric}) {
    if (name == IsaName(isa)) return isa;
  }
  return InvalidArgument("unknown ISA '{}': expected auto, avx512, avx2 or generic", name);
}

bool IsaSupported(Isa isa) {
  switch (isa) {
    case Isa::kGeneric: return true;
#if defined(LONGCTX_HAVE_X86_VARIANTS)
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#endif
    default: return false;
  }
}

Result<Isa> IsaFromEnvironment() {
  const char* env = std::getenv("LONGCTX_ISA");
  if (env == nullptr || *env == '\0') return Isa::kAuto;
  Result<Isa> parsed = ParseIsa(env);
  if (!parsed.ok()) return parsed.status().WithContext("LONGCTX_ISA");
  if (*parsed != Isa::kAuto && !IsaSupported(*parsed)) {
    return InvalidArgument("LONGCTX_ISA={} is not supported on this CPU/build", env);
  }
  return *parsed;
}

Isa BestIsa() {
  Result<Isa> env = IsaFromEnvironment();
  if (env.ok() && *env != Isa::kAuto) return *env;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2}) {
    if (IsaSupported(isa)) return isa;
  }
  return Isa::kGeneric;
}

namespace detail {

const KernelTable& Kernels(Isa isa) {
  static const KernelTable kGenericTable{&generic::WindowGlobal, &generic::DensePartial,
      &generic::WindowGlobalBwd, &generic::DensePartialBwd, &generic::DenseScoreMoment};
#if defined(LONGCTX_HAVE_X86_VARIANTS)
  static const KernelTable kAvx2Table{&avx2::WindowGlobal, &avx2::DensePartial,
      &avx2::WindowGlobalBwd, &avx2::DensePartialBwd, &avx2::DenseScoreMoment};
  static const KernelTable kAvx512Table{&avx512::WindowGlobal, &avx512::DensePartial,
      &avx512::WindowGlobalBwd, &avx512::DensePartialBwd, &avx512::DenseScoreMoment};
  if (isa == Isa::kAvx512) return kAvx512Table;
  if (isa == Isa::kAvx2) return kAvx2Table;
#endif
  (void)isa;
  return kGenericTable;
}

}  // namespace detail
}  // namespace longctx::attention
