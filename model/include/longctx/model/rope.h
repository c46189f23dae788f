// RoPE's inverse frequencies for a model config: plain RoPE and the Hugging Face scaling types
// (linear, dynamic NTK, llama3, yarn), computed in double from the published formulas. The
// worker turns them into cos/sin tables (worker/forward.h MakeRopeTable).
#pragma once

#include <cstdint>
#include <vector>

#include "longctx/model/config.h"

namespace longctx::model {

struct RopeFrequencies {
  std::vector<double> inv_freq;   // [head_dim / 2], radians per position
  double attention_scaling = 1.0;  // multiplies cos and sin (yarn's attention factor; else 1)
};

// The frequencies of `config` (d = head_dim, i < d/2, theta = rope_theta, f = factor,
// L0 = original_max_position_embeddings):
//   default  theta^(-2i/d)
//   linear   theta^(-2i/d) / f                         (= positions divided by f)
//   dynamic  as default with theta' = theta * (f*n/L0 - (f-1))^(d/(d-2)) when n > L0, where n is
//            `seq_len`; n <= L0 leaves theta unchanged
//   llama3   by wavelength w = 2pi/inv: w < L0/high_freq_factor unchanged, w > L0/low_freq_factor
//            divided by f, in between blended with s = (L0/w - low)/(high - low):
//            (1-s)*inv/f + s*inv
//   yarn     inv_interp = inv/f blended with inv per dimension by a ramp between the correction
//            dims of beta_fast and beta_slow (floored/ceiled when truncate), clamped to
//            [0, d-1]; attention_scaling = attention_factor, else
//            mscale(f, mscale)/mscale(f, mscale_all_dim) when both are non-zero, else
//            mscale(f) = 0.1 ln f + 1 (1 when f <= 1)
// `seq_len` (tokens) matters only to dynamic; RopeSequenceLength says which length a token uses.
RopeFrequencies ComputeRopeFrequencies(const ModelConfig& config, int64_t seq_len);

// The sequence length that dynamic NTK scaling reads for a token at `position` of a document of
// `document_tokens` tokens (DESIGN.md §7): the prefill computes the whole document in one pass,
// so its tokens use the document's length (on every rank, whatever its shard); a token appended
// after the prefill (the question, then each generated token, one step each) uses position + 1,
// the tokens the sequence holds once it is in. That is what Hugging Face computes when the
// document is one forward call and each later token its own (its rotary embedding recomputes
// the frequencies per call from the largest position + 1); cached keys keep the rotation they
// were computed with, as in HF's KV cache.
inline int64_t RopeSequenceLength(int64_t position, int64_t document_tokens) {
  return position < document_tokens ? document_tokens : position + 1;
}

}  // namespace longctx::model
