// The benchmark's loops compiled for the baseline set (Note [instruction sets], cpu/kernels.h).
#define KOALA_CPU_ISA baseline
#define KOALA_BENCH_SET bench_set_baseline
#include "dev/bench_kernels_isa.inc"
