// The element-wise passes of a step over one chunk, for float or double storage. Loads widen to
// double, koala/math.h does the arithmetic, stores round once. The reductions keep kLanes
// independent partial sums (so the compiler can vectorize) and add them up in a fixed order.
//
// Included only by cpu/kernels_isa.inc, once per instruction set, inside the namespace that
// KOALA_CPU_ISA names (Note [instruction sets], cpu/kernels.h).
#include <cstddef>

#include "koala/math.h"
#include "koala/types.h"

#ifndef KOALA_CPU_ISA
#error "cpu/passes.h is included through cpu/kernels_isa.inc, with KOALA_CPU_ISA defined"
#endif

namespace koala {
namespace cpu {
namespace KOALA_CPU_ISA {

constexpr int kLanes = 8;

inline double sum_lanes(const double (&lanes)[kLanes]) {
  double s = 0.0;
  for (int j = 0; j < kLanes; ++j) s += lanes[j];
  return s;
}

// Calls body(i, lane) for every i in [0, n): full blocks of kLanes, then the tail in lanes
// 0, 1, ... The lane of an element depends only on i, so the sums do not depend on anything else.
template <class Body>
inline void for_each_lane(std::size_t n, Body&& body) {
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) body(i + j, j);
  for (int j = 0; i < n; ++i, ++j) body(i, j);
}

template <class T>
LayerSums stats_chunk(const T* __restrict__ g, const T* __restrict__ x, std::size_t n, double wd) {
  double hh[kLanes] = {}, xx[kLanes] = {}, gg[kLanes] = {};
  for_each_lane(n, [&](std::size_t i, int j) { math::accumulate_stats(g[i], x[i], wd, hh[j], xx[j], gg[j]); });
  return {sum_lanes(hh), sum_lanes(xx), sum_lanes(gg)};
}

// KOALA-M predict over one chunk; returns the chunk's sum of (a - x)^2 on the pre-predict x.
template <class T>
double momentum_predict_chunk(T* __restrict__ x, T* __restrict__ v, const T* __restrict__ a,
                              std::size_t n, double kappa) {
  double dd[kLanes] = {};
  for_each_lane(n, [&](std::size_t i, int j) {
    double xi = x[i], vi = v[i];
    dd[j] += math::momentum_predict(xi, vi, a[i], kappa);
    x[i] = static_cast<T>(xi);
    v[i] = static_cast<T>(vi);
  });
  return sum_lanes(dd);
}

// Lazy predict: the KOALA-M update, then at once the next step's element-wise predict; returns the
// chunk's sum of (a - x)^2 on the updated values (Note [lazy predict], cpu/optimizer.h).
template <class T>
double momentum_update_predict_chunk(const T* __restrict__ g, T* __restrict__ x, T* __restrict__ v,
                                     T* __restrict__ a, std::size_t n, double wd, double k1, double k2,
                                     double kappa) {
  double dd[kLanes] = {};
  for_each_lane(n, [&](std::size_t i, int j) {
    double xi = x[i], vi = v[i], ai = a[i];
    math::momentum_update(g[i], xi, vi, ai, wd, k1, k2);
    dd[j] += math::momentum_predict(xi, vi, ai, kappa);
    x[i] = static_cast<T>(xi);
    v[i] = static_cast<T>(vi);
    a[i] = static_cast<T>(ai);
  });
  return sum_lanes(dd);
}

template <class T>
void momentum_update_chunk(const T* __restrict__ g, T* __restrict__ x, T* __restrict__ v,
                           T* __restrict__ a, std::size_t n, double wd, double k1, double k2) {
  for (std::size_t i = 0; i < n; ++i) {
    double xi = x[i], vi = v[i], ai = a[i];
    math::momentum_update(g[i], xi, vi, ai, wd, k1, k2);
    x[i] = static_cast<T>(xi);
    v[i] = static_cast<T>(vi);
    a[i] = static_cast<T>(ai);
  }
}

// wd: the decay inside the direction, direction_decay() (0: along the raw g, the official code).
template <class T>
void vanilla_update_chunk(const T* __restrict__ g, T* __restrict__ x, std::size_t n, double wd, double k) {
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<T>(math::vanilla_update(g[i], x[i], wd, k));
}

}  // namespace KOALA_CPU_ISA
}  // namespace cpu
}  // namespace koala
