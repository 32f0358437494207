// The passes for the compiler's default target (Note [instruction sets], cpu/kernels.h): SSE2 on
// x86-64, 16-byte vectors.
#define KOALA_CPU_ISA baseline
#define KOALA_CPU_VECTOR_BYTES 16
#define KOALA_KERNEL_SET kernel_set_baseline
#include "cpu/kernels_isa.inc"
