// The benchmark's loops compiled for the avx2 set (Note [instruction sets], cpu/kernels.h).
#define KOALA_CPU_ISA avx2
#define KOALA_BENCH_SET bench_set_avx2
#include "dev/bench_kernels_isa.inc"
