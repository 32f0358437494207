// The per-element formulas of KOALA, written once for every backend (CPU loops and CUDA kernels).
// Kernels own loads, stores and loops; this header owns the arithmetic. All math is in double:
// float32 values are widened on load and rounded once on store (see Note [opmath] in README).
#pragma once

// static: each translation unit keeps its own copy, so the CPU kernels compiled for several
// instruction sets (Note [instruction sets], cpu/kernels.h) never share one through the linker.
#if defined(__CUDACC__)
#define KOALA_HD static __host__ __device__ __forceinline__
#else
#define KOALA_HD static inline
#endif

namespace koala {
namespace math {

// The reference hard-codes the decay of the parameter average a <- 0.9 a + 0.1 x.
constexpr double kAverageDecay = 0.9;

// h = g + wd x: the gradient of the loss plus the L2 penalty 0.5 wd |x|^2.
KOALA_HD double decayed_grad(double g, double x, double wd) { return g + wd * x; }

// Stats pass, one element: adds to |h|^2, |x|^2 and |g|^2.
KOALA_HD void accumulate_stats(double g, double x, double wd, double& hh, double& xx, double& gg) {
  const double h = decayed_grad(g, x, wd);
  hh += h * h;
  xx += x * x;
  gg += g * g;
}

// KOALA-M predict, one element: returns (a - x)^2 on the pre-predict x, then x += v, v *= kappa.
KOALA_HD double momentum_predict(double& x, double& v, double a, double kappa) {
  const double d = a - x;
  x = x + v;
  v = kappa * v;
  return d * d;
}

// KOALA-M update, one element: x -= K1 h, v -= K2 h, a <- 0.9 a + 0.1 x (the updated x).
KOALA_HD void momentum_update(double g, double& x, double& v, double& a, double wd, double k1,
                              double k2) {
  const double h = decayed_grad(g, x, wd);
  x = x - k1 * h;
  v = v - k2 * h;
  a = kAverageDecay * a + (1.0 - kAverageDecay) * x;
}

// KOALA-V update, one element: the official code steps along the raw gradient g, not h.
KOALA_HD double vanilla_update(double g, double x, double k) { return x - k * g; }

// KOALA++ (Note [KOALA++ passes], core/step_pp.h), one element: the new product v' from the
// direction h, the previous product and direction, and the layer's coefficients.
KOALA_HD double pp_product(double h, double v_prev, double h_prev, double cv, double q, double lambda, double rk) {
  return cv * v_prev + q * (h - lambda * h_prev) + rk * h_prev;
}

}  // namespace math
}  // namespace koala
