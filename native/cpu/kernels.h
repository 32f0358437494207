// The CPU passes, compiled once per instruction set and chosen at run time.
//
// Note [instruction sets]
// cpu/passes.h is compiled in kernels_baseline.cpp (the compiler's default target) and, on x86-64,
// in kernels_avx2.cpp (-mavx2), each inside a namespace of its own. cpu_kernels() picks the AVX2
// set when the processor has it, unless KOALA_OPTIM_ISA=baseline asks for the other. Both sets do
// the same double arithmetic in the same order (no fused multiply-add: -ffp-contract=off, and no
// reassociation), so they give bitwise the same results; only the width of the vectors differs.
#pragma once

#include <cstddef>

#include "koala/types.h"

namespace koala {
namespace cpu {

template <class T>
struct KernelTable {
  LayerSums (*stats)(const T* g, const T* x, std::size_t n, double wd);
  double (*momentum_predict)(T* x, T* v, const T* a, std::size_t n, double kappa);
  void (*momentum_update)(const T* g, T* x, T* v, T* a, std::size_t n, double wd, double k1, double k2);
  double (*momentum_update_predict)(const T* g, T* x, T* v, T* a, std::size_t n, double wd, double k1,
                                    double k2, double kappa);
  void (*vanilla_update)(const T* g, T* x, std::size_t n, double k);
  PPLayerSums (*pp_dots)(const T* g, const T* x, const T* v, const T* hp, std::size_t n, double wd);
  void (*pp_update)(const T* g, T* x, T* v, T* hp, std::size_t n, double wd, bool first, double sigma, double q, double cv,
                    double lambda, double rk, double k);
};

struct KernelSet {
  const char* isa;  // "avx2" or "baseline"
  KernelTable<float> f32;
  KernelTable<double> f64;

  template <class T>
  const KernelTable<T>& table() const;
};

template <>
inline const KernelTable<float>& KernelSet::table<float>() const { return f32; }
template <>
inline const KernelTable<double>& KernelSet::table<double>() const { return f64; }

// The set for this processor, chosen on first use.
const KernelSet& cpu_kernels();

}  // namespace cpu
}  // namespace koala
