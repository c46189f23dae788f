// Backward of hybrid sliding-window + global-token attention (DESIGN.md §1, §6), FlashAttention-2
// style: the forward is recomputed inside (no n-by-n buffer, no saved probabilities), gradients
// are accumulated (+=) into caller buffers, and the result is bitwise deterministic and the same
// for any thread count: no atomics, fixed task geometry, partials summed in a fixed order
// (docs/attention.md, "Backward").
//
// Math (scores s_ij = scale * q_i.k_j, natural log): for a row's key set A(i),
// P_ij = exp(s_ij - L_i), D_i = rowsum(dO_i * O_i), dS_ij = P_ij (dO_i.V_j - D_i),
// dQ_i += scale sum_j dS_ij K_j, dK_j += scale sum_i dS_ij Q_i, dV_j += sum_i P_ij dO_i.
// Fusions as in the forward: union = one set (window ∪ visible globals); weighted:A = window
// set with dO*A and global set with dO*(1-A) (dO alone when the row sees no global key).
//
// Only float32 Q/K/V are accepted for now (f16/bf16: InvalidArgument). Both directions.
#pragma once

#include <cstdint>
#include <span>

#include "longctx/attention/hybrid_attention.h"
#include "longctx/attention/spec.h"
#include "longctx/core/status.h"

namespace longctx::attention {

// Backward of WindowGlobalPass (same queries, local keys and packed globals). Recomputes the
// forward internally (no saved O/LSE needed).
// Rows that are NOT global queries: full gradient of their output over their key set(s)
//   (union: window ∪ globals; weighted: window part with dO*A (or dO if no visible global) and
//   global part with dO*(1-A)).
// Rows that ARE global queries (their position is in global_pos):
//   union: skipped entirely (their gradient comes from DensePartialBackward);
//   weighted: only the window component, with dO_win = A*dO; and window_dot[row,h] =
//   rowsum(dO*O_win) (un-scaled dO) is written so the caller can form the dense pass's delta:
//   delta = rowsum(dO*O_final) - A*window_dot  (= rowsum((1-A)*dO * O_all)).
// dk/dv receive the contributions of THESE queries only (a key in the halo gets the part of its
// gradient that comes from this shard's queries; its owner sums). dgk/dgv likewise.
struct WindowGlobalGradArgs {
  TokenView q, k, v, gk, gv;  // exactly as WindowGlobalArgs (f32 only)
  int64_t q_pos0 = 0, kv_pos0 = 0, seq_len = 0;
  std::span<const int64_t> global_pos;
  const float* dout = nullptr;  // [q.rows, H, d] dense
  float* dq = nullptr;          // [q.rows, H, d]      accumulated (+=)
  float* dk = nullptr;          // [k.rows, Hkv, d]    accumulated (+=) (local keys)
  float* dv = nullptr;          // [k.rows, Hkv, d]    accumulated (+=)
  float* dgk = nullptr;         // [global_pos.size(), Hkv, d] accumulated (+=); required
  float* dgv = nullptr;         //   when global_pos is not empty
  float* window_dot = nullptr;  // optional [q.rows, H]: written (=) for global-query rows
                                //   (weighted only); other entries are left untouched
};
Status WindowGlobalBackward(const WindowGlobalGradArgs& args, const AttentionSpec& spec,
                            const ExecOptions& exec = {});

// Backward of DensePartialPass: global queries (packed rows, positions q_pos, sorted) over the
// contiguous keys [kv_pos0, kv_pos0 + k.rows), causal mask only (every key when bidirectional).
// lse/delta are the FINAL values over all visible keys of each query (not this partial's), dout
// is already scaled by the fusion weight (union: dO; weighted: (1-A)*dO), delta =
// rowsum(dout * O_all).
// Optional entropy term: if entropy_coef != nullptr, the loss also contains
//   sum_{rows,h} entropy_coef[row,h] * Entropy_i, Entropy_i = -sum_j P_ij log P_ij over all
//   visible keys, whose exact score gradient adds dS_ij += -entropy_coef_i * P_ij *
//   (s_ij - L_i + entropy_i) (entropy[row,h] = the row's full entropy, from the caller, e.g.
//   lse - sum of DensePartialScoreMoment over all key ranges).
struct DensePartialGradArgs {
  TokenView q, k, v;
  std::span<const int64_t> q_pos;
  int64_t kv_pos0 = 0;
  const float* lse = nullptr;           // [rows, H] natural log
  const float* dout = nullptr;          // [rows, H, d]
  const float* delta = nullptr;         // [rows, H]
  const float* entropy_coef = nullptr;  // optional [rows, H]
  const float* entropy = nullptr;       // [rows, H] nats, required when entropy_coef is set
  float* dq = nullptr;                  // [rows, H, d]   accumulated (+=): this key range's part
  float* dk = nullptr;                  // [k.rows, Hkv, d] accumulated (+=)
  float* dv = nullptr;                  // [k.rows, Hkv, d] accumulated (+=)
};
Status DensePartialBackward(const DensePartialGradArgs& args, const AttentionSpec& spec,
                            const ExecOptions& exec = {});

// Forward helper for the entropy loss: for the same queries/keys as DensePartialGradArgs
// (args.q, k, v, q_pos, kv_pos0; args.out/lse are ignored) and the final lse, writes (=)
// psum[row,h] = sum_{j in this key range, visible} P_ij * s_ij (P with the final lse, s natural).
// Over all key ranges these sum to sum_j P_ij s_ij, and Entropy_i = L_i - that sum.
Status DensePartialScoreMoment(const DensePartialArgs& args_with_q_k_v_qpos_kvpos0,
                               const float* lse, float* psum, const AttentionSpec& spec,
                               const ExecOptions& exec = {});

// Whole sequence, one process (composition of the above, like HybridAttention): out/lse are what
// HybridAttention returned for the same inputs; gradients are accumulated (+=) into dq [n,H,d],
// dk/dv [n,Hkv,d]. If entropy_coef ([n,H], nonzero only on global-query rows) is given, adds the
// entropy term of the global queries' all-visible-keys rows.
Status HybridAttentionBackward(const TokenView& q, const TokenView& k, const TokenView& v,
                               std::span<const int64_t> globals, const AttentionSpec& spec,
                               const float* out, const float* lse, const float* dout, float* dq,
                               float* dk, float* dv, const ExecOptions& exec = {},
                               const float* entropy_coef = nullptr);

}  // namespace longctx::attention
