// Hybrid sliding-window + global-token attention on the CPU (DESIGN.md §1): blocked,
// FlashAttention-style online softmax, no n-by-n buffer, fp32 accumulation over f32/f16/bf16
// inputs, vectorized for AVX-512 / AVX2 / portable (chosen at run time), multithreaded.
//
// Two levels:
//  - HybridAttention: the whole sequence in one process (what `longctx attention` runs).
//  - The building blocks the distributed engine composes (DESIGN.md §2): WindowGlobalPass
//    over a shard whose K/V range covers its queries' windows, DensePartialPass giving the
//    partial (O, L) of global queries over any contiguous key range, and FuseGlobalQueries.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "longctx/attention/spec.h"
#include "longctx/core/status.h"
#include "longctx/core/thread_pool.h"

namespace longctx::attention {

enum class Isa : uint8_t { kAuto, kAvx512, kAvx2, kGeneric };
std::string_view IsaName(Isa isa);
bool IsaSupported(Isa isa);  // compiled in and supported by this CPU
Isa BestIsa();               // LONGCTX_ISA when set and valid, else the best this CPU supports
// LONGCTX_ISA=auto|avx512|avx2|generic (kAuto when unset or empty). An unknown name, or one this
// CPU/build lacks, is an InvalidArgument naming the variable, never a silent fallback; every
// kernel entry point (through exec.isa == kAuto) returns it.
Result<Isa> IsaFromEnvironment();
Result<Isa> ParseIsa(std::string_view name);

struct ExecOptions {
  ThreadPool* pool = nullptr;  // nullptr: run on the calling thread only
  Isa isa = Isa::kAuto;
};

// Full-sequence hybrid attention.
//   q: [n, H, d], k/v: [n, Hkv, d] (H % Hkv == 0, same dtype for k and v)
//   globals: sorted unique positions in [0, n)
//   out: [n, H, d] float32 (row stride H*d); lse: [n, H] float32 natural log, may be null.
// lse is the log-sum-exp of scale*q.k over the union of the query's allowed keys, for both
// fusions (for weighted:A it is the normalizer union mode would use; docs/attention.md).
Status HybridAttention(const TokenView& q, const TokenView& k, const TokenView& v,
                       std::span<const int64_t> globals, const AttentionSpec& spec, float* out,
                       float* lse, const ExecOptions& exec = {});

// Where HybridAttentionInChunks puts its result: it asks for a buffer for rows
// [row0, row0 + rows) (out: [rows, H, d] float32, lse: [rows, H] float32, both required),
// fills it, and hands it back finished with Done. Chunks come in row order, one at a time;
// a sink that writes chunk i while chunk i+1 is computed lends several buffers in turn.
class ChunkSink {
 public:
  struct Buffer {
    float* out = nullptr;
    float* lse = nullptr;
  };
  virtual ~ChunkSink() = default;
  virtual Result<Buffer> Acquire(int64_t row0, int64_t rows) = 0;
  virtual Status Done(int64_t row0, int64_t rows) = 0;
};

// HybridAttention's result, bit for bit, computed `chunk_rows` query rows at a time, so that
// the caller needs no [n, H, d] output buffer and can store or send each chunk while the next
// is computed. The global queries' dense pass runs first (its [g, H, d] partial is kept); the
// sliding-window pass then runs per chunk. chunk_rows >= 1 is rounded up to a whole number of
// the kernel's query tasks (at most 384 rows; 192 when two query heads share a kv head), so
// the sink must accept chunks of up to that many rows.
Status HybridAttentionInChunks(const TokenView& q, const TokenView& k, const TokenView& v,
                               std::span<const int64_t> globals, const AttentionSpec& spec,
                               int64_t chunk_rows, ChunkSink& sink, const ExecOptions& exec = {});

// Checks shapes, dtypes, window, fusion and globals (sorted, unique, in [0, n)); the message
// names what is wrong. HybridAttention calls it.
Status ValidateAttentionInputs(const TokenView& q, const TokenView& k, const TokenView& v,
                               std::span<const int64_t> globals, const AttentionSpec& spec);

// ---- building blocks for sharded execution -----------------------------------------------

// Queries at absolute positions [q_pos0, q_pos0 + q.rows) against
//  - local K/V at absolute positions [kv_pos0, kv_pos0 + k.rows), which must contain every
//    window key of every query that exists in the sequence [0, seq_len);
//  - packed global K/V rows gk/gv at absolute positions global_pos (sorted, unique; all the
//    sequence's globals that any of these queries may see).
// Rows of non-global queries get their final output. Rows of global queries (their positions
// are in global_pos) get their *window-only* component (O_win, L_win); the caller completes
// them with FuseGlobalQueries. out: [q.rows, H, d], lse: [q.rows, H] (required).
struct WindowGlobalArgs {
  TokenView q, k, v, gk, gv;
  int64_t q_pos0 = 0;
  int64_t kv_pos0 = 0;
  int64_t seq_len = 0;
  std::span<const int64_t> global_pos;
  float* out = nullptr;
  float* lse = nullptr;
};
Status WindowGlobalPass(const WindowGlobalArgs& args, const AttentionSpec& spec,
                        const ExecOptions& exec = {});

// Partial attention of queries at positions q_pos (sorted; q row r is at q_pos[r]) over the
// contiguous keys at [kv_pos0, kv_pos0 + k.rows) with only the causal mask (every key when
// bidirectional). out [rows, H, d] is normalized over that key set; lse [rows, H] is its
// log-sum-exp, -inf (and out 0) where the set is empty. Partials over disjoint key ranges
// combine exactly with MergeStates (lse_merge.h).
struct DensePartialArgs {
  TokenView q, k, v;
  std::span<const int64_t> q_pos;
  int64_t kv_pos0 = 0;
  float* out = nullptr;
  float* lse = nullptr;
};
Status DensePartialPass(const DensePartialArgs& args, const AttentionSpec& spec,
                        const ExecOptions& exec = {});

// Completes global-query rows: given their window component (o_win, l_win; from
// WindowGlobalPass) and their all-visible-keys state (o_all, l_all; merged partials), writes
// the fused result into o_win/l_win: union -> (o_all, l_all); weighted:A ->
// (A*o_win + (1-A)*o_all, l_all). Shapes [rows, H, d] and [rows, H].
void FuseGlobalQueries(const AttentionSpec& spec, int64_t rows, int64_t heads, int64_t head_dim,
                       float* o_win, float* l_win, const float* o_all, const float* l_all);

// Counts of allowed (query, key) pairs summed over query heads — the work a bench divides by.
int64_t AllowedPairs(int64_t n, int64_t heads, std::span<const int64_t> globals,
                     const AttentionSpec& spec);

}  // namespace longctx::attention
