#include "cpu/kernels.h"

#include <cstdlib>
#include <cstring>

namespace koala {
namespace cpu {

KernelSet kernel_set_baseline();
#ifdef KOALA_HAVE_AVX2
KernelSet kernel_set_avx2();
#endif
#ifdef KOALA_HAVE_AVX512
KernelSet kernel_set_avx512();
#endif

namespace {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "baseline";
  }
}

// Built into this addon and usable on this processor.
bool isa_usable(Isa isa) {
  switch (isa) {
#ifdef KOALA_HAVE_AVX512
    case Isa::kAvx512: return __builtin_cpu_supports("avx512f");
#endif
#ifdef KOALA_HAVE_AVX2
    case Isa::kAvx2: return __builtin_cpu_supports("avx2");
#endif
    case Isa::kBaseline: return true;
    default: return false;
  }
}

IsaChoice choose_isa() {
  Isa best = Isa::kBaseline;
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (isa_usable(isa)) best = isa;
  }
  const char* ask = std::getenv("KOALA_OPTIM_ISA");
  if (ask == nullptr || *ask == '\0') return {best, isa_name(best)};
  for (Isa isa : {Isa::kBaseline, Isa::kAvx2, Isa::kAvx512}) {
    if (std::strcmp(ask, isa_name(isa)) != 0) continue;
    if (isa_usable(isa)) return {isa, isa_name(isa)};
    return {best, std::string(isa_name(best)) + " (KOALA_OPTIM_ISA=" + ask + ": not supported by this processor or build)"};
  }
  return {best, std::string(isa_name(best)) + " (KOALA_OPTIM_ISA=" + ask + ": unknown, expected avx512, avx2 or baseline)"};
}

}  // namespace

const IsaChoice& selected_isa() {
  static const IsaChoice choice = choose_isa();
  return choice;
}

const KernelSet& cpu_kernels() {
  static const KernelSet set = [] {
    switch (selected_isa().isa) {
#ifdef KOALA_HAVE_AVX512
      case Isa::kAvx512: return kernel_set_avx512();
#endif
#ifdef KOALA_HAVE_AVX2
      case Isa::kAvx2: return kernel_set_avx2();
#endif
      default: return kernel_set_baseline();
    }
  }();
  return set;
}

}  // namespace cpu
}  // namespace koala
