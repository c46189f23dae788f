// Internal: one set of kernel entry points per instruction set. kernel_impl.inc is compiled
// once per ISA (kernel_avx512.cpp, kernel_avx2.cpp, kernel_generic.cpp) with that ISA's
// flags, into its own namespace; dispatch.cpp picks one at run time. Arguments are validated
// by the caller (hybrid_attention.cpp); kernels assume them valid.
#pragma once

#include "longctx/attention/attention_backward.h"
#include "longctx/attention/hybrid_attention.h"

namespace longctx::attention::detail {

// Query rows (positions x the heads sharing a kv head) per kernel task, about. A task's
// window-key tiles start at its first query, so the result of a row depends (in the last
// bits) on which task it falls in: callers that split the queries of one pass and want the
// unsplit result bit for bit split at multiples of QueryPositionsPerTask.
constexpr int kQueryRowsPerTask = 384;  // measured best
inline int64_t QueryPositionsPerTask(int64_t group) {
  return group >= kQueryRowsPerTask ? 1 : kQueryRowsPerTask / group;
}

struct KernelTable {
  void (*window_global)(const WindowGlobalArgs& args, const AttentionSpec& spec, ThreadPool* pool);
  void (*dense_partial)(const DensePartialArgs& args, const AttentionSpec& spec, ThreadPool* pool);
  // Backward (kernel_bwd_impl.inc).
  void (*window_global_bwd)(const WindowGlobalGradArgs& args, const AttentionSpec& spec,
                            ThreadPool* pool);
  void (*dense_partial_bwd)(const DensePartialGradArgs& args, const AttentionSpec& spec,
                            ThreadPool* pool);
  void (*dense_score_moment)(const DensePartialArgs& args, const float* lse, float* psum,
                             const AttentionSpec& spec, ThreadPool* pool);
};

#define LONGCTX_DECLARE_KERNELS(ns)                                                        \
  namespace ns {                                                                           \
  void WindowGlobal(const WindowGlobalArgs& args, const AttentionSpec& spec, ThreadPool* pool); \
  void DensePartial(const DensePartialArgs& args, const AttentionSpec& spec, ThreadPool* pool); \
  void WindowGlobalBwd(const WindowGlobalGradArgs& args, const AttentionSpec& spec,             \
                       ThreadPool* pool);                                                      \
  void DensePartialBwd(const DensePartialGradArgs& args, const AttentionSpec& spec,             \
                       ThreadPool* pool);                                                      \
  void DenseScoreMoment(const DensePartialArgs& args, const float* lse, float* psum,            \
                        const AttentionSpec& spec, ThreadPool* pool);                           \
  }
LONGCTX_DECLARE_KERNELS(generic)
#if defined(LONGCTX_HAVE_X86_VARIANTS)
LONGCTX_DECLARE_KERNELS(avx2)
LONGCTX_DECLARE_KERNELS(avx512)
#endif
#undef LONGCTX_DECLARE_KERNELS

const KernelTable& Kernels(Isa isa);  // isa must be supported (not kAuto)

}  // namespace longctx::attention::detail
