// The hybrid-attention kernel for the avx512 instruction set (flags set in CMakeLists.txt).
#define LONGCTX_ISA_NS avx512
#include "kernel_impl.inc"
