// The CPU passes, compiled once per instruction set and chosen at run time.
//
// Note [instruction sets]
// cpu/passes.h is compiled in kernels_baseline.cpp (the compiler's default target: SSE2 on
// x86-64) and, on x86-64, in kernels_avx2.cpp (-mavx2 -mfma: chosen where the processor has both) and
// kernels_avx512.cpp (-mavx512f), each
// inside a namespace of its own. selected_isa() picks the widest set the processor (and the OS,
// which must save the 512-bit registers) supports, except AVX-512 on a processor that splits
// 512-bit operations in two (AMD Zen 4, where AVX2 is faster: kernels.cpp), unless
// KOALA_OPTIM_ISA=avx512|avx2|baseline asks for one: a set the processor lacks, or an unknown
// name, falls back to the default and says so in the isa string. Every set does the same double arithmetic in the same order on
// the same lanes (Note [vector lanes], cpu/passes.h; no fused multiply-add but where it rounds as
// the separate operations do, Note [exact squares]: -ffp-contract=off, and no reassociation), so all give bitwise the same results; only the width of the vectors differs.
// Where the processor lacks AVX-512, a test build runs that set's code emulated on AVX2 (Note
// [emulated AVX-512], cpu/passes.h).
// The development addon's benchmark kernels (native/dev/bench_kernels.h) follow the same choice.
#pragma once

#include <cstddef>
#include <string>

#include "koala/types.h"

namespace koala {
namespace cpu {

enum class Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

struct IsaChoice {
  Isa isa;
  // "avx512", "avx2" or "baseline"; when KOALA_OPTIM_ISA asked for something else, followed by
  // why, e.g. "avx2 (KOALA_OPTIM_ISA=avx512: not supported by this processor)".
  std::string description;
};

// The instruction set of this process's passes, chosen on first use.
const IsaChoice& selected_isa();

template <class T>
struct KernelTable {
  LayerSums (*stats)(const T* g, const T* x, std::size_t n, double wd);
  double (*momentum_predict)(T* x, T* v, const T* a, std::size_t n, double kappa);
  // Note [deferred decay] (cpu/optimizer.h): the predict's move alone, the decay alone, and the
  // update of a velocity whose decay is pending.
  double (*momentum_move)(T* x, const T* v, const T* a, std::size_t n);
  void (*momentum_decay)(T* v, std::size_t n, double kappa);
  void (*momentum_decay_update)(const T* g, T* x, T* v, T* a, std::size_t n, double wd, double k1, double k2,
                                double kappa);
  void (*momentum_update)(const T* g, T* x, T* v, T* a, std::size_t n, double wd, double k1, double k2);
  double (*momentum_update_predict)(const T* g, T* x, T* v, T* a, std::size_t n, double wd, double k1,
                                    double k2, double kappa);
  void (*vanilla_update)(const T* g, T* x, std::size_t n, double wd, double k);
  PPLayerSums (*pp_dots)(const T* g, const T* x, const T* v, const T* hp, std::size_t n, double wd);
  void (*pp_update)(const T* g, T* x, T* v, T* hp, std::size_t n, double wd, bool first, double sigma, double q, double cv,
                    double lambda, double rk, double k);
};

struct KernelSet {
  const char* isa;  // "avx512", "avx2" or "baseline"
  KernelTable<float> f32;
  KernelTable<double> f64;

  template <class T>
  const KernelTable<T>& table() const;
};

template <>
inline const KernelTable<float>& KernelSet::table<float>() const { return f32; }
template <>
inline const KernelTable<double>& KernelSet::table<double>() const { return f64; }

// The set of selected_isa().
const KernelSet& cpu_kernels();

}  // namespace cpu
}  // namespace koala
