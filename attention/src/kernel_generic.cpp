// The hybrid-attention kernel for the generic instruction set (flags set in CMakeLists.txt).
#define LONGCTX_ISA_NS generic
#include "kernel_impl.inc"
