// The passes compiled with -mavx512f, on x86-64 only (Note [instruction sets], cpu/kernels.h).
#define KOALA_CPU_ISA avx512
#define KOALA_CPU_VECTOR_BYTES 64
#define KOALA_KERNEL_SET kernel_set_avx512
#include "cpu/kernels_isa.inc"
