#include "cpu/kernels.h"

#include <cstdlib>
#include <cstring>

namespace koala {
namespace cpu {

KernelSet kernel_set_baseline();
#ifdef KOALA_HAVE_AVX2
KernelSet kernel_set_avx2();
#endif

const KernelSet& cpu_kernels() {
  static const KernelSet set = [] {
#ifdef KOALA_HAVE_AVX2
    const char* ask = std::getenv("KOALA_OPTIM_ISA");
    const bool baseline_asked = ask != nullptr && std::strcmp(ask, "baseline") == 0;
    if (!baseline_asked && __builtin_cpu_supports("avx2")) return kernel_set_avx2();
#endif
    return kernel_set_baseline();
  }();
  return set;
}

}  // namespace cpu
}  // namespace koala
