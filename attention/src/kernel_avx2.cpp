// The hybrid-attention kernels (forward and backward) for the avx2 instruction set (flags:
// CMakeLists.txt).
#define LONGCTX_ISA_NS avx2
#include "kernel_impl.inc"
#include "kernel_bwd_impl.inc"
