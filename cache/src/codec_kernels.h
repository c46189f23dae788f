// The element loops of the KV block codecs (kv_block.cpp), once per ISA and chosen at run time
// like the attention kernel: a generic build and, on x86-64 with AVX2 + F16C, a vector one.
// Every variant gives bit-identical results (tested): the wire format does not depend on the
// machine that encoded a block.
#pragma once

#include <cstddef>
#include <cstdint>

#include "longctx/core/status.h"

namespace longctx::cache::internal {

struct CodecKernels {
  const char* name;
  // true when no x[i] is an infinity or a NaN.
  bool (*all_finite)(const float* x, size_t n);
  // IEEE binary16 / bfloat16, round to nearest even; the inputs are finite.
  void (*to_f16)(const float* x, uint16_t* out, size_t n);
  void (*from_f16)(const uint16_t* in, float* out, size_t n);
  void (*to_bf16)(const float* x, uint16_t* out, size_t n);
  void (*from_bf16)(const uint16_t* in, float* out, size_t n);
  // acc[i] = max(acc[i], |x[i]|), i < n.
  void (*absmax_into)(const float* x, float* acc, size_t n);
  // max |x[i]| (0 for n = 0).
  float (*absmax)(const float* x, size_t n);
  // out[i] = clamp(round_to_nearest_even(x[i] * inv[i]), -127, 127); x * inv finite.
  void (*quantize)(const float* x, const float* inv, int8_t* out, size_t n);
  // The same with one inv for every element.
  void (*quantize_one)(const float* x, float inv, int8_t* out, size_t n);
  // out[i] = float(q[i]) * scale[i], and with one scale.
  void (*dequantize)(const int8_t* q, const float* scale, float* out, size_t n);
  void (*dequantize_one)(const int8_t* q, float scale, float* out, size_t n);
};

const CodecKernels& GenericCodecKernels();
// nullptr when this build or this CPU has no AVX2 + F16C.
const CodecKernels* Avx2CodecKernels();
// The best variant for this CPU; LONGCTX_ISA=generic forces the generic one, avx2/avx512/auto
// the vector one when there is one. An unknown LONGCTX_ISA, or avx2/avx512 on a CPU/build without
// AVX2 + F16C, is an InvalidArgument (as for the attention kernels), never a silent fallback.
Result<const CodecKernels*> BestCodecKernels();

}  // namespace longctx::cache::internal
