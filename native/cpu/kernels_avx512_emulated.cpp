// The AVX-512 passes of the test build, compiled for AVX2 with the AVX-512 instructions emulated
// (Note [emulated AVX-512], cpu/passes.h); built only with -DKOALA_EMULATED_AVX512=ON.
#define KOALA_CPU_ISA avx512
#define KOALA_CPU_VECTOR_BYTES 64
#define KOALA_KERNEL_SET kernel_set_avx512
#include "cpu/kernels_isa.inc"
