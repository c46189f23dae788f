// The hybrid-attention kernels (forward and backward) for the generic instruction set (flags:
// CMakeLists.txt).
#define LONGCTX_ISA_NS generic
#include "kernel_impl.inc"
#include "kernel_bwd_impl.inc"
