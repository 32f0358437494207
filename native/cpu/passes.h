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

template <class T>
void vanilla_update_chunk(const T* __restrict__ g, T* __restrict__ x, std::size_t n, double k) {
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<T>(math::vanilla_update(g[i], x[i], k));
}

// KOALA++'s first pass over one chunk (Note [KOALA++ passes], core/step_pp.h): |g|^2, |x|^2, and
// with H = g + wd x rounded to T, |H|^2, H . Hp, H . v and |v|^2.
template <class T>
PPLayerSums pp_dots_chunk(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ v,
                          const T* __restrict__ hp, std::size_t n, double wd) {
  double gg[kLanes] = {}, xx[kLanes] = {}, hh[kLanes] = {}, a[kLanes] = {}, b[kLanes] = {}, vv[kLanes] = {};
  for_each_lane(n, [&](std::size_t i, int j) {
    const double h = static_cast<T>(math::decayed_grad(g[i], x[i], wd));
    const double vi = v[i];
    gg[j] += static_cast<double>(g[i]) * g[i];
    xx[j] += static_cast<double>(x[i]) * x[i];
    hh[j] += h * h;
    a[j] += h * hp[i];
    b[j] += h * vi;
    vv[j] += vi * vi;
  });
  return {sum_lanes(gg), sum_lanes(xx), sum_lanes(hh), sum_lanes(a), sum_lanes(b), sum_lanes(vv)};
}

// KOALA++'s second pass over one chunk of an updated layer: v <- v', Hp <- H, x <- x - k (v' + Q H),
// with v' and H as stored. On the layer's first update (first) the previous direction is H and the
// previous product sigma H.
template <class T>
void pp_update_chunk(const T* __restrict__ g, T* __restrict__ x, T* __restrict__ v, T* __restrict__ hp,
                     std::size_t n, double wd, bool first, double sigma, double q, double cv, double lambda, double rk,
                     double k) {
  for (std::size_t i = 0; i < n; ++i) {
    const double h = static_cast<T>(math::decayed_grad(g[i], x[i], wd));
    const double v_prev = first ? static_cast<double>(static_cast<T>(sigma * h)) : static_cast<double>(v[i]);
    const double h_prev = first ? h : static_cast<double>(hp[i]);
    const double v_next = static_cast<T>(math::pp_product(h, v_prev, h_prev, cv, q, lambda, rk));
    x[i] = static_cast<T>(x[i] - k * (v_next + q * h));
    v[i] = static_cast<T>(v_next);
    hp[i] = static_cast<T>(h);
  }
}

}  // namespace KOALA_CPU_ISA
}  // namespace cpu
}  // namespace koala
