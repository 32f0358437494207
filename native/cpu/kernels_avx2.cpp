// The passes compiled with -mavx2, on x86-64 only (Note [instruction sets], cpu/kernels.h).
#define KOALA_CPU_ISA avx2
#define KOALA_CPU_VECTOR_BYTES 32
#define KOALA_KERNEL_SET kernel_set_avx2
#include "cpu/kernels_isa.inc"
