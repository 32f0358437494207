// The benchmark's loops compiled for the avx512 set (Note [instruction sets], cpu/kernels.h).
#define KOALA_CPU_ISA avx512
#define KOALA_BENCH_SET bench_set_avx512
#include "dev/bench_kernels_isa.inc"
