// The passes for the compiler's default target (Note [instruction sets], cpu/kernels.h).
#define KOALA_CPU_ISA baseline
#define KOALA_KERNEL_SET kernel_set_baseline
#include "cpu/kernels_isa.inc"
