#include "cpu/kernels.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

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
#if defined(KOALA_EMULATED_AVX512)
    // The test build's AVX-512 passes are AVX2 code (Note [emulated AVX-512], cpu/passes.h).
    case Isa::kAvx512: return isa_usable(Isa::kAvx2);
#elif defined(KOALA_HAVE_AVX512)
    case Isa::kAvx512: return __builtin_cpu_supports("avx512f");
#endif
#ifdef KOALA_HAVE_AVX2
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    case Isa::kBaseline: return true;
    default: return false;
  }
}

// AMD family 19h (Zen 4: the only one of its family with AVX-512) runs a 512-bit operation as two
// 256-bit halves, and its conversions between float and double, which bound the float32 passes,
// as two issues: the AVX2 set is faster there (measured 0.87 against 0.93 ns per parameter for
// the three passes of a float32 KOALA-M step, one thread). Results are the same either way.
bool splits_512_bit_ops() {
#if defined(__x86_64__)
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return false;
  const bool amd = ebx == 0x68747541 && edx == 0x69746e65 && ecx == 0x444d4163;  // "AuthenticAMD"
  if (!amd || !__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  const unsigned int family = ((eax >> 8) & 0xF) + ((eax >> 20) & 0xFF);
  return family == 0x19;
#else
  return false;
#endif
}

IsaChoice choose_isa() {
  Isa best = Isa::kBaseline;
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (isa_usable(isa) && !(isa == Isa::kAvx512 && best == Isa::kAvx2 && splits_512_bit_ops())) best = isa;
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
