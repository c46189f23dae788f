// The hybrid-attention kernel for the avx2 instruction set (flags set in CMakeLists.txt).
#define LONGCTX_ISA_NS avx2
#include "kernel_impl.inc"
