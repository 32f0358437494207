// The per-element formulas of KOALA, written once for every backend (CPU loops and CUDA kernels).
// Kernels own loads, stores and loops; this header owns the arithmetic. All math is in double:
// float32 values are widened on load and rounded once on store (Note [opmath] below).
//
// Each formula is a template over its value type V: double for one element (the default, so the
// CUDA kernels and every scalar caller write math::f(...)), or a vector of doubles for several
// elements at once (the CPU passes, Note [vector lanes] in cpu/passes.h), which does the same IEEE
// operations in the same order on every lane. V is never deduced, so float arguments still widen.
#pragma once

// Note [opmath]
// All per-element arithmetic is done in double, whatever the dtype: a float32 value is widened on
// load, every formula below runs in double, and the result is rounded to float32 once, on store.
// The per-layer sums are double accumulators too. Why: one rounding per stored value, in every
// backend alike (CPU passes, CUDA kernels, and the js reference, whose numbers are doubles), so
// the backends agree to rounding in both dtypes, and float32 runs lose no accuracy inside a
// formula. In float64 this is plain double arithmetic: the golden runs match the reference within
// 1e-12 (test/parity/golden.test.ts).

// static: each translation unit keeps its own copy, so the CPU kernels compiled for several
// instruction sets (Note [instruction sets], cpu/kernels.h) never share one through the linker.
#if defined(__CUDACC__)
#define KOALA_HD static __host__ __device__ __forceinline__
#else
#define KOALA_HD static inline
#endif

namespace koala {
namespace math {

template <class V>
struct Identity {
  using type = V;
};
// A parameter of type Value<V> takes part in no deduction: V is the default or given explicitly.
template <class V>
using Value = typename Identity<V>::type;

// The reference hard-codes the decay of the parameter average a <- 0.9 a + 0.1 x.
constexpr double kAverageDecay = 0.9;

// h = g + wd x: the gradient of the loss plus the L2 penalty 0.5 wd |x|^2.
template <class V = double>
KOALA_HD V decayed_grad(Value<V> g, Value<V> x, double wd) { return g + wd * x; }

// Stats pass, one element: adds to |h|^2, |x|^2 and |g|^2.
template <class V = double>
KOALA_HD void accumulate_stats(Value<V> g, Value<V> x, double wd, Value<V>& hh, Value<V>& xx, Value<V>& gg) {
  const V h = decayed_grad<V>(g, x, wd);
  hh += h * h;
  xx += x * x;
  gg += g * g;
}

// KOALA-M predict, the sum's term: (a - x)^2.
template <class V = double>
KOALA_HD V squared_gap(Value<V> a, Value<V> x) {
  const V d = a - x;
  return d * d;
}

// KOALA-M predict, the parameter's move: x + v.
template <class V = double>
KOALA_HD V momentum_move(Value<V> x, Value<V> v) { return x + v; }

// KOALA-M predict, the velocity's decay: kappa v. S is the type kappa is multiplied in (Note
// [float32 predict], cpu/passes.h).
template <class V = double, class S = double>
KOALA_HD V velocity_decay(Value<V> v, Value<S> kappa) { return kappa * v; }

// KOALA-M predict, both: x += v, v *= kappa.
template <class V = double>
KOALA_HD void momentum_advance(Value<V>& x, Value<V>& v, double kappa) {
  x = momentum_move<V>(x, v);
  v = velocity_decay<V>(v, kappa);
}

// KOALA-M predict, one element: returns (a - x)^2 on the pre-predict x, then x += v, v *= kappa.
template <class V = double>
KOALA_HD V momentum_predict(Value<V>& x, Value<V>& v, Value<V> a, double kappa) {
  const V d2 = squared_gap<V>(a, x);
  momentum_advance<V>(x, v, kappa);
  return d2;
}

// KOALA-M update, one element: x -= K1 h, v -= K2 h, a <- 0.9 a + 0.1 x (the updated x).
template <class V = double>
KOALA_HD void momentum_update(Value<V> g, Value<V>& x, Value<V>& v, Value<V>& a, double wd, double k1,
                              double k2) {
  const V h = decayed_grad<V>(g, x, wd);
  x = x - k1 * h;
  v = v - k2 * h;
  a = kAverageDecay * a + (1.0 - kAverageDecay) * x;
}

// KOALA-V update, one element: x -= k (g + wd x), with wd = 0 for the official code's step along the
// raw gradient (direction_decay(), koala/filter.h). 0 x adds only a signed zero, so the official
// step is bitwise x - k g.
template <class V = double>
KOALA_HD V vanilla_update(Value<V> g, Value<V> x, double wd, double k) { return x - k * decayed_grad<V>(g, x, wd); }

// KOALA++ (Note [KOALA++ passes], core/step_pp.h), one element: the new product v' from the
// direction h, the previous product and direction, and the layer's coefficients.
template <class V = double>
KOALA_HD V pp_product(Value<V> h, Value<V> v_prev, Value<V> h_prev, double cv, double q, double lambda, double rk) {
  return cv * v_prev + q * (h - lambda * h_prev) + rk * h_prev;
}

}  // namespace math
}  // namespace koala
